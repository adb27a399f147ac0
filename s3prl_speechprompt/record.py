"""The run record: ``<run dir>/run.json``, one versioned file every front end writes and ``speechprompt report`` reads.

Written (atomically) by the runner experts (:mod:`s3prl_speechprompt.s3prl_plugin.records`: when the expert is
built, at every evaluation and training log, at process end) and by the engine (``speechprompt train`` at its start
and end, ``speechprompt evaluate`` after scoring). Older directories are converted once with ``speechprompt
upgrade-run DIR`` (:mod:`s3prl_speechprompt.report.upgrade`); reading one raises :class:`OldRunError` naming it.
Format ``s3prl-speechprompt-run/1`` (docs/report.md, "The run record", explains the fields)::

    {"format": "s3prl-speechprompt-run/1", "front_end": "runner" | "engine",
     "task": "ks", "method": "pt" | "ftlm" | "linear" | "lstm" | "blstm",
     "upstream": {"name": "hubert", "layer": 6 | null, "ckpt": str | null} | null,     # null: unit-level run
     "units": {"k": 100 | null, "lm": LM dir / name | null, "km": k-means source | null (fitted on train),
               "file": training unit file | null (engine), "lm_arch", "lm_width", "lm_layers"} | null (baselines),
     "lm_fingerprint": sha256 of the LM weights | null (baselines),
     "trainable_params": int, "stored_params": int, "bytes_per_task": int (serialized trainable state per task),
     "featurizer_params": int | null (s3prl's weighted-sum layer weights), "seed": int, "config": {...} (as run),
     "config_key": "12 hex" (the settings but the seed, :func:`settings_key`), "steps_done": int,
     "total_steps": int | null, "wall_s", "cpu_s", "train_loop_s": float | null (summed over training sessions),
     "best": {"split": "dev", "step": int, "metric": "accuracy" | "loss"} | null,
     "evaluations": [{"split": "test", "step": int | null (the training step of the evaluated state),
                      "mode": "train" | "evaluate", "metrics": {"accuracy": 0.61, ...} (fractions; ASR percent),
                      "n": int | null, "predictions": path relative to the run dir | null,
                      "checkpoint": str | null (what -m evaluate / speechprompt evaluate read),
                      "at": ISO time}, ...],                                   # in the order they were made
     "trained_task": "trained_task" | null, "notes": [str, ...]}   # notes: what the writer could not record
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.errors import CheckpointError

FORMAT = "s3prl-speechprompt-run/1"
FILE = "run.json"
ENGINE_FORMAT = "s3prl-speechprompt-engine/1"      # speechprompt train's config.json
# files of a run directory written before run.json (the runner's and speechprompt train's)
OLD_FILES = ("log.log", "speechprompt_info.json", "dev-best.ckpt", "states-*.ckpt", "events.out.tfevents.*",
             "config.json")


class OldRunError(CheckpointError):
    """A run directory from before run.json: it is converted once, by ``speechprompt upgrade-run``."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def settings_key(*parts) -> str:
    """A short hash of the settings that define a run apart from its seed: runs with equal keys (and equal
    task, method, upstream) are repeats of one recipe with different seeds."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def old_files(run_dir) -> List[str]:
    """Names of old-format files in ``run_dir`` (the evidence that it is a run from before run.json)."""
    run_dir = Path(run_dir)
    return [p.name for pattern in OLD_FILES for p in sorted(run_dir.glob(pattern))]


def old_run_message(dirs) -> str:
    shown = " ".join(str(d) for d in dirs)
    return (f"{shown}: run director{'ies' if len(dirs) > 1 else 'y'} from before run.json (no run.json); "
            f"convert once with `speechprompt upgrade-run {shown}`")


@dataclass
class Evaluation:
    split: str
    step: Optional[int]
    mode: str                               # train | evaluate
    metrics: Dict[str, float]
    n: Optional[int] = None
    predictions: Optional[str] = None       # relative to the run dir
    checkpoint: Optional[str] = None
    at: str = ""


KEY_ORDER = ("front_end", "task", "method", "upstream", "units", "lm_fingerprint", "trainable_params", "stored_params",
             "bytes_per_task", "featurizer_params", "seed", "config", "config_key", "steps_done", "total_steps",
             "wall_s", "cpu_s", "train_loop_s", "best", "evaluations", "trained_task", "notes")


@dataclass
class RunRecord:
    front_end: str                          # runner | engine
    task: str
    method: str                             # pt | ftlm | linear | lstm | blstm
    upstream: Optional[dict] = None         # what the run is: the module docstring says each field
    units: Optional[dict] = None
    lm_fingerprint: Optional[str] = None
    config: dict = field(default_factory=dict)
    trainable_params: Optional[int] = None
    stored_params: Optional[int] = None
    bytes_per_task: Optional[int] = None
    config_key: str = ""
    featurizer_params: Optional[int] = None
    seed: Optional[int] = None
    steps_done: Optional[int] = None
    evaluations: List[Evaluation] = field(default_factory=list)
    total_steps: Optional[int] = None
    wall_s: Optional[float] = None
    cpu_s: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    train_loop_s: Optional[float] = None
    best: Optional[dict] = None
    trained_task: Optional[str] = None

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict:
        d = asdict(self)
        return {"format": FORMAT, **{k: d.pop(k) for k in KEY_ORDER}, **d}      # in the documented order

    @classmethod
    def from_dict(cls, d: dict, where="run.json") -> "RunRecord":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CheckpointError(f"{where}: format {got!r}, expected {FORMAT!r}")
        known, ev_known = {f.name for f in fields(cls)}, {f.name for f in fields(Evaluation)}
        try:
            rec = cls(**{k: v for k, v in d.items() if k in known and k != "evaluations"})
            rec.evaluations = [Evaluation(**{k: v for k, v in e.items() if k in ev_known})
                               for e in d.get("evaluations", [])]
        except (TypeError, AttributeError) as e:           # a required field missing, an evaluation not an object
            raise CheckpointError(f"{where}: not a run record ({e})") from None
        return rec

    @classmethod
    def load(cls, run_dir) -> "RunRecord":
        """``run_dir/run.json``; a run directory from before it: :class:`OldRunError` naming the converter."""
        path = Path(run_dir) / FILE
        if not path.is_file():
            if old_files(run_dir):
                raise OldRunError(old_run_message([run_dir]))
            raise CheckpointError(f"{path}: missing; not a run directory (every runner / speechprompt train run "
                                  f"writes one)")
        from s3prl_speechprompt.readers import read_json
        return cls.from_dict(read_json(path, "a run record (run.json)"), str(path))

    def save(self, run_dir) -> None:
        atomic_write_text(Path(run_dir) / FILE, json.dumps(self.to_dict(), indent=1) + "\n")

    # ------------------------------------------------------------------ evaluations
    def add(self, ev: Evaluation) -> None:
        """Append ``ev``. An evaluation of the same state (split, step, mode, checkpoint; a resumed run evaluating
        a step again) is replaced; earlier evaluations whose predictions file ``ev`` overwrote lose it."""
        same = (ev.split, ev.step, ev.mode, ev.checkpoint)
        self.evaluations = [e for e in self.evaluations if (e.split, e.step, e.mode, e.checkpoint) != same]
        if ev.predictions:
            self.forget_predictions(ev.predictions)
        self.evaluations.append(ev)

    def forget_predictions(self, path: str) -> None:
        """Evaluations pointing at ``path`` (overwritten or deleted) no longer have a predictions file."""
        for e in self.evaluations:
            if e.predictions == path:
                e.predictions = None

    def latest(self, split: str) -> Optional[Evaluation]:
        """The newest evaluation on ``split`` (None if it was never evaluated)."""
        return next((e for e in reversed(self.evaluations) if e.split == split), None)

    def test_evaluation(self, split: str = "test") -> Tuple[Optional[Evaluation], str]:
        """The evaluation the report takes the test numbers from, and why: the newest separate evaluation
        (``evaluate``), else the one during training at the best step (``best``), else the last one (``last``)."""
        evs = [e for e in self.evaluations if e.split == split]
        evaluated = [e for e in evs if e.mode == "evaluate"]
        if evaluated:
            return evaluated[-1], "evaluate"
        training = [e for e in evs if e.mode == "train"]
        best = (self.best or {}).get("step")
        at_best = [e for e in training if best and e.step == best]
        if at_best:
            return at_best[-1], "best"
        return (training[-1], "last") if training else (None, "")


def runner_checkpoint_facts(path) -> dict:
    """``step``, ``featurizer_params`` (s3prl's weighted-sum layer weights) and ``lm_fingerprint`` of an s3prl
    runner checkpoint ({} if it cannot be read); restricted reader."""
    from s3prl_speechprompt.ulm.checkpoint import load_container
    try:
        ckpt = load_container(path)
    except Exception:                   # noqa: BLE001 - missing, torn or being replaced: nothing to say
        return {}
    feat = ckpt.get("Featurizer") or {}
    extra = (ckpt.get("Downstream") or {}).get("_extra_state")
    return {"step": int(ckpt.get("Step", 0)),
            "featurizer_params": int(sum(v.numel() for v in feat.values() if hasattr(v, "numel"))),
            "lm_fingerprint": extra.get("lm_fingerprint") if isinstance(extra, dict) else None}


# ------------------------------------------------------------------------------------------ seed-group keys
# keys of downstream_expert that name where a run keeps its files, not what it does (ignored by seed groups)
RUN_SPECIFIC = ("cache_dir",)
# the runner arguments that define a run (with the config)
KEY_ARGS = ("downstream", "upstream", "upstream_layer_selection", "upstream_feature_selection", "upstream_trainable")


def runner_config_key(args: dict, config: dict) -> str:
    """The seed-group key of an s3prl runner run from its arguments and its config (the YAML as run)."""
    de = config.get("downstream_expert") or {}
    return settings_key({k: args.get(k) for k in KEY_ARGS},
                        {k: v for k, v in config.items() if k != "downstream_expert"},
                        {k: v for k, v in de.items() if k not in RUN_SPECIFIC})


# ------------------------------------------------------------------------------------------ engine runs
def engine_config_key(config: dict) -> str:
    """The seed-group key of a ``speechprompt train`` run (its config.json without seed and run-length settings)."""
    tc = dict(config.get("train_config") or {})
    units = "/".join(Path(str(config.get("train", "?"))).parts[-3:])
    tc_key = {k: v for k, v in tc.items() if k not in ("seed", "threads", "max_epochs", "patience")}
    return settings_key(config.get("method", "?"), config.get("task"), Path(str(config.get("ulm"))).name,
                        config.get("ulm_arch"), units, tc_key)


def engine_record(exp, progress: Optional[dict] = None, previous: Optional[RunRecord] = None) -> RunRecord:
    """The record of a ``speechprompt train`` directory from its config.json and ``progress`` (the loop's: updates,
    seconds, cpu_seconds, best_update; default: EXP/checkpoint_last.pt's); ``previous`` keeps its evaluations."""
    exp = Path(exp)
    path = exp / "config.json"
    from s3prl_speechprompt.readers import read_json
    config = read_json(path, "the config.json of a directory written by `speechprompt train`")
    if progress is None:
        progress = engine_progress(exp)
    tc = dict(config.get("train_config") or {})
    method = config.get("method", "?")
    weights = exp / ("model.pt" if method == "blstm" else "prompt.pt")
    units = {"k": None, "lm": config.get("ulm"), "km": None, "file": config.get("train"),
             "lm_arch": config.get("ulm_arch"), "lm_width": config.get("ulm_width"),
             "lm_layers": config.get("ulm_layers")}
    rec = RunRecord(
        front_end="engine", task=config.get("task", "?"), method=method, upstream=None, units=units,
        lm_fingerprint=config.get("ulm_sha256"), trainable_params=config.get("trainable_params"),
        stored_params=config.get("stored_params", config.get("trainable_params")),
        bytes_per_task=weights.stat().st_size if weights.is_file() else None, seed=tc.get("seed"), config=config,
        config_key=engine_config_key(config), total_steps=tc.get("max_updates") or None,
        trained_task="trained_task" if (exp / "trained_task").is_dir() else None)
    if progress:
        rec.steps_done, rec.wall_s = progress.get("updates"), progress.get("seconds")
        rec.cpu_s, rec.train_loop_s = progress.get("cpu_seconds"), progress.get("seconds")
        if progress.get("best_update"):
            rec.best = {"split": "dev", "step": progress["best_update"], "metric": "loss"}
    if previous is not None:
        rec.evaluations, rec.notes = list(previous.evaluations), list(previous.notes)
    return rec


# what an engine <split>_scores.json holds besides the metrics
SCORE_FIELDS = {"trainable_params", "stored_params", "prompt_bytes", "split", "n", "unfinished", "method", "task",
                "seed", "units", "precision"}


def engine_scores(exp, rec: RunRecord, skip: Tuple[str, ...] = ()) -> None:
    """Add to ``rec`` the evaluations of EXP/<split>_scores.json (``speechprompt evaluate``'s summaries, for a run
    evaluated before run.json existed), but those of the ``skip`` splits."""
    exp = Path(exp)
    for path in sorted(exp.glob("*_scores.json")):
        split = path.name[:-len("_scores.json")]
        if split in skip:
            continue
        try:
            result = json.loads(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path}: not JSON ({e})") from None
        metrics = {k: v for k, v in result.items() if k not in SCORE_FIELDS and isinstance(v, (int, float))}
        if "unfinished" in result:
            metrics["unfinished"] = result["unfinished"]
        rec.add(Evaluation(split=split, step=(rec.best or {}).get("step"), mode="evaluate", metrics=metrics,
                           n=result.get("n"), predictions=engine_predictions(exp, split),
                           checkpoint="model.pt" if rec.method == "blstm" else "prompt.pt"))


def engine_predictions(exp, split: str) -> Optional[str]:
    """The predictions file ``speechprompt evaluate`` left for ``split`` (relative; the .jsonl, else the older
    predict/truth pair), None if there is none."""
    exp = Path(exp)
    if (exp / f"{split}_predictions.jsonl").is_file():
        return f"{split}_predictions.jsonl"
    if (exp / f"{split}_predict.txt").is_file() and (exp / f"{split}_truth.txt").is_file():
        return f"{split}_predict.txt"
    return None


def engine_progress(exp, flag: str = "") -> dict:
    """The loop's progress in EXP/checkpoint_last.pt ({} if there is none yet); the checked reader (``flag``: the
    option that made us read it, named in its error)."""
    from s3prl_speechprompt.readers import read_torch
    last = Path(exp) / "checkpoint_last.pt"
    if not last.is_file():
        return {}
    ck = read_torch(last, "a `speechprompt train` checkpoint (checkpoint_last.pt; or use a fresh --out)", flag=flag,
                    mmap=True, is_expected=lambda c: isinstance(c, dict) and isinstance(c.get("progress"), dict))
    return dict(ck["progress"])
