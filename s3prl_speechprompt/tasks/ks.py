"""Keyword spotting on Speech Commands v0.01, as SUPERB runs it (12 classes, accuracy).

The file list and the train/dev hash split come from s3prl's own ``SpeechCommandsV1`` parser; the
separate official test set is used for test. SUPERB draws ``_silence_`` as a *random* 1-s crop of a
``_background_noise_`` file each time; a fixed list of 1-s windows (``silence_hop_seconds`` apart)
stands in for it here so that units can be computed once and cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import soundfile as sf

from s3prl_speechprompt.errors import InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, Task, register_task

CLASSES = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
SAMPLE_RATE = 16000


@register_task
class KeywordSpotting(Task):
    name = "ks"
    default_prompt_length = 3          # paper, HuBERT KS: 0.08M = 1024 * (25 * 3 + 1)

    def __init__(self, speech_commands_root: str = "", speech_commands_test_root: str = "",
                 silence_hop_seconds: float = 1.0, **datarc):
        super().__init__(**datarc)
        self.root, self.test_root = Path(speech_commands_root), Path(speech_commands_test_root)
        self.silence_hop = silence_hop_seconds
        self._corpus = None

    def _parsed(self):
        if self._corpus is None:
            for key, path in (("speech_commands_root", self.root), ("speech_commands_test_root", self.test_root)):
                if not str(path) or not path.is_dir():
                    raise MissingFileError(
                        f"downstream_expert.datarc.{key}: {str(path) or '(empty)'} is not a directory; point it at "
                        f"the extracted speech_commands_{'test_set_' if 'test' in key else ''}v0.01 folder "
                        f"(or make a synthetic one with `speechprompt synth ks --out DIR`)")
            from s3prl.dataio.corpus.speech_commands import SpeechCommandsV1
            self._corpus = SpeechCommandsV1(str(self.root), str(self.test_root))
        return self._corpus

    def read_split(self, split: str) -> List[Item]:
        self.check_split(split)
        corpus = self._parsed()
        entries = {"train": corpus.train, "dev": corpus.valid, "test": corpus.test}[split]
        items = []
        for uid, e in sorted(entries.items()):
            label = e["class_name"]
            if label not in CLASSES:
                raise InputFileError(f"{e['wav_path']}: class folder {label!r} is not one of the 12 SUPERB classes")
            if label == "_silence_" and split != "test":
                items.extend(self._silence_windows(Path(e["wav_path"])))
            else:
                items.append(Item(uid, str(e["wav_path"]), (label,)))
        items = self._cap_silence(items)
        if not items:
            raise InputFileError(f"KS split {split!r} is empty under "
                                 f"{self.test_root if split == 'test' else self.root}")
        return items

    @staticmethod
    def _cap_silence(items: List[Item]) -> List[Item]:
        """Keep at most as many silence windows as the average other class has, evenly spaced, so
        long noise files do not swamp the split (SUPERB balances classes by resampling instead)."""
        is_window = [it.labels == ("_silence_",) and it.num_samples is not None for it in items]
        silence = [it for it, w in zip(items, is_window) if w]
        others = [it for it, w in zip(items, is_window) if not w]
        n_classes = len({it.labels for it in others}) or 1
        cap = max(1, len(others) // n_classes)
        if len(silence) <= cap:
            return items
        step = len(silence) / cap
        return others + [silence[int(i * step)] for i in range(cap)]

    def _silence_windows(self, path: Path) -> List[Item]:
        n = sf.info(str(path)).frames
        hop = max(int(self.silence_hop * SAMPLE_RATE), 1)
        starts = range(0, max(n - SAMPLE_RATE, 0) + 1, hop)
        return [Item(f"_silence_/{path.stem}-{s}", str(path), ("_silence_",), s, min(SAMPLE_RATE, n)) for s in starts]
