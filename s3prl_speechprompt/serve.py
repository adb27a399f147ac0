"""Serving trained prompts: many s3prl runner checkpoints, one upstream and one frozen LM, audio in, predictions out.

``speechprompt predict`` (commands/predict.py) is the front end; this module holds the logic:

1. :func:`load_task_checkpoint` reads a runner checkpoint (``dev-best.ckpt``, ``states-*.ckpt``) without
   running code from it (``torch.load(weights_only=True)``; s3prl's ``argparse.Namespace`` is allowed by
   ``compat.apply``) and rebuilds the task's :class:`PromptedULM` from what the runner stored: ``Args``
   (upstream, ``-k/-g/-s/-l``), ``Config.downstream_expert`` (task, ``ulm`` path, prompt settings,
   decoding budget), the ``Featurizer`` entry (trained layer weights) and the expert's state (prompts,
   separator, verbalizer head; k-means centroids, verbalizer and the LM fingerprint in ``_extra_state``).
   The frozen LM is found where training found it (``downstream_expert.ulm``, or ``ulm=`` to point at
   a copy) and must have the fingerprint the prompts were trained on. PT checkpoints with the same LM
   path share one loaded LM; an FT-LM checkpoint carries its whole LM and so is served alone.
2. :class:`Predictor` groups the checkpoints by (upstream, layer, featurizer weights) and by LM
   fingerprint: each upstream is built once, each file's features computed once per upstream, its units
   once per k-means, and every LM group decodes all its tasks for a batch of files in one mixed-task
   :class:`~s3prl_speechprompt.prompt.bank.PromptBank` pass. Checkpoints on different LMs or upstreams
   are not refused: they form separate groups (each loaded once), listed by :meth:`Predictor.describe`.
   A checkpoint whose config decodes otherwise than the bank (``beam_size > 1``, or ``precision`` bf16 /
   fp16) is decoded by its own model with :func:`~s3prl_speechprompt.prompt.decode.decode`, exactly as
   its ``-m evaluate`` decoded; its score is the searched hypothesis's own log-probability.

A prediction's ``score`` is the natural-log probability of the generated label sequence (its units
through the task's verbalizer head, including the closing ``</s>``) given the utterance's units: for
a one-unit classification label, the log of the class probability. ``finished`` is False when decoding
hit the task's budget without ``</s>``.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from s3prl_speechprompt.errors import CheckpointError
from s3prl_speechprompt.lm_ref import fingerprint_matches, weights_fingerprint
from s3prl_speechprompt.prompt.bank import PromptBank
from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
from s3prl_speechprompt.prompt.verbalizer import Verbalizer
from s3prl_speechprompt.tasks.base import Task, get_task
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.ulm.model import UnitLM
from s3prl_speechprompt.units.prepare import to_units
from s3prl_speechprompt.units.quantizer import KMeansQuantizer

log = logging.getLogger(__name__)

# the Args fields that decide the features a checkpoint was trained on
UPSTREAM_ARGS = ("upstream", "upstream_ckpt", "upstream_model_config", "upstream_feature_selection",
                 "upstream_layer_selection", "upstream_feature_normalize")


class CheckpointMismatch(CheckpointError):
    """A checkpoint cannot be served as asked (its LM differs from the one found, or it is not a prompt run)."""


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


@dataclass
class TaskCheckpoint:
    """One trained task, ready to serve."""

    path: Path
    task_name: str
    method: str                      # pt | ftlm
    task: Task
    model: PromptedULM
    dictionary: Dictionary
    quantizer: KMeansQuantizer
    verbalizer: Verbalizer
    budget: int                      # decoding budget (new tokens), as the expert computes it
    upstream: Dict[str, object]      # UPSTREAM_ARGS values
    featurizer_state: Optional[dict]
    lm_fingerprint: str
    beam_size: int = 1               # Config.downstream_expert.beam_size / .precision: how -m evaluate decoded
    precision: str = "fp32"

    @property
    def decodes_alone(self) -> bool:
        """The bank decodes greedily in fp32; a beam-search or bf16/fp16 checkpoint decodes with its own model."""
        return self.beam_size > 1 or self.precision != "fp32"

    @property
    def upstream_key(self) -> str:
        fs = "" if not self.featurizer_state else _digest(*self.featurizer_state.values())
        return repr(tuple(self.upstream.get(k) for k in UPSTREAM_ARGS)) + fs

    @property
    def km_key(self) -> str:
        return _digest(self.quantizer.centroids)

    def label(self, generated: Sequence[int]) -> Tuple[Optional[str], ...]:
        return tuple(self.verbalizer.decode(self.dictionary.decode(list(generated))))


def read_runner_checkpoint(path) -> dict:
    """A runner checkpoint's dict, read with ``weights_only=True`` (no code from the file runs)."""
    from s3prl_speechprompt import compat

    compat.apply()                                   # allows s3prl's argparse.Namespace under weights_only
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (give an s3prl runner checkpoint, e.g. "
                                f"result/downstream/<expname>/dev-best.ckpt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's weights-only refusal ends its text with advice to load the file unsafely; keep only the reason
        reason = str(e).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        raise ValueError(f"{path}: cannot read it as an s3prl runner checkpoint ({type(e).__name__}: {reason}); "
                         f"only tensors and plain containers are read, never code from the file") from e
    missing = [k for k in ("Args", "Config", "Downstream") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not an s3prl runner checkpoint (missing {missing}; has {sorted(ckpt)[:8]})")
    return ckpt


class LMCache:
    """Frozen LMs loaded once per resolved path (PT checkpoints share them)."""

    def __init__(self):
        self._lms: Dict[str, Tuple[UnitLM, Dictionary]] = {}
        self._fingerprints: Dict[Tuple[str, str], str] = {}

    @staticmethod
    def _key(ulm: str) -> str:
        from s3prl_speechprompt.ulm.pretrained import resolve_ulm
        return str(Path(resolve_ulm(ulm)).resolve())

    def get(self, ulm: str) -> Tuple[UnitLM, Dictionary]:
        from s3prl_speechprompt.ulm.checkpoint import load_ulm

        key = self._key(ulm)
        if key not in self._lms:
            lm, dictionary, _ = load_ulm(key)
            self._lms[key] = (lm, dictionary)
        return self._lms[key]

    def fingerprint(self, ulm: str) -> str:
        """``UnitLM.fingerprint`` of the loaded LM, hashed once per (LM, dropout setting)."""
        lm, _ = self.get(ulm)
        k = (self._key(ulm), repr(lm.cfg.to_dict()))
        if k not in self._fingerprints:
            self._fingerprints[k] = weights_fingerprint(lm.state_dict())
        return self._fingerprints[k]


def load_task_checkpoint(path, lms: Optional[LMCache] = None, ulm: Optional[str] = None,
                         device: str = "cpu") -> TaskCheckpoint:
    """Rebuild a prompt expert's model (PT or FT-LM) from its runner checkpoint; see the module docstring.
    ``ulm`` replaces the checkpoint's ``downstream_expert.ulm`` (the fingerprint is still checked)."""
    from s3prl_speechprompt.s3prl_plugin.prompt_expert import ExpertConfig

    path = Path(path)
    ckpt = read_runner_checkpoint(path)
    state = dict(ckpt["Downstream"])
    extra = state.pop("_extra_state", None)
    if not isinstance(extra, dict) or "centroids" not in extra:
        kind = extra.get("kind") if isinstance(extra, dict) else None
        what = f"a SUPERB {kind} baseline" if kind else f"not a speechprompt prompt run (-d {ckpt['Args'].downstream})"
        raise CheckpointMismatch(f"{path}: {what}; predict serves PT / FT-LM checkpoints (-d speechprompt_<task> "
                                 f"or _ftlm). Baselines: speechprompt-run-downstream -m inference -t FILE -e {path}")
    cfg = ExpertConfig.from_dict(dict(ckpt["Config"]["downstream_expert"]))
    datarc = {k: v for k, v in cfg.datarc.items() if k not in ("batch_size", "eval_batch_size", "num_workers")}
    task = get_task(cfg.task)(**datarc)              # readers are lazy: the corpus need not exist here
    lms = lms or LMCache()
    ulm_path = ulm or cfg.ulm
    if cfg.method == "pt":
        lm, dictionary = lms.get(ulm_path)
    else:                                            # FT-LM: the checkpoint holds the whole LM; load a fresh copy
        from s3prl_speechprompt.ulm.checkpoint import load_ulm
        from s3prl_speechprompt.ulm.pretrained import resolve_ulm
        lm, dictionary, _ = load_ulm(resolve_ulm(ulm_path))
    verbalizer = Verbalizer.from_dict(extra["verbalizer"])
    prompt = dict(cfg.prompt)
    prompt.setdefault("prompt_length", task.default_prompt_length)
    if verbalizer.method == "learnable":
        prompt.setdefault("learnable_classes", len(verbalizer.codes))
    model = PromptedULM(lm, PromptConfig(method=cfg.method, **prompt))
    if cfg.method == "pt":
        # the expert fingerprints the LM after PromptedULM set its dropout (part of the config it hashes)
        fingerprint = lms.fingerprint(ulm_path)
        if not fingerprint_matches(lm, fingerprint, extra.get("lm_fingerprint")):
            raise CheckpointMismatch(
                f"{path}: its prompts were trained on the unit LM with fingerprint {extra.get('lm_fingerprint')}, but "
                f"{ulm_path} ({'--ulm' if ulm else 'downstream_expert.ulm'}) has fingerprint {fingerprint}; point "
                f"--ulm at the LM this run was trained with")
    own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    # what training changed must all be there; the frozen LM (PT) and the tied output projection (FT-LM: it is the
    # embedding, stored once) are not stored
    missing = sorted(set(model.trainable_parameters()) & set(missing))
    if missing or unexpected:
        raise CheckpointMismatch(f"{path}: its model state does not fit the model its config builds "
                                 f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(device).eval()
    budget = cfg.decoding_budget(verbalizer, task)
    args = vars(ckpt["Args"])
    return TaskCheckpoint(
        path=path, task_name=cfg.task, method=cfg.method, task=task, model=model, dictionary=dictionary,
        quantizer=KMeansQuantizer(extra["centroids"]).to(device), verbalizer=verbalizer, budget=budget,
        upstream={k: args.get(k) for k in UPSTREAM_ARGS}, featurizer_state=ckpt.get("Featurizer") or None,
        lm_fingerprint=weights_fingerprint(model.lm.state_dict()) if cfg.method == "ftlm" else extra["lm_fingerprint"],
        beam_size=cfg.beam_size, precision=cfg.precision)


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
    tasks: List[TaskCheckpoint]
    upstream_key: str


class Predictor:
    """Serve ``tasks`` (loaded with :func:`load_task_checkpoint`): :meth:`predict` a batch of waveforms."""

    def __init__(self, tasks: Sequence[TaskCheckpoint], device: str = "cpu",
                 featurizer_factory: Optional[Callable[[dict, Optional[dict]], Callable]] = None):
        if not tasks:
            raise ValueError("nothing to serve: give at least one checkpoint")
        self.tasks = list(tasks)
        self.device = device
        if featurizer_factory is None:
            from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer
            featurizer_factory = runner_featurizer
        self.featurizers: Dict[str, Callable] = {}
        for t in self.tasks:
            if t.upstream_key not in self.featurizers:
                self.featurizers[t.upstream_key] = featurizer_factory({**t.upstream, "device": device},
                                                                      t.featurizer_state)
        groups: Dict[Tuple[str, str], List[TaskCheckpoint]] = OrderedDict()
        for t in self.tasks:
            if not t.decodes_alone:
                groups.setdefault((t.upstream_key, t.lm_fingerprint), []).append(t)
        self.alone = [t for t in self.tasks if t.decodes_alone]
        self.groups = []
        for (up, _), members in groups.items():
            bank = PromptBank.from_models([(str(i), t.model) for i, t in enumerate(members)]).to(device).eval()
            self.groups.append(_LMGroup(bank, members, up))

    def describe(self) -> List[str]:
        """One line per (upstream, LM) group: what is loaded once and which checkpoints it serves."""
        lines = []
        for g in self.groups:
            t0 = g.tasks[0]
            up = t0.upstream
            lines.append(f"upstream {up['upstream']} layer {up['upstream_layer_selection']}, unit LM "
                         f"{t0.lm_fingerprint} ({'FT-LM, its own' if t0.method == 'ftlm' else 'frozen'}): "
                         + ", ".join(f"{t.task_name}={t.path}" for t in g.tasks))
        for t in self.alone:
            lines.append(f"{t.task_name}={t.path}: decoded alone as its evaluation was (beam {t.beam_size}, "
                         f"{t.precision})")
        return lines

    @torch.no_grad()
    def predict(self, names: Sequence[str], wavs: Sequence[np.ndarray]) -> List[Prediction]:
        """Predictions for every (file, checkpoint): file-major, checkpoints in the order given."""
        feats: Dict[str, List[torch.Tensor]] = {
            key: [f(w) for w in wavs] for key, f in self.featurizers.items()}
        units: Dict[Tuple[str, str], List[List[str]]] = {}
        for t in self.tasks:
            k = (t.upstream_key, t.km_key)
            if k not in units:
                units[k] = [to_units(t.quantizer, x) for x in feats[t.upstream_key]]
        found: Dict[Tuple[int, int], Prediction] = {}
        order = {id(t): i for i, t in enumerate(self.tasks)}

        def add(t, fi, gen, score, fin, src):
            labels = t.label(gen)
            found[(fi, order[id(t)])] = Prediction(
                file=names[fi], checkpoint=str(t.path), task=t.task_name, method=t.method,
                prediction=t.task.label_string(labels), labels=list(labels), score=float(score),
                finished=bool(fin), units=len(src))

        for t in self.alone:
            sources = [t.dictionary.encode(u) for u in units[(t.upstream_key, t.km_key)]]
            d = decode(t.model.logits_fn(), sources, t.budget, beam_size=t.beam_size, precision=t.precision)
            for fi, (gen, score, fin, src) in enumerate(zip(d.tokens, d.scores, d.finished, sources)):
                add(t, fi, gen, score, fin, src)
        for g in self.groups:
            rows = [(ti, fi) for ti in range(len(g.tasks)) for fi in range(len(wavs))]
            sources = [g.tasks[ti].dictionary.encode(units[(g.upstream_key, g.tasks[ti].km_key)][fi])
                       for ti, fi in rows]
            ids = torch.tensor([ti for ti, _ in rows], dtype=torch.long)
            d = decode(g.bank.logits_fn(ids), sources, [g.tasks[ti].budget for ti, _ in rows])
            for (ti, fi), gen, score, fin, src in zip(rows, d.tokens, d.scores, d.finished, sources):
                add(g.tasks[ti], fi, gen, score, fin, src)
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
        raise ValueError(f"--bad-audio must be 'error' or 'skip', got {policy!r}")
    good, bad = [], []
    for f in files:
        reason = audio_file_problem(f)
        (good.append(f) if reason is None else bad.append((f, reason)))
    if bad and policy == "error":
        listing = "\n".join(f"  {f}: {r}" for f, r in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"{len(bad)} of {len(files)} audio files are unusable:\n{listing}{more}\nfix or remove them, "
                         f"or pass --bad-audio skip to predict the others (the skipped files are listed on stderr)")
    return good, bad


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
