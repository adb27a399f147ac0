"""Beam search for the prompted unit LM (next to :func:`~s3prl_speechprompt.prompt.prompted.greedy_decode`).

Each source gets ``beam_size`` rows in one KV-cached batch; after every step the cache is reordered to the
surviving beams (``KVCache.reorder``). A hypothesis ends when it emits ``</s>``; a source is done once it
holds ``beam_size`` ended hypotheses or the budget runs out (then its live beams count as unfinished
candidates). Hypotheses are ranked by log-probability / length**``length_penalty`` (fairseq's convention,
``</s>`` included in the length). With ``beam_size=1`` the result equals greedy decoding.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from s3prl_speechprompt.prompt.prompted import EOS, PAD, SEP, PromptedULM, left_pad
from s3prl_speechprompt.ulm.model import KVCache


@torch.no_grad()
def beam_decode(model: PromptedULM, sources, max_new_tokens: int, beam_size: int = 4,
                length_penalty: float = 1.0, stats: Optional[dict] = None) -> List[List[int]]:
    """Best hypothesis per source (generated ids without ``</s>``); ``stats['unfinished']`` counts sources
    whose best hypothesis never emitted ``</s>`` within ``max_new_tokens``, and ``stats['scores']`` gets each
    best hypothesis's log-probability (of ``</s>`` too if it ended; before the length penalty)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    B, k = len(sources), beam_size
    rows = [[EOS, *s, SEP] for s in sources for _ in range(k)]
    step_input = left_pad(rows, device)                                   # (B*k, T)
    cache = KVCache()
    scores = torch.full((B, k), float("-inf"), device=device)
    scores[:, 0] = 0.0                                                    # identical rows: start from one
    hyps = [[[] for _ in range(k)] for _ in range(B)]
    ended: List[List[tuple]] = [[] for _ in range(B)]                    # (normalised score, tokens, score)
    done = [False] * B

    def norm(score: float, length: int) -> float:
        return score / max(length, 1) ** length_penalty

    for step in range(max_new_tokens):
        logp = torch.log_softmax(model.logits(step_input, cache=cache)[:, -1].float(), -1)   # (B*k, V)
        V = logp.size(-1)
        cand = (scores.view(B * k, 1) + logp).view(B, k * V)
        top_scores, top_idx = cand.topk(min(2 * k, k * V), dim=-1)                         # (B, 2k)
        origin = torch.zeros(B, k, dtype=torch.long, device=device)
        tokens = torch.full((B, k), PAD, dtype=torch.long, device=device)
        new_scores = torch.full((B, k), float("-inf"), device=device)
        new_hyps = [[[] for _ in range(k)] for _ in range(B)]
        for b in range(B):
            if done[b]:
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
            if len(ended[b]) >= k:
                done[b] = True
        hyps, scores = new_hyps, new_scores
        if all(done):
            break
        flat = (origin + torch.arange(B, device=device).unsqueeze(1) * k).view(-1)
        cache.reorder(flat)
        step_input = tokens.view(B * k, 1)

    out, best_scores, unfinished = [], [], 0
    for b in range(B):
        if ended[b]:
            best = max(ended[b], key=lambda x: x[0])
        else:                        # budget reached without </s>: the best live beam
            best = max(((norm(float(scores[b, j]), len(hyps[b][j])), hyps[b][j], float(scores[b, j]))
                        for j in range(k) if scores[b, j] > float("-inf")), key=lambda x: x[0], default=(0.0, [], 0.0))
            unfinished += 1
        out.append(list(best[1]))
        best_scores.append(best[2])
    model.train(was_training)
    if stats is not None:
        stats["unfinished"] = stats.get("unfinished", 0) + unfinished
        stats.setdefault("scores", []).extend(best_scores)
    return out
