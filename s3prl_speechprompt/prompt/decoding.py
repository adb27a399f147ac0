"""Decoding a trained task the way its configuration says: greedy or beam search, at the trained precision.

The runner's evaluation (``prompt_expert``) and ``speechprompt predict`` (``serve``) both call :func:`decode`,
so a prediction served on new audio is the one ``-m evaluate`` would have written for it, also for a
checkpoint trained with ``beam_size > 1`` or ``precision: bf16``. :func:`label_logprob` scores what was
decoded (the ``score`` field of ``predict``) with one teacher-forced pass under the same precision.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from s3prl_speechprompt import precision as precision_
from s3prl_speechprompt.prompt.beam import beam_decode
from s3prl_speechprompt.prompt.prompted import EOS, SEP, PromptedULM, greedy_decode


def decode(model: PromptedULM, sources, max_new_tokens: int, beam_size: int = 1, precision: str = "fp32",
           stats: Optional[dict] = None) -> List[List[int]]:
    """Generated ids (without ``</s>``) per source: greedy for ``beam_size == 1``, else beam search; the LM
    runs under ``precision``'s autocast. A row is finished (ended with ``</s>``) iff it is shorter than
    ``max_new_tokens``: both searches stop a row at ``</s>`` or at the budget."""
    device = next(model.parameters()).device
    with precision_.autocast(precision, device):
        if beam_size > 1:
            return beam_decode(model, sources, max_new_tokens, beam_size=beam_size, stats=stats)
        return greedy_decode(model, sources, max_new_tokens, stats=stats)


@torch.no_grad()
def label_logprob(model: PromptedULM, source: Sequence[int], generated: Sequence[int], finished: bool,
                  precision: str = "fp32") -> float:
    """Natural-log probability of ``generated`` (plus the closing ``</s>`` when ``finished``) after
    ``</s> source <s>``, from one teacher-forced forward under ``precision``."""
    targets = [*generated, EOS] if finished else list(generated)
    if not targets:
        return 0.0
    device = next(model.parameters()).device
    prefix = [EOS, *source, SEP]
    tokens = torch.tensor([prefix + targets[:-1]], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    with precision_.autocast(precision, device):
        logp = model.logits(tokens)[0, len(prefix) - 1:].float().log_softmax(-1)          # (len(targets), V)
    model.train(was_training)
    return float(logp.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).sum())
