"""How deep prompts are parameterised and initialised (``prompt.reparam``, ``prompt.init``).

- Reparameterised prefixes (Li & Liang 2021): during training ``prefix = start + MLP(E)`` instead of free
  parameters (on KS units it did not help: docs/engine.md). ``start`` is a frozen buffer holding the initial
  prefixes and the MLP's last layer starts at zero, so training begins exactly at ``prompt.init``. After training
  :meth:`ReparamPrefix.collapse` evaluates the MLP once and only the ``(layers, L, C)`` tensors are stored, so
  stored parameters and file size equal plain prefixes'.
- Activation initialisation: the prefixes start as the frozen LM's own key/value inputs (post-LN hidden states)
  at real unit positions of training utterances instead of N(0, 1); each slot takes one (utterance, position)
  in every layer, so it starts as a token the LM already knows how to attend to.
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from s3prl_speechprompt.ulm.dictionary import Dictionary

INITS = ("normal", "activations")


class ReparamPrefix(nn.Module):
    """``start + MLP(E)`` -> per-layer (k_in, v_in), the call interface of ``prompted.DeepPrompt``: ``E`` (L, hidden)
    trainable; MLP Linear(hidden, hidden) -> tanh -> Linear(hidden, 2*layers*C), the last layer zero-initialised;
    ``start``: (2, layers, L, C) buffer (key inputs, value inputs).
    """

    def __init__(self, layers: int, length: int, dim: int, dropout: float, hidden: int,
                 key: torch.Tensor, value: torch.Tensor):
        super().__init__()
        self.layers, self.length, self.dim = layers, length, dim
        self.register_buffer("start", torch.stack([key, value]).detach().clone())
        self.embedding = nn.Parameter(torch.randn(length, hidden))
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * layers * dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.dropout = nn.Dropout(dropout)

    def prefixes(self) -> torch.Tensor:
        """(2, layers, L, C): the current key and value inputs, without dropout."""
        delta = self.mlp(self.embedding).view(self.length, 2, self.layers, self.dim).permute(1, 2, 0, 3)
        return self.start + delta

    def forward(self) -> List[tuple]:
        p = self.dropout(self.prefixes())
        return [(p[0, i], p[1, i]) for i in range(self.layers)]

    @torch.no_grad()
    def collapse(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The MLP evaluated once: plain (layers, L, C) key and value inputs for ``DeepPrompt``."""
        p = self.prefixes()
        return p[0].clone(), p[1].clone()


@torch.no_grad()
def activation_prefixes(lm, sources: Sequence[Sequence[int]], length: int, seed: int = 0,
                        max_tokens: int = 1024) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, int]]]:
    """Key/value inputs of the frozen ``lm`` at ``length`` sampled unit positions of ``sources`` (unit token ids).

    Returns ``(key, value, picks)``: key = value, (layers, L, C); ``picks`` the (source index, position) pairs,
    position counting the input ``</s> u1 .. un`` (1 = the first unit). Sources are truncated to ``max_tokens`` units.
    """
    usable = [i for i, s in enumerate(sources) if len(s) > 0]
    if not usable:
        raise ValueError("prompt.init 'activations' needs training utterances with at least one unit; got none")
    rng = random.Random(seed)
    rows = [rng.choice(usable) for _ in range(length)]
    picks = [(i, rng.randint(1, min(len(sources[i]), max_tokens))) for i in rows]
    pad, eos = lm.cfg.padding_idx, Dictionary.eos_index
    T = max(p for _, p in picks) + 1
    tokens = torch.full((length, T), pad, dtype=torch.long)
    for r, (i, p) in enumerate(picks):
        tokens[r, 0] = eos
        tokens[r, 1:p + 1] = torch.as_tensor(list(sources[i][:p]), dtype=torch.long)
    device = next(lm.parameters()).device
    captured: List[Optional[torch.Tensor]] = [None] * lm.num_layers
    hooks = []
    for li, layer in enumerate(lm.decoder.layers):
        def grab(module, args, li=li):
            captured[li] = args[0]                  # the input of k_proj / v_proj (post-LN when pre-LN)
        hooks.append(layer.self_attn.register_forward_pre_hook(grab))
    was_training = lm.training
    lm.eval()
    try:
        lm(tokens.to(device), features_only=True)
    finally:
        for h in hooks:
            h.remove()
        lm.train(was_training)
    pos = torch.tensor([p for _, p in picks], device=device)
    rows_t = torch.arange(length, device=device)
    states = torch.stack([h[rows_t, pos] for h in captured]).float().cpu()     # (layers, L, C)
    return states.clone(), states.clone(), picks


def init_prompts(model, sources: Optional[Sequence[Sequence[int]]], seed: int = 0) -> Optional[list]:
    """Apply ``model.cfg.init`` to a freshly built ``PromptedULM``'s deep prompts, in place.

    ``normal`` leaves the N(0, std) prompts; ``activations`` overwrites them (or a reparameterised prefix's start)
    with :func:`activation_prefixes` of ``sources`` (training utterances as token ids). Only for a run starting from
    scratch: a resumed or evaluated model loads its trained state afterwards. Returns the sampled positions or None.
    """
    cfg = model.cfg
    if cfg.init == "normal" or model.deep_prompt is None:
        return None
    if not sources:
        raise ValueError("prompt.init 'activations' needs the training utterances' units; none were given")
    key, value, picks = activation_prefixes(model.lm, sources, cfg.prompt_length, seed=seed)
    dp = model.deep_prompt
    with torch.no_grad():
        if isinstance(dp, ReparamPrefix):
            dp.start.copy_(torch.stack([key, value]))
        else:
            dp.key.copy_(key)
            dp.value.copy_(value)
    return picks
