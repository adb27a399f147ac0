"""Run directories into table rows: one reader, of ``run.json`` (:mod:`s3prl_speechprompt.record`) and the
predictions files it names (which field feeds which column: docs/report.md, "Columns"). The test numbers are
``RunRecord.test_evaluation()``'s. Run directories from before run.json raise
:class:`~s3prl_speechprompt.record.OldRunError`, naming ``speechprompt upgrade-run`` (:mod:`.upgrade`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from s3prl_speechprompt.record import FILE, OldRunError, RunRecord, old_files, old_run_message
from s3prl_speechprompt.report.rows import METHOD_LABELS, TASK_METRICS, Row


def find_split(splits: Iterable[str], prefix: str) -> Optional[str]:
    splits = list(dict.fromkeys(splits))
    if prefix in splits:
        return prefix
    return next((s for s in splits if s.startswith(prefix)), None)


def _fmt_steps(n: int) -> str:
    return f"step {n:,}"


def collect_run(expdir) -> Row:
    """One :class:`Row` for a run directory (its run.json); missing pieces are marked in ``notes``."""
    expdir = Path(expdir)
    row = Row("run", task="?", method="?", expdir=str(expdir))
    if not expdir.is_dir():
        row.notes.append("directory not found")
        return row
    if not (expdir / FILE).is_file() and not old_files(expdir):
        row.test_from = "missing"
        row.notes.append("no run.json (the run stopped before its expert started)")
        return row
    return row_from_record(RunRecord.load(expdir), expdir)


def row_from_record(rec: RunRecord, expdir: Path) -> Row:
    row = Row("run", task=rec.task, method=METHOD_LABELS.get(rec.method, rec.method), expdir=str(expdir))
    row.upstream = _upstream_text(rec)
    row.seed, row.config_key = rec.seed, rec.config_key
    row.trainable_params, row.bytes_per_task = rec.trainable_params, rec.bytes_per_task
    if rec.featurizer_params:
        row.params_text = f"+{rec.featurizer_params} featurizer"
    row.steps, row.total_steps = rec.steps_done, rec.total_steps
    row.wall_s, row.train_loop_s = rec.wall_s, rec.train_loop_s
    row.notes += rec.notes
    _pick_test_metrics(row, rec, expdir)
    return row


def _upstream_text(rec: RunRecord) -> str:
    units = rec.units or {}
    if rec.front_end == "engine":
        data = "/".join(Path(str(units.get("file") or "?")).parts[-3:])      # e.g. speechprompt-hubert100/ks/train.txt
        if rec.method == "blstm":
            return f"units of {data} (from scratch)"
        return (f"units of {data}, uLM {Path(str(units.get('lm'))).name} ({units.get('lm_arch')}, "
                f"d={units.get('lm_width')} x{units.get('lm_layers')})")
    up = rec.upstream or {}
    text = str(up.get("name") or "?") + (f" L{up['layer']}" if up.get("layer") is not None else "")
    feat = rec.featurizer_params
    if rec.units is None:
        return text + (f" (continuous, weighted sum of {feat} layers)" if feat else " (continuous)")
    km = units.get("km")
    inventory = f"{units['k']} units" if units.get("k") else "units"
    inventory += f" (k-means {'from ' + str(km) if km else 'fit on train'})"
    if units.get("lm"):
        inventory += f", uLM {Path(str(units['lm'])).name}"
    return text + (f" (weighted sum of {feat} layers)" if feat else "") + f" -> {inventory}"


def _pick_test_metrics(row: Row, rec: RunRecord, expdir: Path) -> None:
    splits = [e.split for e in rec.evaluations]
    test_split = find_split(splits, "test")
    engine = rec.front_end == "engine"
    if test_split is None:
        row.test_from = "missing"
        if engine:
            row.notes.append(f"no test result (test_scores.json; run `speechprompt evaluate --exp {expdir} "
                             f"--split test UNITS`)")
        else:
            row.notes.append("no test result" + ("" if rec.evaluations else " (no evaluation logged)"))
        return
    if not engine and find_split(splits, "dev") is None:
        row.notes.append("no dev result")
    chosen, why = rec.test_evaluation(test_split)
    if chosen is None:
        row.test_from = "missing"
        row.notes.append("no test result")
        return
    if engine:
        source = f"speechprompt evaluate ({test_split}, best dev-loss state)"
    elif why == "evaluate":
        source = "-m evaluate"
        if chosen.checkpoint:
            source += f" -e {Path(chosen.checkpoint).name}" + (f" ({_fmt_steps(chosen.step)})" if chosen.step else "")
    elif why == "best":
        source = f"best dev ({_fmt_steps(chosen.step)})"
    else:
        source = f"last ({_fmt_steps(chosen.step)})"
        row.notes.append("test not evaluated at the best dev step")
    specs = TASK_METRICS.get(row.task)
    names = [m for m, _, _ in specs] if specs else [m for m in chosen.metrics if m != "unfinished"]
    scale = 1.0 if scores_in_percent(row.task) else 100.0
    for name in names:
        if name in chosen.metrics:
            row.metrics[name] = scale * chosen.metrics[name]
        elif not engine:
            row.notes.append(f"{name} not logged")
    if test_split != "test" and not engine:
        source += f" on {test_split}"
    row.test_from = source
    row.n_test = chosen.n
    path = expdir / chosen.predictions if chosen.predictions else None
    row.predictions = str(path) if path is not None and path.is_file() else ""


def scores_in_percent(task: str) -> bool:
    """Whether the task logs its metrics in percent already (ASR, as SUPERB) rather than as fractions."""
    from s3prl_speechprompt.tasks.base import get_task
    try:
        return bool(get_task(task).scores_in_percent)
    except Exception:
        return False


def is_run_dir(path: Path) -> bool:
    """A run directory: it has a run.json, the files of a run from before run.json, or s3prl's arguments (a
    runner run that stopped before its expert was built)."""
    return (Path(path) / FILE).is_file() or bool(old_files(path)) or any(Path(path).glob("args_*.yaml"))


def expand_dirs(paths: Sequence) -> List[Path]:
    """Run dirs among ``paths``: a dir that is not one but holds run dirs expands to them."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and not is_run_dir(p):
            subs = sorted(d for d in p.iterdir() if d.is_dir() and is_run_dir(d))
            if subs:
                out += subs
                continue
        out.append(p)
    return out


def check_converted(dirs: Sequence[Path]) -> None:
    """One error naming every run directory from before run.json among ``dirs`` and the converter."""
    old = [d for d in dirs if d.is_dir() and not (d / FILE).is_file() and old_files(d)]
    if old:
        raise OldRunError(old_run_message(old))
