"""A prompt bank: several tasks' trained prompts over one frozen unit LM, chosen per batch row.

Prompt tuning leaves the LM untouched, so N tasks need one LM plus N small prompt sets. The bank stacks what each
task's :class:`~s3prl_speechprompt.prompt.prompted.PromptedULM` feeds the LM: deep-prompt key/value inputs
``(N, layers, L_max, C)`` (shorter prompts right-padded, masked with ``prefix_padding``), the separator per task
``(N, C)`` (the LM's ``<s>`` row when untrained) and the verbalizer head per task ``(N, M, V)`` (identity rows
without one; outputs past ``classes + 4`` at -inf, so arg-max and log-softmax equal the task's own). A batch carries
``task_ids`` (B,) and costs one LM forward. Built from each model's *materialised* prefixes (eval mode), so any
parameterisation banks the same way; an input-level prompt without deep prompts is refused (its prefix has
positions of its own: decode it alone with ``PromptedULM.logits_fn``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from s3prl_speechprompt.lm_ref import weights_fingerprint
from s3prl_speechprompt.prompt.prompted import SEP, PromptedULM
from s3prl_speechprompt.ulm.model import KVCache, UnitLM


class PromptBank(nn.Module):
    """``logits(tokens, task_ids)`` for rows of mixed tasks; ``logits_fn(task_ids)`` decodes them (prompt/decode.py)."""

    def __init__(self, lm: UnitLM, names: Sequence[str],
                 prefixes: Sequence[Optional[List[Tuple[torch.Tensor, torch.Tensor]]]],
                 separators: Sequence[Optional[torch.Tensor]], heads: Sequence[Optional[torch.Tensor]]):
        """``prefixes[t]``: one (k_in, v_in) pair per layer, each (L_t, C), or None; ``separators[t]``: (C,) or
        None; ``heads[t]``: (n_out, V) verbalizer-head weight or None. Prefer :meth:`from_models`."""
        super().__init__()
        if not names:
            raise ValueError("a prompt bank needs at least one task")
        if len(set(names)) != len(names):
            raise ValueError(f"prompt bank: task names must be distinct, got {list(names)}")
        self.lm = lm
        self.names = list(names)
        n, d, V, layers = len(names), lm.cfg.embed_dim, lm.cfg.vocab_size, lm.num_layers
        lengths = [0 if p is None else p[0][0].shape[-2] for p in prefixes]
        L = max(lengths)
        pk = torch.zeros(n, layers, L, d)
        pv = torch.zeros(n, layers, L, d)
        for t, p in enumerate(prefixes):
            if p is None:
                continue
            if len(p) != layers:
                raise ValueError(f"task {names[t]!r}: expected {layers} prefix (k, v) pairs (one per LM layer), "
                                 f"got {len(p)}")
            for i, (k, v) in enumerate(p):
                if k.shape != (lengths[t], d) or v.shape != (lengths[t], d):
                    raise ValueError(f"task {names[t]!r} layer {i}: prefix key/value must be ({lengths[t]}, {d}), "
                                     f"got {tuple(k.shape)} / {tuple(v.shape)}")
                pk[t, i, :lengths[t]] = k.detach().float()
                pv[t, i, :lengths[t]] = v.detach().float()
        sep_default = lm.decoder.embed_tokens.weight[SEP].detach().float().cpu()      # the LM's own <s> row
        sep = torch.stack([sep_default if s is None else s.detach().float().cpu() for s in separators])
        self.register_buffer("prefix_key", pk)                              # (N, layers, L_max, C)
        self.register_buffer("prefix_value", pv)
        self.register_buffer("prefix_length", torch.tensor(lengths, dtype=torch.long))   # (N,)
        self.register_buffer("separator", sep)                              # (N, C)
        self.has_head = any(h is not None for h in heads)
        if self.has_head:
            for t, h in enumerate(heads):
                if h is not None and (h.dim() != 2 or h.size(1) != V or h.size(0) > V):
                    raise ValueError(f"task {names[t]!r}: verbalizer head must be (n_out <= {V}, {V}), "
                                     f"got {tuple(h.shape)}")
            # outputs: the widest head, or the whole vocabulary if some task has no head (identity rows)
            M = V if any(h is None for h in heads) else max(h.size(0) for h in heads)
            w = torch.zeros(n, M, V)                                         # (N, M out, V in)
            valid = torch.zeros(n, M, dtype=torch.bool)
            for t, h in enumerate(heads):
                if h is None:
                    w[t] = torch.eye(V)
                    valid[t] = True
                else:
                    w[t, :h.size(0)] = h.detach().float()
                    valid[t, :h.size(0)] = True
            self.register_buffer("head", w)
            self.register_buffer("head_valid", valid)
        self.lm.eval()

    @classmethod
    def from_models(cls, named: Sequence[Tuple[str, PromptedULM]]) -> "PromptBank":
        """Stack trained models that share one LM (same object, or equal fingerprints)."""
        if not named:
            raise ValueError("a prompt bank needs at least one (name, model) pair")
        lm = named[0][1].lm
        fp = None
        prefixes, seps, heads = [], [], []
        for name, model in named:
            if model.lm is not lm:
                fp = fp or weights_fingerprint(lm.state_dict())
                other = weights_fingerprint(model.lm.state_dict())
                if other != fp:
                    raise ValueError(f"task {name!r} runs on another unit LM (fingerprint {other}) than "
                                     f"{named[0][0]!r} ({fp}); a bank shares one LM: make one bank per LM")
            was = model.training
            model.eval()
            with torch.no_grad():
                kw = model._prefixes()                       # what the model feeds the LM, materialised
            model.train(was)
            if "prefix_embeds" in kw:
                raise ValueError(f"task {name!r} has an input-level prompt without deep prompts; the bank stacks "
                                 f"deep prompts only: decode it alone (PromptedULM.logits_fn)")
            prefixes.append([(k.detach(), v.detach()) for k, v in kw["prefix_kv"]] if "prefix_kv" in kw else None)
            seps.append(None if model.separator is None else model.separator.detach())
            heads.append(None if model.verbalizer_head is None else model.verbalizer_head.weight.detach())
        return cls(lm, [n for n, _ in named], prefixes, seps, heads)

    def bank_bytes(self) -> int:
        """Bytes of the stacked prompts (the LM excluded): what N tasks add on top of one LM."""
        return sum(b.numel() * b.element_size() for b in self.buffers(recurse=False))

    def task_ids(self, names: Sequence[str], device=None) -> torch.Tensor:
        index = {n: i for i, n in enumerate(self.names)}
        missing = sorted({n for n in names if n not in index})
        if missing:
            raise KeyError(f"prompt bank has no task(s) {missing}; it holds {self.names}")
        return torch.tensor([index[n] for n in names], dtype=torch.long, device=device)

    # ------------------------------------------------------------------ forward
    def logits(self, tokens: torch.Tensor, task_ids: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """(B, T, V or M) logits of ``tokens`` (B, T), row b prompted with task ``task_ids[b]``; through a
        task's verbalizer head, outputs past its ``classes + 4`` are -inf. Prefixes go in with the first call only."""
        first = cache is None or cache.empty
        emb = self.lm.embed(tokens)
        emb = torch.where(tokens.eq(SEP).unsqueeze(-1), self.separator[task_ids].unsqueeze(1).to(emb.dtype), emb)
        kw = {}
        if first and self.prefix_key.size(2) > 0:
            k, v = self.prefix_key[task_ids], self.prefix_value[task_ids]              # (B, layers, L, C)
            kw["prefix_kv"] = [(k[:, i], v[:, i]) for i in range(k.size(1))]
            L = k.size(2)
            kw["prefix_padding"] = torch.arange(L, device=tokens.device).unsqueeze(0) >= \
                self.prefix_length[task_ids].unsqueeze(1)                              # (B, L)
        out = self.lm(tokens, embeds=emb, cache=cache, **kw)
        if self.has_head:
            out = torch.einsum("btv,bov->bto", out, self.head[task_ids].to(out.dtype))
            out = out.masked_fill(~self.head_valid[task_ids].unsqueeze(1), float("-inf"))
        return out

    def logits_fn(self, task_ids: torch.Tensor):
        """The logits function of rows with tasks ``task_ids`` (one per source) for
        :func:`~s3prl_speechprompt.prompt.decode.decode`: batch row b is prompted with ``task_ids[rows[b]]``."""
        ids = task_ids.to(self.separator.device)

        def fn(tokens: torch.Tensor, cache: Optional[KVCache], rows: torch.Tensor) -> torch.Tensor:
            return self.logits(tokens, ids[rows], cache)
        fn.device = self.separator.device
        return fn
