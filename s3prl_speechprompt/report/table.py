"""Rendering the report: one table (Markdown, CSV or JSON) of runs, seed groups and published rows, and
the paired comparisons below it."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import List, Optional, Sequence

from s3prl_speechprompt.report.compare import Comparison, format_p
from s3prl_speechprompt.report.published import SOURCES
from s3prl_speechprompt.report.rows import METHOD_LABELS, METRIC_LABELS, TASK_LABELS, TASK_METRICS, TASK_ORDER, Row
from s3prl_speechprompt.report.seeds import group_key

COLUMNS = ["source", "task", "method", "upstream / units", "test metric(s) %", "test from", "trainable params",
           "bytes / task", "steps", "wall time", "notes"]
_ORDER = TASK_ORDER


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


def value_text(row: Row, metric: str) -> str:
    """``95.16 [94.40, 95.85]`` (run with an interval), ``93.70 ± 0.20 (n=3)`` (seed group), else ``95.16``."""
    v = row.metrics[metric]
    if row.source == "seeds":
        spread = f" ± {row.std[metric]:.2f}" if metric in row.std else ""
        return f"{v:.2f}{spread} (n={len(row.members)})"
    if metric in row.intervals:
        lo, hi = row.intervals[metric]
        return f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{v:.2f}"


def _metric_text(row: Row) -> str:
    if not row.metrics:
        return "missing"
    return ", ".join(f"{METRIC_LABELS.get(k, k)} {value_text(row, k)}" for k in row.metrics)


_METHOD_ORDER = {METHOD_LABELS["pt"]: 0, METHOD_LABELS["ftlm"]: 1}


def sort_rows(rows: List[Row]) -> List[Row]:
    """By task, runs before published rows, PT before FT-LM before baselines (stable otherwise); a seed
    group's row follows the last of its runs."""
    ours = ("run", "seeds")
    ordered = sorted(rows, key=lambda r: (_ORDER.get(r.task, 9), r.task, r.source not in ours,
                                          _METHOD_ORDER.get(r.method, 2) if r.source in ours else 0,
                                          r.source == "seeds"))
    groups = [r for r in ordered if r.source == "seeds"]
    out = [r for r in ordered if r.source != "seeds"]
    for g in groups:
        members = [i for i, r in enumerate(out) if r.source == "run" and r.config_key and group_key(r) == group_key(g)]
        out.insert(members[-1] + 1 if members else len(out), g)
    return out


def _display(row: Row) -> List[str]:
    params = f"{row.trainable_params:,}" if row.trainable_params is not None else ""
    if row.params_text:
        params = f"{params} ({row.params_text})" if params else row.params_text
    steps = "-" if row.steps is None else (f"{row.steps:,}" + (f"/{row.total_steps:,}" if row.total_steps else ""))
    source = row.source + (f" (seed {row.seed})" if row.source == "run" and row.seed is not None else "")
    if row.source == "seeds":
        source = f"seeds {', '.join(map(str, row.seeds))}"
    return [source, TASK_LABELS.get(row.task, row.task), row.method, row.upstream, _metric_text(row),
            row.test_from or ("published" if row.source not in ("run", "seeds") else "-"), params or "-",
            _human(row.bytes_per_task, "B"), steps, _duration(row.wall_s), "; ".join(row.notes)]


SEEDS_SOURCE = ("mean ± sample standard deviation (n runs) over runs that differ only in their training seed "
                "(listed above it)")


def render(rows: List[Row], fmt: str = "md", comparisons: Optional[Sequence[Comparison]] = None,
           not_compared: Sequence[str] = (), stats_note: str = "") -> str:
    """The table; with ``comparisons`` (``--compare``) the paired tests follow it (md: a table and one sentence
    per pair; csv: a second block after a blank line; json: ``{"rows", "comparisons", "not_compared"}`` instead
    of the bare list of rows)."""
    rows = sort_rows(rows)
    if fmt == "json":
        data = [asdict(r) for r in rows]
        if comparisons is None:
            return json.dumps(data, indent=1)
        return json.dumps({"rows": data, "comparisons": [asdict(c) for c in comparisons],
                           "not_compared": list(not_compared), "statistics": stats_note}, indent=1)
    if fmt == "csv":
        return _csv(rows, comparisons)
    if fmt != "md":
        raise ValueError(f"format: expected md, csv or json, got {fmt!r}")
    cells = [_display(r) for r in rows]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    used = list(dict.fromkeys("run" if r.source == "run" else r.source for r in rows))
    lines += [""] + [f"- **{src}**: {SEEDS_SOURCE if src == 'seeds' else SOURCES.get(src, src)}" for src in used]
    lines.append("- metrics in percent on the test split (KS/IC accuracy, ASR WER, SF slot-type F1 and slot-value CER); "
                 "bytes / task = serialized trainable downstream state")
    if stats_note and any(r.intervals for r in rows):
        lines.append(f"- [low, high]: {stats_note}")
    if comparisons is not None:
        lines += ["", "### Paired comparisons (same test utterances)", ""]
        level = f"{100 * comparisons[0].confidence:g}%" if comparisons else "95%"
        lines += [f"| A | B | metric | A | B | A - B (points) | {level} CI | p | test | p (Holm) | n |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            test = c.test + (f" ({c.only_a} vs {c.only_b} discordant)" if c.only_a is not None else "")
            lines.append(f"| {esc(c.a)} | {esc(c.b)} | {METRIC_LABELS.get(c.metric, c.metric)} | {c.a_value:.2f} | "
                         f"{c.b_value:.2f} | {c.diff:+.2f} | [{c.low:+.2f}, {c.high:+.2f}] | {_p(c.p)} | "
                         f"{test} | {'-' if c.p_holm is None else _p(c.p_holm)} | {c.n:,} |")
        lines.append("")
        lines += [f"- {c.sentence()}." for c in comparisons]
        if not comparisons:
            lines.append("- no two runs of the same task with per-utterance predictions to compare")
        lines += [f"- not compared: {why}" for why in not_compared]
    return "\n".join(lines) + "\n"


def _p(p: float) -> str:
    return format_p(p).replace("p = ", "").replace("p ", "")


def _csv(rows: List[Row], comparisons) -> str:
    metric_names = list(dict.fromkeys([m for specs in TASK_METRICS.values() for m, _, _ in specs]
                                      + [m for r in rows for m in r.metrics]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    bounds = [f"{m}_{end}" for m in metric_names for end in ("lo", "hi")]
    writer.writerow(["source", "task", "method", "upstream_units", *metric_names, "metrics_text", *bounds,
                     "seed", "n_test", "test_from", "trainable_params", "params_note", "bytes_per_task", "steps",
                     "total_steps", "wall_s", "train_loop_s", "expdir", "notes"])
    for r in rows:
        lo_hi = []
        for m in metric_names:
            iv = r.intervals.get(m)
            if iv is None and m in r.std:          # seed groups: mean - std, mean + std
                iv = [r.metrics[m] - r.std[m], r.metrics[m] + r.std[m]]
            lo_hi += ["", ""] if iv is None else [f"{iv[0]:.4f}", f"{iv[1]:.4f}"]
        seed = ";".join(map(str, r.seeds)) if r.source == "seeds" else ("" if r.seed is None else r.seed)
        writer.writerow([r.source, r.task, r.method, r.upstream,
                         *[("" if m not in r.metrics else f"{r.metrics[m]:.4f}") for m in metric_names],
                         _metric_text(r) if r.metrics else "", *lo_hi, seed, "" if r.n_test is None else r.n_test,
                         r.test_from, "" if r.trainable_params is None else r.trainable_params, r.params_text,
                         "" if r.bytes_per_task is None else r.bytes_per_task,
                         "" if r.steps is None else r.steps, "" if r.total_steps is None else r.total_steps,
                         "" if r.wall_s is None else f"{r.wall_s:.1f}",
                         "" if r.train_loop_s is None else f"{r.train_loop_s:.1f}", r.expdir, "; ".join(r.notes)])
    if comparisons is not None:
        buf.write("\n")
        writer.writerow(["task", "metric", "a", "b", "a_value", "b_value", "diff", "diff_lo", "diff_hi", "p", "test",
                         "only_a", "only_b", "p_holm", "n", "resamples", "bootstrap_seed", "sentence"])
        for c in comparisons:
            writer.writerow([c.task, c.metric, c.a, c.b, f"{c.a_value:.4f}", f"{c.b_value:.4f}", f"{c.diff:.4f}",
                             f"{c.low:.4f}", f"{c.high:.4f}", f"{c.p:.6g}", c.test,
                             "" if c.only_a is None else c.only_a, "" if c.only_b is None else c.only_b,
                             "" if c.p_holm is None else f"{c.p_holm:.6g}", c.n, c.resamples, c.seed, c.sentence()])
    return buf.getvalue()
