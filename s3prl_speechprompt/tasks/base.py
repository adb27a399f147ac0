"""What a SUPERB task is to SpeechPrompt: a reader of its corpus, label tokens, and a scorer.

A task turns each utterance's label into a sequence of *label tokens* (KS: the class name; IC:
action/object/location; ASR: characters) that the verbalizer maps to units, and scores decoded
label-token sequences the way SUPERB scores the task. Adding a task = one module defining a
``Task`` subclass decorated with ``@register_task`` + one YAML in ``downstream_configs/``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Type


@dataclass(frozen=True)
class Item:
    """One utterance: where its audio is and its label tokens.

    ``offset``/``num_samples`` select a crop (SUPERB's ``_silence_`` clips are 1-s windows of long
    background-noise files); ``num_samples=None`` means the whole file.
    """

    id: str
    wav_path: str
    labels: tuple
    offset: int = 0
    num_samples: Optional[int] = None


SAMPLE_RATE = 16000


def read_item_audio(item: Item) -> "np.ndarray":
    """16 kHz mono float32 samples of ``item`` (soundfile; stereo is averaged, other rates resampled)."""
    import numpy as np
    import soundfile as sf

    try:
        with sf.SoundFile(item.wav_path) as f:
            sr = f.samplerate
            f.seek(item.offset)
            wav = f.read(item.num_samples if item.num_samples is not None else -1, dtype="float32", always_2d=True)
    except Exception as e:
        raise RuntimeError(f"{item.wav_path}: cannot read audio ({type(e).__name__}: {e})") from e
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != SAMPLE_RATE:
        import torch
        import torchaudio.functional as AF
        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), sr, SAMPLE_RATE).numpy()
    if wav.size == 0:
        raise ValueError(f"{item.wav_path}: empty audio (0 samples at offset {item.offset})")
    return np.ascontiguousarray(wav, dtype=np.float32)


class Task:
    """Base class; subclasses set the class attributes and implement ``read_split``."""

    name: str = ""
    splits: Sequence[str] = ("train", "dev", "test")
    metrics: Sequence[str] = ("accuracy",)
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    default_prompt_length: int = 3            # at GSLM width; the paper's KS value
    max_label_tokens: int = 1                 # decoding budget in label tokens (x code length, + </s>)

    def __init__(self, **datarc):
        self.datarc = datarc

    def read_split(self, split: str) -> List[Item]:
        raise NotImplementedError

    def score(self, hyps: Sequence[Sequence[Optional[str]]], refs: Sequence[Sequence[str]]) -> Dict[str, float]:
        """Exact match of the whole label sequence (SUPERB KS accuracy; IC = all three slots right)."""
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} predictions for {len(refs)} references")
        correct = sum(list(h) == list(r) for h, r in zip(hyps, refs))
        return {"accuracy": correct / max(len(refs), 1)}

    def label_string(self, tokens: Sequence[Optional[str]]) -> str:
        """How a label-token sequence is written to prediction/truth files."""
        return " ".join("<unk>" if t is None else t for t in tokens)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has splits {list(self.splits)}, not {split!r}")


TASKS: Dict[str, Type[Task]] = {}


def register_task(cls: Type[Task]) -> Type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Type[Task]:
    """The task class for ``name``; task modules in this package are imported on first use."""
    if name not in TASKS:
        import s3prl_speechprompt.tasks as pkg
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name != "base":
                importlib.import_module(f"{pkg.__name__}.{mod.name}")
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]
