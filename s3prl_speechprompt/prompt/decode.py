"""The one decoder: greedy or beam search over a logits function, continuing ``</s> source <s>``.

Every front end decodes through :func:`decode`, given ``logits_fn(tokens (B, T), cache, rows (B,)) -> (B, T, V)``:
:meth:`PromptedULM.logits_fn <s3prl_speechprompt.prompt.prompted.PromptedULM.logits_fn>` for one task (exactly as
its model computes) or :meth:`PromptBank.logits_fn(task_ids) <s3prl_speechprompt.prompt.bank.PromptBank.logits_fn>`
for rows of mixed tasks on one LM. ``rows[b]`` is the source of batch row ``b`` (beam search holds ``beam_size``
rows per source), so a bank prompts each row with its source's task. ``cache``: a
:class:`~s3prl_speechprompt.ulm.model.KVCache` (None: the whole sequence every step, as SpeechPrompt's reference
did); prefixes go in while it is empty. The budget counts new tokens only (``</s>`` included), per source if a list.
Beam search ranks ended hypotheses by log-probability / length**``length_penalty`` (fairseq's, ``</s>`` counted); a
source is done with ``beam_size`` ended hypotheses or at its budget (then its best live beam, unfinished). At width
1 it gives greedy's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Callable, List, Optional, Sequence, Union

import torch

from s3prl_speechprompt import precision as precision_
from s3prl_speechprompt.prompt.prompted import EOS, PAD, SEP, left_pad
from s3prl_speechprompt.ulm.model import KVCache

LogitsFn = Callable[[torch.Tensor, Optional[KVCache], torch.Tensor], torch.Tensor]


@dataclass
class Decoded:
    """Per source: the generated ids (without ``</s>``), their log-probability (of ``</s>`` too when the source
    ended; beam search: the best hypothesis's, before the length penalty) and whether it ended with ``</s>``."""

    tokens: List[List[int]]
    scores: List[float]
    finished: List[bool]

    @property
    def unfinished(self) -> int:
        """Sources that reached their budget without ``</s>``."""
        return sum(not f for f in self.finished)


@torch.no_grad()
def decode(logits_fn: LogitsFn, sources: Sequence[Sequence[int]], max_new_tokens: Union[int, Sequence[int]], *,
           beam_size: int = 1, length_penalty: float = 1.0, precision: str = "fp32",
           device: Union[str, torch.device, None] = None, use_cache: bool = True) -> Decoded:
    """Decode every source (token ids) under ``precision``'s autocast. ``device``: where the token tensors live
    (default ``logits_fn.device``, which the models' and banks' logits functions carry, else CPU)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    budgets = [int(max_new_tokens)] * len(sources) if isinstance(max_new_tokens, Integral) \
        else [int(b) for b in max_new_tokens]
    if len(budgets) != len(sources):
        raise ValueError(f"max_new_tokens: expected one budget per source ({len(sources)}), got {len(budgets)}")
    if not sources:
        return Decoded([], [], [])
    device = torch.device(device if device is not None else getattr(logits_fn, "device", "cpu"))
    prompts = left_pad([[EOS, *s, SEP] for s in sources for _ in range(beam_size)], device)
    with precision_.autocast(precision, device):
        if beam_size == 1:
            return _greedy(logits_fn, prompts, budgets, use_cache)
        return _beam(logits_fn, prompts, budgets, use_cache, beam_size, length_penalty)


def _greedy(logits_fn: LogitsFn, tokens: torch.Tensor, budgets: List[int], use_cache: bool) -> Decoded:
    B, device = tokens.size(0), tokens.device
    rows = torch.arange(B, device=device)
    budget = torch.tensor(budgets, dtype=torch.long, device=device)
    done = budget <= 0
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    scores = torch.zeros(B, dtype=torch.double, device=device)
    out: List[List[int]] = [[] for _ in range(B)]
    cache = KVCache() if use_cache else None
    step_input, step = tokens, 0
    while not bool(done.all()):
        logits = logits_fn(step_input, cache, rows)[:, -1]
        nxt = logits.argmax(-1)
        active = ~done
        picked = logits.float().log_softmax(-1).gather(1, nxt.unsqueeze(1))[:, 0]
        scores += torch.where(active, picked.double(), 0.0)
        ended = active & nxt.eq(EOS)
        finished |= ended
        ids = nxt.tolist()
        for i in (active & ~ended).nonzero().flatten().tolist():
            out[i].append(ids[i])
        step += 1
        done = done | ended | (budget <= step)
        nxt = nxt.masked_fill(done, PAD).unsqueeze(1)
        if use_cache:
            step_input = nxt
        else:
            tokens = torch.cat([tokens, nxt], 1)
            step_input = tokens
    return Decoded(out, scores.tolist(), finished.tolist())


def _beam(logits_fn: LogitsFn, seqs: torch.Tensor, budgets: List[int], use_cache: bool, k: int,
          length_penalty: float) -> Decoded:
    B, device = len(budgets), seqs.device
    rows = torch.arange(B, device=device).repeat_interleave(k)           # row b*k + j holds source b's beam j
    cache = KVCache() if use_cache else None
    scores = torch.full((B, k), float("-inf"), device=device)
    scores[:, 0] = 0.0                                                    # identical rows: start from one
    hyps = [[[] for _ in range(k)] for _ in range(B)]
    ended: List[List[tuple]] = [[] for _ in range(B)]                    # (normalised score, tokens, score)
    result: List[Optional[tuple]] = [None] * B                           # (tokens, score, finished)

    def norm(score: float, length: int) -> float:
        return score / max(length, 1) ** length_penalty

    def finish(b: int) -> None:
        if ended[b]:
            best = max(ended[b], key=lambda x: x[0])
        else:                        # budget reached without </s>: the best live beam
            best = max(((norm(float(scores[b, j]), len(hyps[b][j])), hyps[b][j], float(scores[b, j]))
                        for j in range(k) if scores[b, j] > float("-inf")), key=lambda x: x[0], default=(0.0, [], 0.0))
        result[b] = (list(best[1]), best[2], bool(ended[b]))

    for b in range(B):
        if budgets[b] <= 0:
            finish(b)
    step_input, step = seqs, 0
    while any(r is None for r in result):
        logp = torch.log_softmax(logits_fn(step_input, cache, rows)[:, -1].float(), -1)   # (B*k, V)
        V = logp.size(-1)
        cand = (scores.view(B * k, 1) + logp).view(B, k * V)
        top_scores, top_idx = cand.topk(min(2 * k, k * V), dim=-1)                         # (B, 2k)
        origin = torch.zeros(B, k, dtype=torch.long, device=device)
        tokens = torch.full((B, k), PAD, dtype=torch.long, device=device)
        new_scores = torch.full((B, k), float("-inf"), device=device)
        new_hyps = [[[] for _ in range(k)] for _ in range(B)]
        for b in range(B):
            if result[b] is not None:
                origin[b] = torch.arange(k, device=device)
                continue
            n = 0
            for s, idx in zip(top_scores[b].tolist(), top_idx[b].tolist()):
                if s == float("-inf"):
                    break
                beam, tok = divmod(idx, V)
                if tok == EOS:
                    ended[b].append((norm(s, step + 1), hyps[b][beam], s))
                    continue
                origin[b, n], tokens[b, n], new_scores[b, n] = beam, tok, s
                new_hyps[b][n] = hyps[b][beam] + [tok]
                n += 1
                if n == k:
                    break
        hyps, scores = new_hyps, new_scores
        step += 1
        for b in range(B):
            if result[b] is None and (len(ended[b]) >= k or budgets[b] <= step):
                finish(b)
        if all(r is not None for r in result):
            break
        flat = (origin + torch.arange(B, device=device).unsqueeze(1) * k).view(-1)
        if use_cache:
            cache.reorder(flat)
            step_input = tokens.view(B * k, 1)
        else:
            seqs = torch.cat([seqs.index_select(0, flat), tokens.view(B * k, 1)], 1)
            step_input = seqs
    return Decoded([r[0] for r in result], [r[1] for r in result], [r[2] for r in result])
