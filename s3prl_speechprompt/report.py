"""Side-by-side comparison of finished s3prl experiment directories and published numbers.

:func:`collect_run` reads one experiment directory written by s3prl's runner with any of our
downstreams (``speechprompt_<task>`` PT / FT-LM, ``speechprompt_<task>_linear|_lstm`` baselines);
:func:`reference_rows` gives the published SpeechPrompt and SUPERB numbers; :func:`render` prints
one table (Markdown, CSV or JSON). Nothing here trains or needs the data.

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
trainable params, bytes   ``speechprompt_info.json`` (``trainable_params``, ``checkpoint_bytes`` =
                          serialized downstream state: what must be stored per task); featurizer
                          weights (weighted-sum layer weights) from the checkpoint's ``Featurizer``
steps                     largest of: ``states-<N>.ckpt`` names, tensorboard event steps, ``log.log`` steps
wall time                 tensorboard event timestamps (the expdir's event files are written only by
                          training sessions; ``-m evaluate`` logs to a temporary dir): per session from
                          the command start (``args_<time>.yaml`` tag, local time) to its last event
========================  =====================================================================
"""
from __future__ import annotations

import csv
import io
import json
import re
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# ------------------------------------------------------------------------------------------------
# task conventions
# ------------------------------------------------------------------------------------------------

# metrics shown per task (SUPERB's names), their display name, and whether higher is better
TASK_METRICS: Dict[str, List[Tuple[str, str, bool]]] = {
    "ks": [("accuracy", "acc", True)],
    "ic": [("accuracy", "acc", True)],
    "asr": [("wer", "WER", False)],
    "sf": [("slot_type_f1", "F1", True), ("slot_value_cer", "CER", False)],
}
METRIC_LABELS = {m: label for specs in TASK_METRICS.values() for m, label, _ in specs}
METHOD_LABELS = {"pt": "PT (SpeechPrompt)", "ftlm": "FT-LM", "linear": "SUPERB linear", "lstm": "SUPERB BLSTM-CTC"}
TASK_LABELS = {"ks": "KS", "ic": "IC", "asr": "ASR", "sf": "SF"}


def superb_head_params(kind: str, dim: int, outputs: int) -> int:
    """Closed-form parameter count of SUPERB's heads (``baseline_expert.build_head`` with SUPERB's modelrc).

    linear: Linear(dim, 256) + Linear(256, outputs); lstm: Linear(dim, 1024) + 2 BLSTM layers of 1024 units per
    direction (input 1024, then 2048) + Linear(2048, outputs).
    """
    if kind == "linear":
        return dim * 256 + 256 + 256 * outputs + outputs
    if kind == "lstm":
        h = 1024

        def lstm_dir(inp):
            return 4 * h * (inp + h) + 2 * 4 * h

        return dim * h + h + 2 * lstm_dir(h) + 2 * lstm_dir(2 * h) + 2 * h * outputs + outputs
    raise ValueError(f"kind: expected 'linear' or 'lstm', got {kind!r}")


# ------------------------------------------------------------------------------------------------
# published numbers
# ------------------------------------------------------------------------------------------------

SPEECHPROMPT_SRC = "paper"       # SpeechPrompt v1, Interspeech 2022 (slides 36-40)
SUPERB_SRC = "SUPERB"           # SUPERB leaderboard "paper" rows (Interspeech 2021, weighted sum)
SOURCES = {
    "run": "this run (the experiment directory given)",
    SPEECHPROMPT_SRC: "published: SpeechPrompt v1 (Interspeech 2022; arXiv 2203.16773), Interspeech slides 36-40",
    SUPERB_SRC: "published: SUPERB leaderboard, Interspeech 2021 paper rows (frozen upstream, weighted sum); "
                "ASR WER on test-clean without LM; head parameters computed for the upstream's feature size",
}

# SpeechPrompt v1: (task, metric value, #param as printed); ASR = WER, SF = slot-type F1
_SPEECHPROMPT = {
    ("HuBERT", "PT"): {"ks": (95.16, "0.08M"), "ic": (98.40, "0.15M"), "asr": (34.17, "4.5M"), "sf": (66.90, "4.5M")},
    ("HuBERT", "FT"): {"ks": (96.30, "0.2M"), "ic": (98.34, "0.2M"), "asr": (6.42, "43M"), "sf": (88.53, "43M")},
    ("CPC", "PT"): {"ks": (93.54, "0.05M"), "ic": (97.57, "0.05M"), "asr": (59.41, "4.5M"), "sf": (65.25, "4.5M")},
    ("CPC", "FT"): {"ks": (91.88, "0.07M"), "ic": (64.09, "0.07M"), "asr": (20.18, "42.5M"), "sf": (71.19, "42.5M")},
}

# SUPERB: upstream -> (feature dim, {task: metrics}); ASR WER test-clean without LM
_SUPERB = {
    "HuBERT Base": (768, {"ks": {"accuracy": 96.30}, "ic": {"accuracy": 98.34}, "asr": {"wer": 6.42},
                          "sf": {"slot_type_f1": 88.53, "slot_value_cer": 25.20}}),
    "wav2vec 2.0 Base": (768, {"ks": {"accuracy": 96.23}, "ic": {"accuracy": 92.35}, "asr": {"wer": 6.43},
                               "sf": {"slot_type_f1": 88.30, "slot_value_cer": 24.77}}),
    "modified CPC": (256, {"ks": {"accuracy": 91.88}, "ic": {"accuracy": 64.09}, "asr": {"wer": 20.18},
                           "sf": {"slot_type_f1": 71.19, "slot_value_cer": 49.91}}),
    "FBANK": (240, {"ks": {"accuracy": 41.38}, "ic": {"accuracy": 9.65}, "asr": {"wer": 23.18},
                    "sf": {"slot_type_f1": 69.64, "slot_value_cer": 52.94}}),
}
_SUPERB_NOTES = {("FBANK", "ks"): "current leaderboard value (8.63 before 2021-10-14)",
                 ("FBANK", "ic"): "current leaderboard value (9.10 before 2021-10-14)"}
# outputs of SUPERB's heads: KS 12 classes, IC 6+14+4 slots, ASR 32 symbols (fairseq specials + char.dict)
_SUPERB_OUTPUTS = {"ks": ("linear", 12), "ic": ("linear", 24), "asr": ("lstm", 32)}


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------

@dataclass
class Row:
    source: str                     # "run" or "published: ..."
    task: str
    method: str
    upstream: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)   # SUPERB metric name -> percent
    test_from: str = ""             # which evaluation the test metrics come from
    trainable_params: Optional[int] = None
    params_text: str = ""           # as printed (published rows), or "+N featurizer"
    bytes_per_task: Optional[int] = None
    steps: Optional[int] = None
    total_steps: Optional[int] = None
    wall_s: Optional[float] = None
    train_loop_s: Optional[float] = None
    expdir: str = ""
    notes: List[str] = field(default_factory=list)


def reference_rows(tasks: Optional[Iterable[str]] = None) -> List[Row]:
    """Published rows for ``tasks`` (default: all four). Metrics in percent."""
    wanted = list(tasks) if tasks is not None else ["ks", "ic", "asr", "sf"]
    rows = []
    for task in wanted:
        for (model, method), results in _SPEECHPROMPT.items():
            if task in results:
                value, params = results[task]
                metric = TASK_METRICS[task][0][0]
                head = "SUPERB linear" if task in ("ks", "ic") else "SUPERB BLSTM-CTC"
                rows.append(Row(SPEECHPROMPT_SRC, task, METHOD_LABELS["pt"] if method == "PT" else head,
                                upstream=f"{model} -> 100 units, GSLM uLM" if method == "PT" else f"{model} (continuous)",
                                metrics={metric: value}, params_text=params))
        for model, (dim, results) in _SUPERB.items():
            if task not in results:
                continue
            params, text = None, ""
            if task in _SUPERB_OUTPUTS:
                kind, outputs = _SUPERB_OUTPUTS[task]
                params = superb_head_params(kind, dim, outputs)
            elif dim == 768:
                text = "≈42.99M"
            notes = [_SUPERB_NOTES[(model, task)]] if (model, task) in _SUPERB_NOTES else []
            rows.append(Row(SUPERB_SRC, task, "SUPERB " + ("linear" if task in ("ks", "ic") else "BLSTM-CTC"),
                            upstream=f"{model} (D={dim})", metrics=dict(results[task]), trainable_params=params,
                            params_text=text or "head, computed", notes=notes))
    return rows


# ------------------------------------------------------------------------------------------------
# reading one experiment directory
# ------------------------------------------------------------------------------------------------

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
    chosen, source = None, ""
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
            chosen, source = at_best[-1], f"best dev ({_fmt_steps(best_step)})"
        else:
            last = [(s, m) for s, sp, m in training if sp == test_split]
            if last:
                chosen, source = last[-1][1], f"last ({_fmt_steps(last[-1][0])})"
                row.notes.append("test not evaluated at the best dev step")
    if chosen is None:
        row.test_from = "missing"
        row.notes.append("no test result")
        return
    names = [m for m, _, _ in specs] if specs else [m for m in chosen if m != "unfinished"]
    for name in names:
        if name in chosen:
            row.metrics[name] = 100.0 * chosen[name]
        else:
            row.notes.append(f"{name} not logged")
    if test_split != "test":
        source += f" on {test_split}"
    row.test_from = source


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
    """Experiment dirs among ``paths``: a dir without ``args_*.yaml`` but with experiment subdirs expands to them."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and not any(p.glob("args_*.yaml")):
            subs = sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob("args_*.yaml")))
            if subs:
                out += subs
                continue
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

COLUMNS = ["source", "task", "method", "upstream / units", "test metric(s) %", "test from", "trainable params",
           "bytes / task", "steps", "wall time", "notes"]
_ORDER = {"ks": 0, "ic": 1, "asr": 2, "sf": 3}


def _human(n: Optional[float], unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}" if float(n).is_integer() else f"{n:.2f}{unit}"


def _duration(s: Optional[float]) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def _metric_text(row: Row) -> str:
    if not row.metrics:
        return "missing"
    return ", ".join(f"{METRIC_LABELS.get(k, k)} {v:.2f}" for k, v in row.metrics.items())


_METHOD_ORDER = {METHOD_LABELS["pt"]: 0, METHOD_LABELS["ftlm"]: 1}


def sort_rows(rows: List[Row]) -> List[Row]:
    """By task, runs before published rows, PT before FT-LM before baselines (stable otherwise)."""
    return sorted(rows, key=lambda r: (_ORDER.get(r.task, 9), r.task, r.source != "run",
                                       _METHOD_ORDER.get(r.method, 2) if r.source == "run" else 0))


def _display(row: Row) -> List[str]:
    params = f"{row.trainable_params:,}" if row.trainable_params is not None else ""
    if row.params_text:
        params = f"{params} ({row.params_text})" if params else row.params_text
    steps = "-" if row.steps is None else (f"{row.steps:,}" + (f"/{row.total_steps:,}" if row.total_steps else ""))
    return [row.source, TASK_LABELS.get(row.task, row.task), row.method, row.upstream, _metric_text(row),
            row.test_from or ("published" if row.source != "run" else "-"), params or "-",
            _human(row.bytes_per_task, "B"), steps, _duration(row.wall_s), "; ".join(row.notes)]


def render(rows: List[Row], fmt: str = "md") -> str:
    rows = sort_rows(rows)
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=1)
    if fmt == "csv":
        metric_names = list(dict.fromkeys([m for specs in TASK_METRICS.values() for m, _, _ in specs]
                                          + [m for r in rows for m in r.metrics]))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["source", "task", "method", "upstream_units", *metric_names, "test_from", "trainable_params",
                         "params_note", "bytes_per_task", "steps", "total_steps", "wall_s", "train_loop_s", "expdir",
                         "notes"])
        for r in rows:
            writer.writerow([r.source, r.task, r.method, r.upstream,
                             *[("" if m not in r.metrics else f"{r.metrics[m]:.4f}") for m in metric_names],
                             r.test_from, "" if r.trainable_params is None else r.trainable_params, r.params_text,
                             "" if r.bytes_per_task is None else r.bytes_per_task,
                             "" if r.steps is None else r.steps, "" if r.total_steps is None else r.total_steps,
                             "" if r.wall_s is None else f"{r.wall_s:.1f}",
                             "" if r.train_loop_s is None else f"{r.train_loop_s:.1f}", r.expdir, "; ".join(r.notes)])
        return buf.getvalue()
    if fmt != "md":
        raise ValueError(f"format: expected md, csv or json, got {fmt!r}")
    cells = [_display(r) for r in rows]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    used = list(dict.fromkeys(r.source for r in rows))
    lines += [""] + [f"- **{src}**: {SOURCES.get(src, src)}" for src in used]
    lines.append("- metrics in percent on the test split (KS/IC accuracy, ASR WER, SF slot-type F1 and slot-value CER); "
                 "bytes / task = serialized trainable downstream state")
    return "\n".join(lines) + "\n"


def build_report(expdirs: Sequence, references: str = "tasks") -> List[Row]:
    """Rows for the experiment dirs plus published rows: ``references`` = tasks (of the runs) | all | none."""
    runs = [collect_run(d) for d in expand_dirs(expdirs)]
    if references == "none":
        return runs
    if references == "all" or not runs:
        tasks = None
    else:
        tasks = [t for t in TASK_METRICS if any(r.task == t for r in runs)]
    return runs + reference_rows(tasks)
