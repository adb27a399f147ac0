"""Shared pieces of the sequence-generation tasks (ASR, SF): label tokens are characters (+ slot tags).

Label tokens use ``|`` for the word boundary (SUPERB ASR's ``char.dict`` symbol); a ``None`` label (a code
the verbalizer cannot map back) is written as :data:`UNDECODABLE`, one character that is in no vocabulary,
so it costs exactly one character edit.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

from s3prl_speechprompt.errors import InputFileError
from s3prl_speechprompt.tasks.base import Item, Task

WORD_BOUNDARY = "|"
UNDECODABLE = "*"


def text_to_tokens(text: str) -> tuple:
    """``"hello  world"`` -> ``('H','E','L','L','O','|','W','O','R','L','D')`` (SUPERB ASR's ``process_trans``
    without its trailing ``|``: the end of the label is ``</s>`` here)."""
    return tuple(WORD_BOUNDARY.join(text.upper().split()))


def tokens_to_text(tokens: Sequence[Optional[str]]) -> str:
    """Inverse of :func:`text_to_tokens` (``|`` -> space); ``None`` -> :data:`UNDECODABLE`."""
    return "".join(" " if t == WORD_BOUNDARY else (UNDECODABLE if t is None else t) for t in tokens)


class SequenceTask(Task):
    """A task whose label is a token sequence decoded under a budget taken from the training labels.

    ``max_label_tokens`` (datarc), else ceil(longest train label x (1 + ``label_margin``)) + ``label_slack``. The
    train split is listed (no audio) the first time the budget is needed, so ``-m evaluate`` gets training's budget.
    """

    label_margin: float = 0.25
    label_slack: int = 4

    def __init__(self, max_label_tokens: Optional[int] = None, label_margin: Optional[float] = None, **datarc):
        super().__init__(**datarc)
        self._budget = int(max_label_tokens) if max_label_tokens else None
        if label_margin is not None:
            self.label_margin = float(label_margin)
        self._cache = {}

    def read_split(self, split: str) -> List[Item]:
        self.check_split(split)
        if split not in self._cache:
            items = self._read(split)
            if not items:
                raise InputFileError(f"task {self.name!r}: split {split!r} is empty")
            self._cache[split] = items
        return self._cache[split]

    def _read(self, split: str) -> List[Item]:
        raise NotImplementedError

    @property
    def max_label_tokens(self) -> int:
        if self._budget is None:
            longest = max(len(it.labels) for it in self.read_split("train"))
            self._budget = math.ceil(longest * (1 + self.label_margin)) + self.label_slack
        return self._budget
