"""What a SUPERB task is to SpeechPrompt: a reader of its corpus, label tokens, and a scorer.

A task turns each utterance's label into a sequence of *label tokens* (KS: the class name; IC:
action/object/location; ASR: characters) that the verbalizer maps to units, and scores decoded
label-token sequences the way SUPERB scores the task. Adding a task = one module defining a
``Task`` subclass decorated with ``@register_task`` + one YAML in ``downstream_configs/``.
:func:`get_task` finds ``downstream_expert.task`` in this package, in a module on ``sys.path`` named by the
YAML (``my_pkg.my_task[:name]``), or through the entry-point group ``s3prl_speechprompt.tasks``
(docs/adding_a_task.md).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

from s3prl_speechprompt.errors import ConfigError, InputFileError, UnknownNameError
from s3prl_speechprompt.tasks.audio import SAMPLE_RATE, read_item_audio  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Item:
    """One utterance: where its audio is and its label tokens; ``offset``/``num_samples`` select a crop (SUPERB's
    ``_silence_`` clips are 1-s windows of long background-noise files; ``num_samples=None``: the whole file).
    """

    id: str
    wav_path: str
    labels: tuple
    offset: int = 0
    num_samples: Optional[int] = None


def read_utf8(path) -> str:
    """A text file's contents; non-UTF-8 bytes are an error naming the file, line and byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputFileError(f"{path}: not UTF-8 text (line {line}, byte {e.start}: {data[e.start:e.start + 1]!r}); "
                             f"re-encode it, e.g. iconv -f latin1 -t utf-8") from None


class Task:
    """Base class; subclasses set the class attributes and implement ``read_split``."""

    name: str = ""
    splits: Sequence[str] = ("train", "dev", "test")
    metrics: Sequence[str] = ("accuracy",)
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    default_prompt_length: int = 3            # at GSLM width; the paper's KS value
    max_label_tokens: int = 1                 # decoding budget in label tokens (x code length, + </s>)
    scores_in_percent: bool = False           # score() returns percent (ASR, as SUPERB logs it), else fractions

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

    def utterance_scores(self, hyps, refs) -> Dict[str, Tuple[List[float], List[float]]]:
        """Per-utterance ``(numerator, denominator)`` lists for each metric such that the corpus metric, as a
        fraction, is ``sum(num) / sum(den)``: what a bootstrap over utterances resamples (``speechprompt
        report``). Here: accuracy = correct (0/1) over 1 per utterance."""
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} predictions for {len(refs)} references")
        return {"accuracy": ([float(list(h) == list(r)) for h, r in zip(hyps, refs)], [1.0] * len(refs))}

    def label_string(self, tokens: Sequence[Optional[str]]) -> str:
        """How a label-token sequence is written to prediction/truth files."""
        return " ".join("<unk>" if t is None else t for t in tokens)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has splits {list(self.splits)}, not {split!r}")

    def corpus_split(self, corpus, split: str):
        """``(ids, all_data)`` of an s3prl corpus parser whose ``data_split_ids`` follow ``self.splits``."""
        self.check_split(split)
        return dict(zip(self.splits, corpus.data_split_ids))[split], corpus.all_data


TASKS: Dict[str, Type[Task]] = {}


def register_task(cls: Type[Task]) -> Type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    TASKS[cls.name] = cls
    return cls


ENTRY_POINT_GROUP = "s3prl_speechprompt.tasks"


def _import_package_tasks() -> None:
    import s3prl_speechprompt.tasks as pkg
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base":
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


def _from_module(spec: str, requested: str, prefer: Optional[str] = None) -> Type[Task]:
    """The task registered by module ``spec`` (``module`` or ``module:name``); without ``:name``, the
    module's only task, or the one called ``prefer`` if it registers several."""
    module_name, _, task_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):   # the module itself (not one of its imports) is missing
            raise UnknownNameError(f"unknown task {requested!r}: no module {module_name!r} on sys.path "
                                   f"(known tasks: {', '.join(sorted(TASKS))})") from None
        raise
    if task_name:
        if task_name not in TASKS:
            raise UnknownNameError(f"module {module_name} registers no task {task_name!r}; known: "
                                   f"{', '.join(sorted(TASKS))}")
        return TASKS[task_name]
    mine = [cls for cls in TASKS.values() if cls.__module__ == module.__name__]
    if prefer is not None and len(mine) > 1 and any(c.name == prefer for c in mine):
        return TASKS[prefer]
    if not mine:
        raise UnknownNameError(f"module {module_name} registers 0 tasks; decorate a Task subclass with @register_task")
    if len(mine) > 1:
        raise UnknownNameError(f"module {module_name} registers {len(mine)} tasks "
                               f"({', '.join(sorted(c.name for c in mine))}); name one as '{module_name}:<name>'")
    return mine[0]


def _entry_point(name: str) -> Optional[str]:
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value
    return None


def get_task(name: str) -> Type[Task]:
    """The task class for ``name``: a registered name, ``module`` or ``module:name`` outside this package, or an
    entry point of the group ``s3prl_speechprompt.tasks`` (this package's task modules are imported on first use).
    """
    if name in TASKS:
        return TASKS[name]
    _import_package_tasks()
    if name in TASKS:
        return TASKS[name]
    if "." in name or ":" in name:
        return _from_module(name, name)
    target = _entry_point(name)
    if target is not None:
        return _from_module(target, name, prefer=name)
    if name.isidentifier() and importlib.util.find_spec(name) is not None:   # a top-level module: task: my_task
        return _from_module(name, name)
    raise UnknownNameError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))} (a task outside this package "
                           f"is named by its module, e.g. 'my_pkg.my_task', or by an entry point of group "
                           f"{ENTRY_POINT_GROUP!r})")
