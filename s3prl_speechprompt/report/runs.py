"""Reading finished experiment directories into table rows.

:func:`collect_run` reads one experiment directory written by s3prl's runner with any of our
downstreams (``speechprompt_<task>`` PT / FT-LM, ``speechprompt_<task>_linear|_lstm`` baselines), or
by ``speechprompt train`` + ``speechprompt evaluate`` (:func:`collect_engine_run`). Nothing here
trains or needs the data.

Where each column comes from (all written by the runner or by our experts; nothing is estimated):

========================  =====================================================================
task, method              ``speechprompt_info.json`` (``task``, ``method``), else the newest
                          ``config_*.yaml`` (``downstream_expert``) and the ``-d`` name
upstream / units          training ``args_*.yaml`` (``upstream``, ``upstream_layer_selection``);
                          units: ``speechprompt_info.json`` (``k``, ``ulm``) + config ``km``
test metric(s)            ``log.log`` lines ``step N: <split> <metric>: <value>; ...`` (both experts);
                          s3prl's ``-m evaluate`` runs log at step 0 and are matched, in order, to
                          the ``args_*.yaml`` with ``mode: evaluate`` to name their checkpoint.
                          Preference: the newest ``-m evaluate`` result on the test split, else the
                          test result logged at the best dev step (the step ``dev-best.ckpt`` holds),
                          else the last test result. Fallback when ``log.log`` is absent: the
                          tensorboard scalars ``*/<split>-<metric>``
per-utterance file        ``<split>_predictions.jsonl`` (-m evaluate, step 0) or
                          ``predictions/<split>-step<N>.jsonl`` (the step the test number is from),
                          else ``<split>_predictions.jsonl`` if its header names that step
seed                      training ``args_*.yaml`` ``seed`` (s3prl's ``--seed``)
trainable params, bytes   ``speechprompt_info.json`` (``trainable_params``, ``checkpoint_bytes`` =
                          serialized downstream state: what must be stored per task); featurizer
                          weights (weighted-sum layer weights) from the checkpoint's ``Featurizer``
steps                     largest of: ``states-<N>.ckpt`` names, tensorboard event steps, ``log.log`` steps
wall time                 tensorboard event timestamps (the expdir's event files are written only by
                          training sessions; ``-m evaluate`` logs to a temporary dir): per session from
                          the command start (``args_<time>.yaml`` tag, local time) to its last event
========================  =====================================================================

``speechprompt train`` directories (``config.json`` of format ``s3prl-speechprompt-engine/1``): task,
method, LM, trainable parameters and seed from ``config.json``; test metrics from ``test_scores.json``
(``speechprompt evaluate``), per-utterance predictions from ``test_predictions.jsonl``; steps and
training seconds from ``checkpoint_last.pt``; bytes = ``prompt.pt`` / ``model.pt``.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from s3prl_speechprompt.predictions import predictions_name
from s3prl_speechprompt.report.rows import METHOD_LABELS, TASK_METRICS, Row

_LOG_LINE = re.compile(r"^step (\d+): (.*)$")
_TIME_TAG = re.compile(r"^(args|config)_(\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)\.yaml$")


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


def _ckpt_info(path: Path) -> dict:
    """``Step`` and featurizer parameter count of an s3prl checkpoint (memory-mapped; {} if unreadable)."""
    try:
        from s3prl_speechprompt.ulm.checkpoint import load_container
        ckpt = load_container(path)     # restricted: reading a run's checkpoint never runs code from it
        feat = ckpt.get("Featurizer") or {}
        return {"step": int(ckpt.get("Step", 0)),
                "featurizer_params": int(sum(v.numel() for v in feat.values() if hasattr(v, "numel")))}
    except Exception:
        return {}


def _find_split(splits: Iterable[str], prefix: str) -> Optional[str]:
    splits = list(dict.fromkeys(splits))
    if prefix in splits:
        return prefix
    return next((s for s in splits if s.startswith(prefix)), None)


def _fmt_steps(n: int) -> str:
    return f"step {n:,}"


def collect_run(expdir) -> Row:
    """One :class:`Row` for an s3prl experiment directory; missing pieces are marked in ``notes``."""
    expdir = Path(expdir)
    row = Row("run", task="?", method="?", expdir=str(expdir))
    if not expdir.is_dir():
        row.notes.append("directory not found")
        return row
    if is_engine_dir(expdir) and not any(expdir.glob("args_*.yaml")):
        return collect_engine_run(expdir)

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
            row.notes.append("speechprompt_info.json unreadable")
    else:
        row.notes.append("no speechprompt_info.json (run stopped before its first log)")

    # task / method
    downstream = str(main_args.get("downstream") or "")
    row.task = info.get("task") or de.get("task") or re.sub(r"^speechprompt_|_(linear|lstm|ftlm)$", "", downstream) or "?"
    method = info.get("method") or de.get("method") or de.get("head")
    if not method:
        m = re.search(r"_(linear|lstm|ftlm)$", downstream)
        method = m.group(1) if m else ("pt" if downstream.startswith("speechprompt_") else "?")
    row.method = METHOD_LABELS.get(method, method)

    # upstream / units
    up = str(main_args.get("upstream") or info.get("upstream") or "?")
    layer = main_args.get("upstream_layer_selection")
    up += f" L{layer}" if layer is not None else ""
    if method in ("pt", "ftlm"):
        km = de.get("km")
        units = f"{info['k']} units" if info.get("k") else "units"
        units += f" (k-means {'from ' + str(km) if km else 'fit on train'})"
        ulm = info.get("ulm") or de.get("ulm")
        if ulm:
            units += f", uLM {Path(str(ulm)).name}"
        up += f" -> {units}"
    else:
        up += " (continuous)"
    row.total_steps = (config.get("runner") or {}).get("total_steps")
    row.seed = main_args.get("seed", info.get("seed"))
    row.config_key = settings_key(
        {k: main_args.get(k) for k in ("downstream", "upstream", "upstream_layer_selection",
                                       "upstream_feature_selection", "upstream_trainable")},
        {k: v for k, v in config.items() if k != "downstream_expert"},
        {k: v for k, v in de.items() if k not in _RUN_SPECIFIC})

    # sizes
    row.trainable_params = info.get("trainable_params")
    row.bytes_per_task = info.get("checkpoint_bytes")

    # checkpoints: steps, best step, featurizer weights
    states = [(int(m.group(1)), p) for p in expdir.glob("states-*.ckpt")
              if (m := re.fullmatch(r"states-(\d+)\.ckpt", p.name))]
    best = expdir / "dev-best.ckpt"
    best_info = _ckpt_info(best) if best.is_file() else {}
    last_info = _ckpt_info(max(states)[1]) if states else {}
    feat = (best_info or last_info).get("featurizer_params")
    if feat:
        row.params_text = f"+{feat} featurizer"
        up = up.replace(" ->", f" (weighted sum of {feat} layers) ->", 1) if " ->" in up \
            else up.replace(" (continuous)", f" (continuous, weighted sum of {feat} layers)")
    row.upstream = up

    # tensorboard events (training sessions only)
    events = []
    for path in sorted(expdir.glob("events.out.tfevents.*")):
        try:
            events.append(list(read_events(path)))
        except Exception:
            row.notes.append(f"{path.name} unreadable")
    steps = [n for n, _ in states] + [s for evs in events for _, s, _ in evs]

    # metrics
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
    row.steps = max(steps) if steps else None
    _pick_test_metrics(row, entries, eval_args, expdir, best_info)

    # wall time
    row.wall_s, row.train_loop_s = _wall_time(events, [p for p, _ in train_args])
    if row.wall_s is None:
        row.notes.append("no wall time (no tensorboard events)")
    return row


def _pick_test_metrics(row: Row, entries, eval_args, expdir: Path, best_info: dict) -> None:
    splits = [s for _, s, _ in entries]
    test_split = _find_split(splits, "test")
    dev_split = _find_split(splits, "dev")
    specs = TASK_METRICS.get(row.task)
    if test_split is None:
        row.notes.append("no test result" + ("" if entries else " (no evaluation logged)"))
        row.test_from = "missing"
        return
    if dev_split is None:
        row.notes.append("no dev result")

    # -m evaluate results (step 0) -> their checkpoints, matched in order per split
    evaluated = [(i, e) for i, e in enumerate(entries) if e[0] == 0 and e[1] == test_split]
    eval_ckpts = [a.get("init_ckpt") for _, a in eval_args if a.get("evaluate_split") == test_split]
    chosen, source, chosen_step = None, "", 0
    if evaluated:
        k = len(evaluated) - 1
        chosen = evaluated[-1][1][2]
        ckpt = eval_ckpts[k] if len(eval_ckpts) == len(evaluated) else None
        if ckpt:
            name = Path(str(ckpt)).name
            path = Path(str(ckpt)) if Path(str(ckpt)).is_absolute() else expdir / name
            step = _ckpt_info(path).get("step") if path.is_file() else None
            source = f"-m evaluate -e {name}" + (f" ({_fmt_steps(step)})" if step else "")
        else:
            source = "-m evaluate"
    else:
        training = [e for e in entries if e[0] > 0]
        best_step = best_info.get("step")
        if best_step is None and dev_split is not None and specs:
            metric, _, higher = specs[0]
            devs = [(s, m[metric]) for s, sp, m in training if sp == dev_split and metric in m]
            if devs:
                best_val = max(v for _, v in devs) if higher else min(v for _, v in devs)
                best_step = next(s for s, v in devs if v == best_val)    # first best, as the experts keep it
        at_best = [m for s, sp, m in training if sp == test_split and s == best_step] if best_step else []
        if at_best:
            chosen, source, chosen_step = at_best[-1], f"best dev ({_fmt_steps(best_step)})", best_step
        else:
            last = [(s, m) for s, sp, m in training if sp == test_split]
            if last:
                chosen, source, chosen_step = last[-1][1], f"last ({_fmt_steps(last[-1][0])})", last[-1][0]
                row.notes.append("test not evaluated at the best dev step")
    if chosen is None:
        row.test_from = "missing"
        row.notes.append("no test result")
        return
    names = [m for m, _, _ in specs] if specs else [m for m in chosen if m != "unfinished"]
    scale = 1.0 if _scores_in_percent(row.task) else 100.0
    for name in names:
        if name in chosen:
            row.metrics[name] = scale * chosen[name]
        else:
            row.notes.append(f"{name} not logged")
    if test_split != "test":
        source += f" on {test_split}"
    row.test_from = source
    row.predictions = _runner_predictions(expdir, test_split, chosen_step, evaluate=bool(evaluated))


def _runner_predictions(expdir: Path, split: str, step: int, evaluate: bool) -> str:
    """The predictions file of the evaluation the test number came from ("" if it was not kept)."""
    from s3prl_speechprompt.predictions import FORMAT

    candidates = [] if evaluate else [expdir / "predictions" / f"{split}-step{step}.jsonl"]
    candidates.append(expdir / predictions_name(split))
    for path in candidates:
        if not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8") as f:
                header = json.loads(f.readline())
        except (OSError, ValueError):
            continue
        if header.get("format") != FORMAT:
            continue
        if evaluate and header.get("mode") == "evaluate" or not evaluate and header.get("step") == step:
            return str(path)
    return ""


def _scores_in_percent(task: str) -> bool:
    """Whether the task logs its metrics in percent already (ASR, as SUPERB) rather than as fractions."""
    from s3prl_speechprompt.tasks.base import get_task
    try:
        return bool(get_task(task).scores_in_percent)
    except Exception:
        return False


# keys of downstream_expert that name where a run keeps its files, not what it does (ignored by seed groups)
_RUN_SPECIFIC = ("cache_dir",)


def settings_key(*parts) -> str:
    """A short hash of the settings that define a run apart from its seed: runs with equal keys (and equal
    task, method, upstream) are repeats of one recipe with different seeds."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


ENGINE_FORMAT = "s3prl-speechprompt-engine/1"


def is_engine_dir(path: Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == ENGINE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def collect_engine_run(expdir, split: str = "test") -> Row:
    """One :class:`Row` for a ``speechprompt train`` directory scored by ``speechprompt evaluate``."""
    expdir = Path(expdir)
    config = json.loads((expdir / "config.json").read_text())
    tc = dict(config.get("train_config") or {})
    method = config.get("method", "?")
    row = Row("run", task=config.get("task", "?"), method=METHOD_LABELS.get(method, method), expdir=str(expdir))
    row.trainable_params = config.get("trainable_params")
    row.seed = tc.get("seed")
    units = "/".join(Path(str(config.get("train", "?"))).parts[-3:])       # e.g. speechprompt-hubert100/ks/train.txt
    if method == "blstm":
        row.upstream = f"units of {units} (from scratch)"
    else:
        row.upstream = (f"units of {units}, uLM {Path(str(config.get('ulm'))).name}"
                        f" ({config.get('ulm_arch')}, d={config.get('ulm_width')} x{config.get('ulm_layers')})")
    tc_key = {k: v for k, v in tc.items() if k not in ("seed", "threads", "max_epochs", "patience")}
    row.config_key = settings_key(method, config.get("task"), Path(str(config.get("ulm"))).name,
                                  config.get("ulm_arch"), units, tc_key)
    weights = expdir / ("model.pt" if method == "blstm" else "prompt.pt")
    row.bytes_per_task = weights.stat().st_size if weights.is_file() else None
    last = expdir / "checkpoint_last.pt"
    if last.is_file():
        try:
            import torch
            prog = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("progress") or {}
            row.steps, row.wall_s = prog.get("updates"), prog.get("seconds")
            row.train_loop_s = row.wall_s
        except Exception as e:                      # noqa: BLE001 - listed, not hidden
            row.notes.append(f"checkpoint_last.pt unreadable ({type(e).__name__})")
    row.total_steps = tc.get("max_updates") or None
    pred = expdir / predictions_name(split)
    legacy = expdir / f"{split}_predict.txt"
    row.predictions = str(pred) if pred.is_file() else (str(legacy) if (expdir / f"{split}_truth.txt").is_file()
                                                        and legacy.is_file() else "")
    scores = expdir / f"{split}_scores.json"
    if not scores.is_file() and row.predictions:
        _metrics_from_predictions(row, split)
    elif scores.is_file():
        result = json.loads(scores.read_text())
        specs = TASK_METRICS.get(row.task)
        names = [m for m, _, _ in specs] if specs else [k for k in ("accuracy",) if k in result]
        scale = 1.0 if _scores_in_percent(row.task) else 100.0
        row.metrics = {m: scale * result[m] for m in names if m in result}
        row.test_from = f"speechprompt evaluate ({split}, best dev-loss state)"
        row.n_test = result.get("n")
    else:
        row.test_from = "missing"
        row.notes.append(f"no {split} result ({scores.name}; run `speechprompt evaluate --exp {expdir} "
                         f"--split {split} UNITS`)")
    return row


def _metrics_from_predictions(row: Row, split: str) -> None:
    """Test metrics recomputed from the predictions (an engine run evaluated before ``<split>_scores.json``)."""
    from s3prl_speechprompt.report.scores import load_scores
    try:
        scores = load_scores(row.predictions, row.task)
    except (OSError, ValueError) as e:
        row.test_from = "missing"
        row.notes.append(f"no {split} result: {e}")
        row.predictions = ""
        return
    specs = TASK_METRICS.get(row.task)
    names = [m for m, _, _ in specs] if specs else list(scores.metrics)
    row.metrics = {m: scores.percent(m) for m in names if m in scores.metrics}
    row.n_test = len(scores.ids)
    row.test_from = f"recomputed from {Path(row.predictions).name} (speechprompt evaluate, {split})"


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


def expand_dirs(paths: Sequence) -> List[Path]:
    """Experiment dirs among ``paths``: a dir that is not one (no ``args_*.yaml``, no engine ``config.json``) but
    holds experiment subdirs expands to them."""
    out = []

    def is_exp(d: Path) -> bool:
        return any(d.glob("args_*.yaml")) or is_engine_dir(d)

    for p in map(Path, paths):
        if p.is_dir() and not is_exp(p):
            subs = sorted(d for d in p.iterdir() if d.is_dir() and is_exp(d))
            if subs:
                out += subs
                continue
        out.append(p)
    return out

