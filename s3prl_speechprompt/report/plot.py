"""``speechprompt report --plot FILE.png``: per task, the test metric against trainable parameters (log x).

Runs: a circle with their 95% interval as the error bar; seed groups: a diamond with mean +- std; published
SpeechPrompt rows: squares, SUPERB rows: triangles. The points drawn are returned and written beside the
PNG as ``FILE.json`` (one entry per marker, plus the rows that could not be placed and why), so what the
picture shows can be checked without looking at it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional, Sequence

from s3prl_speechprompt.errors import ConfigError
from s3prl_speechprompt.report.published import SPEECHPROMPT_SRC, SUPERB_SRC
from s3prl_speechprompt.report.rows import METRIC_LABELS, TASK_LABELS, TASK_METRICS, TASK_ORDER, Row

STYLE = {"run": ("o", "C0", "run (95% interval)"), "seeds": ("D", "C3", "seed group (mean ± std)"),
         SPEECHPROMPT_SRC: ("s", "C2", "SpeechPrompt paper (published)"), SUPERB_SRC: ("^", "C1", "SUPERB (published)")}


def param_count(row: Row) -> Optional[float]:
    """Trainable parameters of a row: the counted value, else the published text (``0.08M``, ``≈42.99M``)."""
    if row.trainable_params:
        return float(row.trainable_params)
    m = re.search(r"([\d.]+)\s*([kMG]?)", row.params_text or "")
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def _primary(row: Row) -> Optional[str]:
    specs = TASK_METRICS.get(row.task)
    names = [m for m, _, _ in specs] if specs else list(row.metrics)
    return next((m for m in names if m in row.metrics), None)


def plot_points(rows: Sequence[Row]) -> Dict[str, list]:
    """The markers the plot draws: ``{"points": [...], "not_drawn": [...]}`` (pure; no matplotlib)."""
    points, skipped = [], []
    for r in rows:
        metric = _primary(r)
        x = param_count(r)
        name = r.name if r.source in ("run", "seeds") else f"{r.method}, {r.upstream}"
        if metric is None or x is None:
            skipped.append({"name": name, "task": r.task, "source": r.source,
                            "why": "no test metric" if metric is None else "no parameter count"})
            continue
        y = r.metrics[metric]
        low = high = None
        if r.source == "run" and metric in r.intervals:
            low, high = r.intervals[metric]
        elif r.source == "seeds" and metric in r.std:
            low, high = y - r.std[metric], y + r.std[metric]
        points.append({"task": r.task, "source": r.source, "name": name, "method": r.method, "metric": metric,
                       "params": x, "value": y,
                       "low": low, "high": high, "expdir": r.expdir, "seed": r.seed})
    return {"points": points, "not_drawn": skipped}


def plot_report(rows: Sequence[Row], path) -> dict:
    """Draw and save the PNG at ``path`` and its data at ``path`` with ``.json``; returns the data, with the
    number of markers drawn per source under ``"drawn"``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_points(rows)
    tasks = sorted({p["task"] for p in data["points"]}, key=lambda t: (TASK_ORDER.get(t, 9), t))
    if not tasks:
        raise ConfigError("--plot: no row has both a test metric and a parameter count; nothing to draw")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    drawn: Dict[str, int] = {}
    for ax, task in zip(axes[0], tasks):
        pts = [p for p in data["points"] if p["task"] == task]
        # runs of a seed group sit on top of each other: only the group is named (by its method)
        grouped = {(p["method"], p["params"]) for p in pts if p["source"] == "seeds"}
        seen = set()
        for p in pts:
            marker, color, label = STYLE.get(p["source"], ("x", "C7", p["source"]))
            yerr = None
            if p["low"] is not None:
                yerr = [[p["value"] - p["low"]], [p["high"] - p["value"]]]
            ax.errorbar([p["params"]], [p["value"]], yerr=yerr, fmt=marker, color=color, capsize=3,
                        markersize=7, label=None if label in seen else label)
            seen.add(label)
            drawn[p["source"]] = drawn.get(p["source"], 0) + 1
            if p["source"] == "seeds" or (p["source"] == "run" and (p["method"], p["params"]) not in grouped):
                ax.annotate(p["name"], (p["params"], p["value"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        metrics = sorted({p["metric"] for p in pts})
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(", ".join(f"{METRIC_LABELS.get(m, m)} %" for m in metrics) + " (test)")
        ax.set_title(TASK_LABELS.get(task, task))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    data["drawn"] = drawn
    data["png"] = str(path)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return data
