"""``speechprompt upgrade-run``: run.json for run directories written before it (the only reader of the old files).

s3prl runner directories (``args_*.yaml``): task / method from ``speechprompt_info.json``, else the newest
``config_*.yaml`` and the ``-d`` name; upstream / layer / seed from the training ``args_*.yaml``; units from
``speechprompt_info.json`` (``k``, ``ulm``) + config ``km``; evaluations from ``log.log``'s ``step N: <split>
<metric>: <value>; ...`` lines (tensorboard ``*/<split>-<metric>`` without ``log.log``), ``-m evaluate`` ones (step
0) matched in order to the ``mode: evaluate`` ``args_*.yaml`` for checkpoint and step; the best step from
``dev-best.ckpt`` (else the first best dev result); featurizer weights from the checkpoints; steps: the largest of
``states-<N>.ckpt``, event and log steps; wall time per session from the command start (``args_<time>.yaml``,
local time) to its last tensorboard event (training loop: first to last event). ``speechprompt train``
directories (``config.json``): the engine's record (config.json + ``checkpoint_last.pt``) plus one evaluation per
``<split>_scores.json`` (recomputed from ``<split>_predict.txt`` / ``_truth.txt`` for runs before ``.jsonl``).
"""
from __future__ import annotations

import json
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from s3prl_speechprompt.errors import CheckpointError, MissingFileError
from s3prl_speechprompt.predictions import predictions_name
from s3prl_speechprompt.record import (ENGINE_FORMAT, FILE, Evaluation, RunRecord, engine_progress, engine_record,
                                       engine_predictions, engine_scores, runner_checkpoint_facts, runner_config_key)
from s3prl_speechprompt.report.runs import find_split, scores_in_percent
from s3prl_speechprompt.report.rows import TASK_METRICS

_LOG_LINE = re.compile(r"^step (\d+): (.*)$")
_TIME_TAG = re.compile(r"^(args|config)_(\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)\.yaml$")


def upgrade_run(run_dir, overwrite: bool = False) -> Tuple[RunRecord, bool]:
    """Write ``run_dir/run.json`` from its old files; returns (the record, whether it was written). An existing
    run.json is kept unless ``overwrite``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: no such run directory")
    if (run_dir / FILE).is_file() and not overwrite:
        return RunRecord.load(run_dir), False
    if _is_engine_dir(run_dir):
        rec = convert_engine_dir(run_dir)
    elif any(run_dir.glob("args_*.yaml")):
        rec = convert_runner_dir(run_dir)
    else:
        raise CheckpointError(f"{run_dir}: neither an s3prl runner directory (args_*.yaml) nor a `speechprompt "
                              f"train` directory (config.json); nothing to convert")
    rec.save(run_dir)
    return rec, True


def _is_engine_dir(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("format") == ENGINE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------------------ old runner files
def _load_yaml(path: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load(path.read_text()) or {}
    except Exception:
        return {}


def _tag_time(name: str) -> Optional[float]:
    m = _TIME_TAG.match(name)
    if not m:
        return None
    return datetime.strptime(m.group(2), "%Y-%m-%d-%H-%M-%S").timestamp()   # s3prl writes local time


def parse_log(path: Path) -> List[Tuple[int, str, Dict[str, float]]]:
    """``log.log`` -> ``[(step, split, {metric: value})]`` in file order (one entry per split per line)."""
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line.strip())
        if not m:
            continue
        step = int(m.group(1))
        found: Dict[str, Dict[str, float]] = {}
        for part in m.group(2).split(";"):
            key, sep, value = part.strip().rpartition(": ")
            if not sep or " " not in key:
                continue                                   # e.g. "loss: 2.4" (no split)
            split, metric = key.split(" ", 1)
            try:
                found.setdefault(split, {})[metric] = float(value)
            except ValueError:
                continue
        out += [(step, split, metrics) for split, metrics in found.items()]
    return out


def read_events(path: Path):
    """Yield ``(wall_time, step, {tag: value})`` from a tensorboard event file (tolerates a truncated tail)."""
    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12
        if pos + n + 4 > len(data):
            break
        event = Event()
        try:
            event.ParseFromString(data[pos:pos + n])
        except Exception:
            break
        pos += n + 4
        yield event.wall_time, event.step, {v.tag: v.simple_value for v in event.summary.value}


def convert_runner_dir(expdir: Path) -> RunRecord:
    """The record of an s3prl runner directory written before run.json (see the module docstring)."""
    notes = []
    args_files = sorted((p for p in expdir.glob("args_*.yaml") if _TIME_TAG.match(p.name)), key=lambda p: p.name)
    args = [(p, _load_yaml(p)) for p in args_files]
    train_args = [(p, a) for p, a in args if a.get("mode") == "train"]
    eval_args = [(p, a) for p, a in args if a.get("mode") == "evaluate"]
    main_args = (train_args or args or [(None, {})])[-1][1]
    configs = sorted(expdir.glob("config_*.yaml"), key=lambda p: p.name)
    config = _load_yaml(configs[-1]) if configs else {}
    de = config.get("downstream_expert") or {}
    info_path = expdir / "speechprompt_info.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            notes.append("speechprompt_info.json unreadable")
    else:
        notes.append("no speechprompt_info.json (run stopped before its first log)")

    downstream = str(main_args.get("downstream") or "")
    task = info.get("task") or de.get("task") or re.sub(r"^speechprompt_|_(linear|lstm|ftlm)$", "", downstream) or "?"
    method = info.get("method") or de.get("method") or de.get("head")
    if not method:
        m = re.search(r"_(linear|lstm|ftlm)$", downstream)
        method = m.group(1) if m else ("pt" if downstream.startswith("speechprompt_") else "?")
    rec = RunRecord(front_end="runner", task=task, method=method, notes=notes)
    rec.upstream = {"name": main_args.get("upstream") or info.get("upstream"),
                    "layer": main_args.get("upstream_layer_selection"), "ckpt": main_args.get("upstream_ckpt")}
    if method in ("pt", "ftlm"):
        rec.units = {"k": info.get("k"), "lm": info.get("ulm") or de.get("ulm"), "km": de.get("km"), "file": None,
                     "lm_arch": None, "lm_width": None, "lm_layers": None}
    rec.total_steps = (config.get("runner") or {}).get("total_steps")
    rec.seed = main_args.get("seed", info.get("seed"))
    rec.config = json.loads(json.dumps({"args": main_args, **config}, default=str))
    rec.config_key = runner_config_key(main_args, config)
    rec.trainable_params = info.get("trainable_params")
    rec.stored_params = info.get("stored_params", info.get("trainable_params"))
    rec.bytes_per_task = info.get("checkpoint_bytes")

    states = [(int(m.group(1)), p) for p in expdir.glob("states-*.ckpt")
              if (m := re.fullmatch(r"states-(\d+)\.ckpt", p.name))]
    best = expdir / "dev-best.ckpt"
    best_info = runner_checkpoint_facts(best) if best.is_file() else {}
    last_info = runner_checkpoint_facts(max(states)[1]) if states else {}
    rec.featurizer_params = (best_info or last_info).get("featurizer_params") or None
    rec.lm_fingerprint = (best_info or last_info).get("lm_fingerprint")

    events = []
    for path in sorted(expdir.glob("events.out.tfevents.*")):
        try:
            events.append(list(read_events(path)))
        except Exception:
            notes.append(f"{path.name} unreadable")
    steps = [n for n, _ in states] + [s for evs in events for _, s, _ in evs]
    entries = parse_log(expdir / "log.log")
    if not entries:           # fall back to tensorboard scalars "<prefix>/<split>-<metric>"
        for evs in events:
            for _, step, values in evs:
                found: Dict[str, Dict[str, float]] = {}
                for tag, value in values.items():
                    m = re.fullmatch(r"[^/]+/([^-/]+(?:-[a-z]+)?)-([a-z_0-9]+)", tag)
                    if m and m.group(2) not in ("loss",) and m.group(1) != "train":
                        found.setdefault(m.group(1), {})[m.group(2)] = value
                entries += [(step, split, metrics) for split, metrics in found.items()]
    steps += [s for s, _, _ in entries]
    rec.steps_done = max(steps) if steps else None

    rec.evaluations = _runner_evaluations(expdir, entries, eval_args)
    dev_split = find_split([s for _, s, _ in entries], "dev")
    best_step = best_info.get("step")
    specs = TASK_METRICS.get(task)
    if best_step is None and dev_split is not None and specs:
        metric, _, higher = specs[0]
        devs = [(s, m[metric]) for s, sp, m in entries if s > 0 and sp == dev_split and metric in m]
        if devs:
            best_val = max(v for _, v in devs) if higher else min(v for _, v in devs)
            best_step = next(s for s, v in devs if v == best_val)    # first best, as the experts keep it
    if best_step is not None:
        rec.best = {"split": dev_split or "dev", "step": best_step, "metric": specs[0][0] if specs else None}
    _attach_predictions(expdir, rec)

    rec.wall_s, rec.train_loop_s = _wall_time(events, [p for p, _ in train_args])
    if rec.wall_s is None:
        notes.append("no wall time (no tensorboard events)")
    return rec


def _runner_evaluations(expdir: Path, entries, eval_args) -> List[Evaluation]:
    """One evaluation per log entry; step-0 entries are ``-m evaluate`` runs, matched in order per split to the
    ``args_*.yaml`` with ``mode: evaluate`` (when the counts agree) for their checkpoint and its step."""
    out = []
    per_split = {}
    for step, split, _ in entries:
        if step == 0:
            per_split[split] = per_split.get(split, 0) + 1
    seen = {}
    for step, split, metrics in entries:
        if step > 0:
            out.append(Evaluation(split=split, step=step, mode="train", metrics=dict(metrics)))
            continue
        k = seen[split] = seen.get(split, -1) + 1
        ckpts = [a.get("init_ckpt") for _, a in eval_args if a.get("evaluate_split") == split]
        ckpt = ckpts[k] if len(ckpts) == per_split[split] else None
        ckpt_step = None
        if ckpt:
            path = Path(str(ckpt)) if Path(str(ckpt)).is_absolute() else expdir / Path(str(ckpt)).name
            ckpt_step = runner_checkpoint_facts(path).get("step") if path.is_file() else None
        out.append(Evaluation(split=split, step=ckpt_step, mode="evaluate", metrics=dict(metrics),
                              checkpoint=str(ckpt) if ckpt else None))
    return out


def _attach_predictions(expdir: Path, rec: RunRecord) -> None:
    """The predictions file each evaluation left (its step in the file's header), when it is still there."""
    from s3prl_speechprompt.predictions import FORMAT

    def header(path: Path) -> dict:
        try:
            with open(path, encoding="utf-8") as f:
                h = json.loads(f.readline())
        except (OSError, ValueError):
            return {}
        return h if isinstance(h, dict) and h.get("format") == FORMAT else {}

    for ev in rec.evaluations:
        evaluate = ev.mode == "evaluate"
        step = 0 if evaluate else ev.step
        candidates = [] if evaluate else [f"predictions/{ev.split}-step{step}.jsonl"]
        candidates.append(predictions_name(ev.split))
        for rel in candidates:
            h = header(expdir / rel)
            if h and (evaluate and h.get("mode") == "evaluate" or not evaluate and h.get("step") == step):
                rec.forget_predictions(rel)        # a file holds one evaluation: the latest that matches it
                ev.predictions, ev.n = rel, h.get("n")
                break


def _wall_time(events: List[list], train_args: List[Path]) -> Tuple[Optional[float], Optional[float]]:
    """(command start -> last event, first -> last event), summed over training sessions (event files)."""
    starts = sorted(t for t in (_tag_time(p.name) for p in train_args) if t is not None)
    total = loop = 0.0
    found = False
    for evs in events:
        times = [t for t, _, _ in evs if t > 0]
        if not times:
            continue
        first, last = min(times), max(times)
        found = True
        loop += last - first
        # the session's command started at the latest args tag before its first event (second resolution)
        begun = [s for s in starts if s <= first + 1]
        total += last - (begun[-1] if begun else first)
    return (total, loop) if found else (None, None)


# ------------------------------------------------------------------------------------------ old engine files
def convert_engine_dir(exp: Path) -> RunRecord:
    """The record of a ``speechprompt train`` directory written before run.json."""
    notes = []
    try:
        progress = engine_progress(exp)
    except CheckpointError as e:            # listed, not fatal: the rest of the run is still reported
        progress = {}
        notes.append(str(e))
    rec = engine_record(exp, progress)
    rec.notes = notes
    engine_scores(exp, rec)
    if not any(e.split == "test" for e in rec.evaluations) and engine_predictions(exp, "test"):
        _recompute(exp, rec, "test")
    return rec


def _recompute(exp: Path, rec: RunRecord, split: str) -> None:
    """Test metrics of a run evaluated before ``<split>_scores.json``, from its predictions."""
    from s3prl_speechprompt.report import stats
    from s3prl_speechprompt.report.scores import load_scores

    pred = engine_predictions(exp, split)
    try:
        scores = load_scores(str(exp / pred), rec.task)
    except (OSError, ValueError) as e:
        rec.notes.append(f"no {split} result: {e}")
        return
    scale = 100.0 if scores_in_percent(rec.task) else 1.0
    metrics = {m: scale * stats.ratio(num, den) for m, (num, den) in scores.metrics.items()}
    rec.add(Evaluation(split=split, step=(rec.best or {}).get("step"), mode="evaluate", metrics=metrics,
                       n=len(scores.ids), predictions=pred, checkpoint=None))
    rec.notes.append(f"{split} metrics recomputed from {pred} by speechprompt upgrade-run")
