"""Serving trained tasks: many runs (PT / FT-LM, trained by the runner from audio or by the engine from unit
files), audio or unit files in, predictions out.

``speechprompt predict`` (commands/predict.py) is the front end; this module holds the logic. Each run is a
:class:`~s3prl_speechprompt.trained.TrainedTask` built for decoding (:meth:`~s3prl_speechprompt.trained.TrainedTask.build`:
the frozen LM found where training found it, or ``--ulm``, and refused unless it has the weights fingerprint the
prompts were trained on). :class:`Predictor` groups the runs by LM weights fingerprint, whatever front end trained
them: each upstream is built once, each file's features computed once per upstream, its units once per k-means
(or taken as given with unit input), and every LM group decodes all its tasks for a batch of files in one
mixed-task :class:`~s3prl_speechprompt.prompt.bank.PromptBank` pass. Runs on different LMs form separate groups
(each LM loaded once; an FT-LM run carries its own LM), listed by :meth:`Predictor.describe`. A run whose
evaluation decoded otherwise than the bank (``beam_size > 1``, or ``precision`` bf16 / fp16) is decoded by its own
model with :func:`~s3prl_speechprompt.prompt.decode.decode`, exactly as its evaluation decoded; its score is the
searched hypothesis's own log-probability.

A prediction's ``score`` is the natural-log probability of the generated label sequence (its units
through the task's verbalizer head, including the closing ``</s>``) given the utterance's units: for
a one-unit classification label, the log of the class probability. ``finished`` is False when decoding
hit the task's budget without ``</s>``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from s3prl_speechprompt.errors import ConfigError, InputFileError
from s3prl_speechprompt.lm_ref import weights_fingerprint
from s3prl_speechprompt.prompt.bank import PromptBank
from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.trained import UPSTREAM_ARGS, Served
from s3prl_speechprompt.units.prepare import to_units


def decodes_alone(t: Served) -> bool:
    """The bank decodes greedily in fp32; a beam-search or bf16/fp16 run decodes with its own model."""
    return t.trained.decoding.beam_size > 1 or t.trained.decoding.precision != "fp32"


def upstream_key(t: Served) -> Optional[str]:
    """What decides the features of an audio run (None: a unit-level run)."""
    audio = t.trained.audio
    if audio is None:
        return None
    return repr(tuple(audio.upstream.get(k) for k in UPSTREAM_ARGS)) + \
        (weights_fingerprint(audio.featurizer) if audio.featurizer else "")


@dataclass
class Prediction:
    """One JSON line of ``speechprompt predict`` (see :meth:`to_json`)."""

    file: str
    checkpoint: str
    task: str
    method: str
    prediction: str
    labels: List[Optional[str]]
    score: float
    finished: bool
    units: int

    def to_json(self) -> dict:
        return {"file": self.file, "checkpoint": self.checkpoint, "task": self.task, "method": self.method,
                "prediction": self.prediction, "labels": self.labels, "score": round(self.score, 6),
                "finished": self.finished, "units": self.units}


@dataclass
class _LMGroup:
    bank: PromptBank
    tasks: List[int]                 # indices into Predictor.tasks


class Predictor:
    """Serve ``tasks`` (built with :meth:`TrainedTask.build`): :meth:`predict` a batch of waveforms, or of unit
    sequences with ``unit_input`` (every run then decodes the units given, not its own k-means of the audio)."""

    def __init__(self, tasks: Sequence[Served], device: str = "cpu",
                 featurizer_factory: Optional[Callable[[dict, Optional[dict]], Callable]] = None,
                 unit_input: bool = False):
        if not tasks:
            raise ConfigError("nothing to serve: give at least one checkpoint")
        self.tasks, self.device, self.unit_input = list(tasks), device, unit_input
        self.up = [None if unit_input else upstream_key(t) for t in self.tasks]
        unit_level = [t.name for t, up in zip(self.tasks, self.up) if up is None and not unit_input]
        if unit_level:
            raise ConfigError(f"{', '.join(unit_level)}: trained on unit files (no upstream or k-means to make units "
                              f"of audio); give the input as a unit file with --units FILE")
        self.km = [None if up is None else weights_fingerprint({"c": t.quantizer.centroids})
                   for t, up in zip(self.tasks, self.up)]
        self.featurizers: Dict[str, Callable] = {}
        if featurizer_factory is None and not unit_input:
            from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer
            featurizer_factory = runner_featurizer
        for t, up in zip(self.tasks, self.up):
            if up is not None and up not in self.featurizers:
                self.featurizers[up] = featurizer_factory({**t.trained.audio.upstream, "device": device},
                                                          t.trained.audio.featurizer)
        groups: Dict[str, List[int]] = OrderedDict()
        for i, t in enumerate(self.tasks):
            if not decodes_alone(t):
                groups.setdefault(t.lm_fingerprint, []).append(i)
        self.alone = [i for i, t in enumerate(self.tasks) if decodes_alone(t)]
        self.groups = [_LMGroup(PromptBank.from_models([(str(i), self.tasks[i].model) for i in members])
                                .to(device).eval(), members) for members in groups.values()]

    def _front(self, i: int) -> str:
        up = self.tasks[i].trained.audio
        if self.up[i] is None:
            return "unit input"
        return f"upstream {up.upstream['upstream']} layer {up.upstream['upstream_layer_selection']}"

    def describe(self) -> List[str]:
        """One line per LM group: its front ends, the LM loaded once, and which runs it serves."""
        lines = []
        for g in self.groups:
            t0 = self.tasks[g.tasks[0]]
            fronts = " + ".join(dict.fromkeys(self._front(i) for i in g.tasks))
            lines.append(f"{fronts}, unit LM {t0.lm_fingerprint[:16]} "
                         f"({'FT-LM, its own' if t0.trained.method == 'ftlm' else 'frozen'}): "
                         + ", ".join(f"{self.tasks[i].trained.task}={self.tasks[i].name}" for i in g.tasks))
        for i in self.alone:
            t, d = self.tasks[i], self.tasks[i].trained.decoding
            lines.append(f"{t.trained.task}={t.name}: decoded alone as its evaluation was (beam {d.beam_size}, "
                         f"{d.precision})")
        return lines

    @torch.no_grad()
    def predict(self, names: Sequence[str], inputs: Sequence) -> List[Prediction]:
        """Predictions for every (file, run): file-major, runs in the order given. ``inputs``: waveforms
        (np.float32, 16 kHz), or unit-symbol sequences with ``unit_input``."""
        if self.unit_input:
            units = {i: [list(u) for u in inputs] for i in range(len(self.tasks))}
        else:
            feats = {key: [f(w) for w in inputs] for key, f in self.featurizers.items()}
            made: Dict[Tuple[str, str], List[List[str]]] = {}
            units = {}
            for i, t in enumerate(self.tasks):
                k = (self.up[i], self.km[i])
                if k not in made:
                    made[k] = [to_units(t.quantizer, x) for x in feats[self.up[i]]]
                units[i] = made[k]
        sources = {i: [t.dictionary.encode(u) for u in units[i]] for i, t in enumerate(self.tasks)}
        found: Dict[Tuple[int, int], Prediction] = {}

        def add(ti, fi, gen, score, fin):
            t = self.tasks[ti]
            labels = t.label(gen)
            found[(fi, ti)] = Prediction(
                file=names[fi], checkpoint=t.name, task=t.trained.task, method=t.trained.method,
                prediction=t.task.label_string(labels), labels=list(labels), score=float(score),
                finished=bool(fin), units=len(sources[ti][fi]))

        for ti in self.alone:
            t, dec = self.tasks[ti], self.tasks[ti].trained.decoding
            d = decode(t.model.logits_fn(), sources[ti], t.budget, beam_size=dec.beam_size, precision=dec.precision)
            for fi, (gen, score, fin) in enumerate(zip(d.tokens, d.scores, d.finished)):
                add(ti, fi, gen, score, fin)
        for g in self.groups:
            rows = [(k, fi) for k in range(len(g.tasks)) for fi in range(len(names))]
            ids = torch.tensor([k for k, _ in rows], dtype=torch.long)
            d = decode(g.bank.logits_fn(ids), [sources[g.tasks[k]][fi] for k, fi in rows],
                       [self.tasks[g.tasks[k]].budget for k, _ in rows])
            for (k, fi), gen, score, fin in zip(rows, d.tokens, d.scores, d.finished):
                add(g.tasks[k], fi, gen, score, fin)
        return [found[k] for k in sorted(found)]


def read_file_list(path) -> List[str]:
    """Paths, one per line, of a ``--list`` file (blank lines and ``#`` comments ignored); relative paths
    are taken relative to the list file."""
    base = Path(path).parent
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(str(p if p.is_absolute() else base / p))
    return out


def check_files(files: Sequence[str], policy: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(usable files, [(file, reason)] unusable) after the pre-run audio check (tasks/audio.py);
    ``policy='error'`` raises one error naming every unusable file."""
    from s3prl_speechprompt.tasks.audio import audio_file_problem

    if policy not in ("error", "skip"):
        raise ConfigError(f"--bad-audio must be 'error' or 'skip', got {policy!r}")
    good, bad = [], []
    for f in files:
        reason = audio_file_problem(f)
        (good.append(f) if reason is None else bad.append((f, reason)))
    if bad and policy == "error":
        listing = "\n".join(f"  {f}: {r}" for f, r in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise InputFileError(f"{len(bad)} of {len(files)} audio files are unusable:\n{listing}{more}\nfix or remove them, "
                         f"or pass --bad-audio skip to predict the others (the skipped files are listed on stderr)")
    return good, bad

