"""Intent classification on Fluent Speech Commands, as SUPERB runs it (accuracy = all three slots right).

s3prl's ``FluentSpeechCommands`` parser reads ``data/{train,valid,test}_data.csv``. Each utterance has
three label tokens, ``action:<v>``, ``object:<v>``, ``location:<v>`` (spaces in values become ``_``): the slot prefix keeps
object "none" and location "none" apart, like SpeechPrompt's non-overlapping ids (24 classes on FSC).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from s3prl_speechprompt.errors import InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, Task, register_task

SLOTS = ("action", "object", "location")


@register_task
class IntentClassification(Task):
    name = "ic"
    default_prompt_length = 6          # paper, HuBERT IC: 0.15M = 1024 * (25 * 6 + 1)
    max_label_tokens = 3

    def __init__(self, file_path: str = "", **datarc):
        super().__init__(**datarc)
        self.root = Path(file_path)
        self._corpus = None

    def _parsed(self):
        if self._corpus is None:
            missing = [f"data/{s}_data.csv" for s in ("train", "valid", "test")
                       if not (self.root / "data" / f"{s}_data.csv").is_file()]
            if not str(self.root) or missing:
                raise MissingFileError(
                    f"downstream_expert.datarc.file_path: {str(self.root) or '(empty)'} is not a Fluent Speech "
                    f"Commands root (missing {', '.join(missing)}); point it at fluent_speech_commands_dataset/ "
                    f"(or make a synthetic one with `speechprompt synth ic --out DIR`)")
            from s3prl.dataio.corpus.fluent_speech_commands import FluentSpeechCommands
            self._corpus = FluentSpeechCommands(str(self.root))
        return self._corpus

    def read_split(self, split: str) -> List[Item]:
        ids, data = self.corpus_split(self._parsed(), split)
        items = []
        for uid in ids:
            e = data[uid]
            labels = tuple(f"{slot}:{str(e[slot]).replace(' ', '_')}" for slot in SLOTS)   # "change language"
            items.append(Item(str(uid), str(e["path"]), labels))
        if not items:
            raise InputFileError(f"IC split {split!r} is empty in {self.root}/data")
        return items
