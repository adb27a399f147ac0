"""Decoding a trained task the way its configuration says: greedy or beam search, at the trained precision.

The runner's evaluation (``prompt_expert``) and ``speechprompt predict`` (``serve``) both call :func:`decode`,
so a prediction served on new audio is the one ``-m evaluate`` would have written for it, also for a
checkpoint trained with ``beam_size > 1`` or ``precision: bf16``. ``stats['scores']`` receives each row's
log-probability as the search computed it (``predict``'s ``score``).
"""
from __future__ import annotations

from typing import List, Optional

from s3prl_speechprompt import precision as precision_
from s3prl_speechprompt.prompt.beam import beam_decode
from s3prl_speechprompt.prompt.prompted import PromptedULM, greedy_decode


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
