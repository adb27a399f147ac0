"""SpeechPrompt's prompted unit LM: a frozen GSLM plus deep prompts (PT), or the whole LM trained (FT-LM).

Sequences (SpeechPrompt / fairseq ``language_modeling``): input ``</s> u1 .. un <s> v1 .. vk``, target
``u1 .. un <s> v1 .. vk </s>``; ``<s>`` (index 0) separates the units from the verbalized label, and the loss
covers the target from ``<s>`` on (source units are never scored). Deep prompts: every layer gets L trainable
key-input and value-input vectors that go through its *frozen* k/v projections, in front of the token keys/values.
This equals SpeechPrompt's "overwrite the K/V inputs at L prefix positions after the pre-attention LayerNorm"; the
prefix positions' own hidden states never reach a token, which is why an input-level prompt gets no gradient when
deep prompts are on (kept optional, for the paper's parameter count).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from s3prl_speechprompt.prompt.prefix import INITS, ReparamPrefix
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.ulm.model import KVCache, UnitLM

SEP, PAD, EOS = Dictionary.bos_index, Dictionary.pad_index, Dictionary.eos_index


@dataclass
class PromptConfig:
    """How the LM is adapted. Defaults are SpeechPrompt v1's prompt tuning."""

    method: str = "pt"                 # pt: frozen LM + prompts | ftlm: whole LM trained, no prompts
    prompt_length: int = 3             # L (paper: 3 KS, 6 IC, ~176 ASR/SF at GSLM width)
    deep: bool = True                  # per-layer key/value prompts
    input_prompt: bool = False         # input-level prefix too (dead weight when deep: zero gradient)
    prompt_dropout: float = 0.1
    prompt_init_std: float = 1.0       # reference: nn.Embedding's N(0, 1)
    train_separator: bool = True       # PT: a trainable vector replaces the <s> embedding
    separator_init: str = "embedding"  # embedding: start from the LM's own <s> row | normal: N(0, 1) as the
                                       # reference (x sqrt(d) makes it ~sqrt(d) times larger than any token)
    lm_dropout: Optional[float] = None  # None = paper: 0 for pt, 0.1 for ftlm
    loss_normalization: str = "label"  # label: mean over scored tokens | ntokens: sum / non-pad targets (fairseq)
    learnable_classes: int = 0         # >0: SpeechPrompt v2 learnable verbalizer, Linear(V -> classes + 4) on logits
    reparam: int = 0                   # >0: train deep prompts as start + MLP(embedding) with this hidden size,
                                       # stored collapsed (prefix.py; Li & Liang 2021); 0 / false: plain prompts
    init: str = "normal"               # normal: N(0, prompt_init_std) | activations: the frozen LM's own k/v
                                       # inputs at sampled training-unit positions (prefix.init_prompts)

    def __post_init__(self):
        if self.method not in ("pt", "ftlm"):
            raise ValueError(f"method must be 'pt' or 'ftlm', got {self.method!r}")
        if self.separator_init not in ("embedding", "normal"):
            raise ValueError(f"separator_init must be 'embedding' or 'normal', got {self.separator_init!r}")
        if self.reparam is True or not isinstance(self.reparam, (int, bool)) or self.reparam < 0:
            raise ValueError(f"prompt.reparam must be false/0 (plain prompts) or the MLP hidden size (e.g. 256), "
                             f"got {self.reparam!r}")
        self.reparam = int(self.reparam)
        if self.init not in INITS:
            raise ValueError(f"prompt.init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.loss_normalization not in ("label", "ntokens"):
            raise ValueError(f"loss_normalization must be 'label' or 'ntokens', got {self.loss_normalization!r}")
        if self.method == "pt" and not (self.deep or self.input_prompt) and not self.train_separator \
                and not self.learnable_classes:
            raise ValueError("prompt tuning with no deep prompt, no input prompt, no separator and no "
                             "learnable verbalizer has nothing to train")
        if self.method == "pt" and (self.deep or self.input_prompt) and self.prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {self.prompt_length}")

    def to_dict(self) -> dict:
        return asdict(self)


class DeepPrompt(nn.Module):
    """Per-layer prefix key/value *inputs*: ``key``, ``value`` of shape (layers, L, C)."""

    def __init__(self, layers: int, length: int, dim: int, dropout: float, init_std: float):
        super().__init__()
        self.key = nn.Parameter(torch.randn(layers, length, dim) * init_std)
        self.value = nn.Parameter(torch.randn(layers, length, dim) * init_std)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> List[tuple]:
        """One (k_in, v_in) pair per layer, each (L, C), dropout applied (training only)."""
        k, v = self.dropout(self.key), self.dropout(self.value)
        return [(k[i], v[i]) for i in range(k.size(0))]


class PromptedULM(nn.Module):
    """A unit LM adapted to a task. ``loss(inputs, targets)`` for training, ``logits_fn()`` for decoding."""

    def __init__(self, lm: UnitLM, cfg: PromptConfig):
        super().__init__()
        self.cfg = cfg
        self.lm = lm
        d, n_layers = lm.cfg.embed_dim, lm.num_layers
        pt = cfg.method == "pt"
        dropout = cfg.lm_dropout if cfg.lm_dropout is not None else (0.0 if pt else 0.1)
        lm.set_dropout(dropout, dropout)
        lm.requires_grad_(not pt)
        self.deep_prompt = DeepPrompt(n_layers, cfg.prompt_length, d, cfg.prompt_dropout, cfg.prompt_init_std) \
            if pt and cfg.deep else None
        if self.deep_prompt is not None and cfg.reparam:
            dp = self.deep_prompt
            self.deep_prompt = ReparamPrefix(n_layers, cfg.prompt_length, d, cfg.prompt_dropout, cfg.reparam,
                                             dp.key.detach(), dp.value.detach())
        self.input_prompt = nn.Parameter(torch.randn(cfg.prompt_length, d) * cfg.prompt_init_std) \
            if pt and cfg.input_prompt else None
        self.prompt_dropout = nn.Dropout(cfg.prompt_dropout)
        self.separator = None
        if pt and cfg.train_separator:
            init = lm.embed(torch.tensor([SEP])).detach()[0].clone() if cfg.separator_init == "embedding" \
                else torch.randn(d) * cfg.prompt_init_std
            self.separator = nn.Parameter(init)
        self.verbalizer_head = None
        if cfg.learnable_classes:
            n_out = cfg.learnable_classes + 4
            if n_out > lm.cfg.vocab_size:
                raise ValueError(f"learnable verbalizer: {cfg.learnable_classes} classes + 4 specials exceed the LM "
                                 f"vocabulary ({lm.cfg.vocab_size}); label tokens are fed back as LM tokens, so use "
                                 f"the 'multi' verbalizer for label sets this large")
            self.verbalizer_head = nn.Linear(lm.cfg.vocab_size, n_out, bias=False)
            with torch.no_grad():                       # start as the identity on the first n_out tokens
                self.verbalizer_head.weight.copy_(torch.eye(n_out, lm.cfg.vocab_size))
            self.head_dropout = nn.Dropout(0.1)

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> Dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Only what training changes: prompts/separator/head for PT, everything for FT-LM (plus a
        reparameterised prefix's frozen starting point, which resuming needs)."""
        sd = {n: p.detach().clone() for n, p in self.trainable_parameters().items()}
        if isinstance(self.deep_prompt, ReparamPrefix):
            sd["deep_prompt.start"] = self.deep_prompt.start.detach().clone()
        return sd

    def trainable_state_names(self) -> List[str]:
        """The keys of ``trainable_state_dict`` (without copying an FT-LM's whole LM)."""
        names = list(self.trainable_parameters())
        return names + ["deep_prompt.start"] if isinstance(self.deep_prompt, ReparamPrefix) else names

    def stored_state_dict(self) -> Dict[str, torch.Tensor]:
        """What inference needs: ``trainable_state_dict`` with a reparameterised prefix collapsed to the plain
        ``deep_prompt.key`` / ``.value`` tensors (load it into a model built with ``reparam=0``)."""
        sd = self.trainable_state_dict()
        if isinstance(self.deep_prompt, ReparamPrefix):
            sd = {n: t for n, t in sd.items() if not n.startswith("deep_prompt.")}
            sd["deep_prompt.key"], sd["deep_prompt.value"] = self.deep_prompt.collapse()
        return sd

    def num_stored(self) -> int:
        """Parameters stored per task (reparameterised prefixes counted collapsed: the size of ``start``), counted
        without building ``stored_state_dict`` (which would copy an FT-LM's whole LM)."""
        if not isinstance(self.deep_prompt, ReparamPrefix):
            return self.num_trainable()
        rest = sum(p.numel() for n, p in self.trainable_parameters().items() if not n.startswith("deep_prompt."))
        return rest + self.deep_prompt.start.numel()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.method == "pt":
            self.lm.eval()           # frozen LM: dropout 0 anyway; keep it deterministic and cheap
        return self

    # ------------------------------------------------------------------ forward
    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.lm.embed(tokens)
        if self.separator is not None:
            emb = torch.where(tokens.eq(SEP).unsqueeze(-1), self.separator.to(emb.dtype), emb)
        return emb

    def _prefixes(self) -> dict:
        kw = {}
        if self.deep_prompt is not None:
            kw["prefix_kv"] = self.deep_prompt()
        elif self.input_prompt is not None:
            # with deep prompts the reference overwrites the K/V inputs at these same positions in every
            # layer, so the input prompt cannot reach any token: it is only used without deep prompts
            kw["prefix_embeds"] = self.prompt_dropout(self.input_prompt)
        return kw

    def logits(self, tokens: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """(B, T, V) LM logits, or (B, T, classes+4) through the learnable verbalizer."""
        first = cache is None or cache.empty
        out = self.lm(tokens, embeds=self._embed(tokens), cache=cache, **(self._prefixes() if first else {}))
        if self.verbalizer_head is not None:
            with torch.autocast(out.device.type, enabled=False):       # the trained head computes in fp32
                out = self.head_dropout(self.verbalizer_head(out.float()))
        return out

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, reduce: bool = True):
        """Cross entropy on the targets from the separator on. ``inputs``/``targets``: (B, T), pad = 1.

        Normalisation: ``label`` (default) averages over the scored tokens; ``ntokens`` divides the sum
        by all non-pad targets as fairseq's criterion did (only the scale differs; clip-norm sees it).
        With ``reduce=False`` returns (summed loss per row, scored tokens per row).
        """
        is_sep = targets.eq(SEP)
        n_sep = is_sep.sum(1)
        if not bool((n_sep == 1).all()):
            bad = int((n_sep != 1).nonzero()[0, 0])
            raise ValueError(f"every target row needs exactly one separator <s> (index 0); row {bad} has "
                             f"{int(n_sep[bad])}: {targets[bad].tolist()}")
        scored = (torch.cumsum(is_sep.long(), 1) > 0) & targets.ne(PAD)          # (B, T)
        logits = self.logits(inputs)
        if self.verbalizer_head is not None and int(targets[scored].max()) >= logits.size(-1):
            raise ValueError(f"learnable verbalizer has {logits.size(-1)} outputs but a target token is "
                             f"{int(targets[scored].max())}; label codes must come from the identity verbalizer")
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(max=logits.size(-1) - 1),
                              reduction="none") * scored
        if not reduce:
            return nll.sum(1), scored.sum(1)
        if self.cfg.loss_normalization == "ntokens":
            return nll.sum() / targets.ne(PAD).sum().clamp(min=1)
        return nll.sum() / scored.sum().clamp(min=1)

    def logits_fn(self):
        """This task's logits function for :func:`~s3prl_speechprompt.prompt.decode.decode` (``rows`` unused: one
        task). The model's own computation, so decoding equals its loss's view exactly (a bank of one would
        differ in rounding: its head runs under autocast, and it refuses input-level prompts). Decodes in eval
        mode whatever the model's mode (no prompt dropout), and leaves the mode as it was."""
        def fn(tokens: torch.Tensor, cache: Optional[KVCache], rows: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return self.logits(tokens, cache)
            self.eval()
            try:
                return self.logits(tokens, cache)
            finally:
                self.train()
        fn.device = next(self.parameters()).device
        return fn


def build_batch(sources: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], device=None):
    """Token-id sources and verbalized labels -> right-padded (B, T) inputs ``</s> src <s> label`` and targets
    ``src <s> label </s>``.
    """
    rows = [[*s, SEP, *y] for s, y in zip(sources, labels)]
    T = max(len(r) for r in rows) + 1
    inputs = torch.full((len(rows), T), PAD, dtype=torch.long)
    targets = torch.full((len(rows), T), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        r = torch.as_tensor(r, dtype=torch.long)
        inputs[i, 0] = EOS
        inputs[i, 1:len(r) + 1] = r
        targets[i, :len(r)] = r
        targets[i, len(r)] = EOS
    return inputs.to(device), targets.to(device)


def left_pad(rows: Sequence[Sequence[int]], device=None) -> torch.Tensor:
    """(B, T) tensor, left padded with ``<pad>`` so every row ends at the last column."""
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, T - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
    return out.to(device)
