"""Emotion recognition on IEMOCAP, as SUPERB runs it (task ``er``; 4 classes, accuracy).

s3prl's ``IEMOCAP`` parser reads ``Session1..5/sentences/wav/<dialog>/<utt>.wav`` and
``Session<n>/dialog/EmoEvaluation/<dialog>.txt``. As SUPERB's ``emotion`` downstream: only ``neu hap ang sad exc``
are kept, ``exc`` merged into ``hap``; ``test_fold: fold<k>`` (or ``k``) makes Session k the test split and holds out
``valid_ratio`` (0.2) of the rest as dev: a seeded permutation of the sorted ids (SUPERB's ``random_split`` follows
metadata order, which depends on the file system). SUPERB reports the mean accuracy over the five folds.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from s3prl_speechprompt.errors import ConfigError, InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, Task, register_task

CLASSES = ("neu", "hap", "ang", "sad")
MERGE = {"exc": "hap"}
SESSIONS = 5


def parse_fold(test_fold) -> int:
    """``"fold3"``, ``"Session3"``, ``3`` or ``"3"`` -> 3."""
    text = str(test_fold).strip().lower()
    for prefix in ("fold", "session"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not text.isdigit() or not 1 <= int(text) <= SESSIONS:
        raise ConfigError(f"downstream_expert.datarc.test_fold: expected fold1..fold{SESSIONS}, got {test_fold!r}")
    return int(text)


@register_task
class EmotionRecognition(Task):
    name = "er"
    default_prompt_length = 6

    def __init__(self, root: str = "", test_fold="fold1", valid_ratio: float = 0.2, seed: int = 0, **datarc):
        super().__init__(**datarc)     # SUPERB keys such as pre_load / train_batch_size are accepted and unused
        self.root = Path(root)
        self.fold = parse_fold(test_fold)
        if not 0.0 <= float(valid_ratio) < 1.0:
            raise ConfigError(f"downstream_expert.datarc.valid_ratio must be in [0, 1), got {valid_ratio}")
        self.valid_ratio = float(valid_ratio)
        self.seed = int(seed)
        self._split_items = None

    def _parsed(self):
        missing = [f"Session{k}" for k in range(1, SESSIONS + 1) if not (self.root / f"Session{k}").is_dir()]
        if not str(self.root) or missing:
            raise MissingFileError(
                f"downstream_expert.datarc.root: {str(self.root) or '(empty)'} is not an IEMOCAP root (missing "
                f"{', '.join(missing)}); point it at IEMOCAP_full_release/ (or make a synthetic one with "
                f"`speechprompt synth er --out DIR`)")
        from s3prl_speechprompt import compat
        compat.apply()
        from s3prl.dataio.corpus.iemocap import IEMOCAP
        return IEMOCAP(str(self.root), n_jobs=1)

    def _splits(self):
        if self._split_items is None:
            import numpy as np

            corpus = self._parsed()
            train, test = [], []
            for uid, e in sorted(corpus.all_data.items()):
                label = MERGE.get(e["emotion"], e["emotion"])
                if label not in CLASSES:
                    continue
                item = Item(uid, str(e["wav_path"]), (label,))
                (test if int(e["session_id"]) == self.fold else train).append(item)
            n_dev = int(round(self.valid_ratio * len(train)))
            order = np.random.RandomState(self.seed).permutation(len(train))
            dev_idx = set(order[:n_dev].tolist())
            self._split_items = {
                "train": [it for i, it in enumerate(train) if i not in dev_idx],
                "dev": [it for i, it in enumerate(train) if i in dev_idx],
                "test": test,
            }
        return self._split_items

    def read_split(self, split: str) -> List[Item]:
        self.check_split(split)
        items = self._splits()[split]
        if not items:
            raise InputFileError(f"ER split {split!r} (test fold {self.fold}) is empty under {self.root}")
        return list(items)
