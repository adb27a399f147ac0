"""Speaker identification on VoxCeleb1, as SUPERB runs it (task ``sid``; 1,251 classes, accuracy).

s3prl's ``VoxCeleb1SID`` parser reads ``iden_split.txt`` (``<1|2|3> idXXXXX/<video>/<n>.wav``, train/dev/test) and
finds each file under ``<file_path>/*/wav/``. Labels are ``speaker_<k>``, k = id - 10001, as SUPERB's. ``meta_data``
is the split file (default ``<file_path>/iden_split.txt``; s3prl's parser would otherwise download it).
``max_timestep`` crops every *training* utterance to its first samples (SUPERB crops a random window each step; a
fixed window keeps the expert's unit cache valid). 1,251 speakers exceed GSLM's 100 units: use ``multi``.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from s3prl_speechprompt.errors import InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, Task, register_task

SPLIT_FILE = "iden_split.txt"


@register_task
class SpeakerIdentification(Task):
    name = "sid"
    default_prompt_length = 6

    def __init__(self, file_path: str = "", meta_data: str = "", max_timestep: Optional[int] = None, **datarc):
        super().__init__(**datarc)     # SUPERB keys such as train_batch_size are accepted and unused
        self.root = Path(file_path)
        self.meta = Path(meta_data) if meta_data else self.root / SPLIT_FILE
        self.max_timestep = int(max_timestep) if max_timestep else None
        self._corpus = None

    def _parsed(self):
        if self._corpus is None:
            if not str(self.root) or not self.root.is_dir():
                raise MissingFileError(
                    f"downstream_expert.datarc.file_path: {str(self.root) or '(empty)'} is not a directory; point it "
                    f"at the VoxCeleb1 root holding dev/wav and test/wav (or make a synthetic one with "
                    f"`speechprompt synth sid --out DIR`)")
            if not self.meta.is_file():
                raise MissingFileError(f"downstream_expert.datarc.meta_data: {self.meta} not found; it is VoxCeleb1's "
                                       f"iden_split.txt (lines '<1|2|3> idXXXXX/<video>/<n>.wav')")
            from s3prl_speechprompt import compat
            compat.apply()
            from s3prl.dataio.corpus.voxceleb1sid import VoxCeleb1SID

            # the parser reads <cache_root>/iden_split.txt (and downloads it if absent): hand it ours
            with tempfile.TemporaryDirectory(prefix="speechprompt_sid_") as cache:
                shutil.copyfile(self.meta, Path(cache) / SPLIT_FILE)
                self._corpus = VoxCeleb1SID(str(self.root), n_jobs=1, cache_root=cache)
        return self._corpus

    def read_split(self, split: str) -> List[Item]:
        ids, data = self.corpus_split(self._parsed(), split)
        crop = self.max_timestep if split == "train" else None
        items = [Item(uid, str(data[uid]["wav_path"]), (data[uid]["label"],), 0, crop) for uid in sorted(ids)]
        if not items:
            raise InputFileError(f"SID split {split!r} is empty in {self.meta}")
        return items
