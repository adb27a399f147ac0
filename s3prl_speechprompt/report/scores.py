"""A run's per-utterance scores (from its predictions file) and the 95% interval of each test metric.

The predictions file (:mod:`s3prl_speechprompt.predictions`) gives label tokens per utterance; the task's
``utterance_scores`` turns them into ``(num, den)`` per utterance using SUPERB's own metric code, and the
corpus metric is ``sum(num) / sum(den)``. Before any interval is attached, that recomputed metric is checked
against the number the run logged: a predictions file from another evaluation is reported, not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from s3prl_speechprompt.predictions import read_predictions
import s3prl_speechprompt.report.stats as stats
from s3prl_speechprompt.report.rows import Row


def task_scorer(name: str):
    """The registered task's scorer (constructed without corpus paths), else exact-match accuracy."""
    from s3prl_speechprompt.tasks.base import Task, get_task
    try:
        return get_task(name)()
    except Exception:        # unknown task, or one whose constructor needs its corpus: score generically
        return Task()


@dataclass
class UtteranceScores:
    """Per-utterance ``(num, den)`` arrays for each metric, rows in ``ids`` order (sorted)."""

    path: str
    task: str
    ids: List[str]
    truths: List[tuple]
    metrics: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def percent(self, metric: str) -> float:
        num, den = self.metrics[metric]
        return 100.0 * stats.ratio(num, den)


@lru_cache(maxsize=64)
def load_scores(path: str, task: Optional[str] = None) -> UtteranceScores:
    """Read ``path`` and score every utterance (cached per path: the report may need a run several times)."""
    if path.endswith("_predict.txt"):         # an older `speechprompt evaluate` run: the id<TAB>labels pair
        from s3prl_speechprompt.predictions import read_predict_truth
        pred = read_predict_truth(path, path[:-len("_predict.txt")] + "_truth.txt", task or "")
    else:
        pred = read_predictions(path)
    name = task or pred.task
    per_utt = task_scorer(name).utterance_scores(list(pred.predictions), list(pred.truths))
    metrics = {m: (np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)) for m, (n, d) in per_utt.items()}
    return UtteranceScores(path, name, pred.ids, pred.truths, metrics)


def add_intervals(rows: Sequence[Row], resamples: int = stats.RESAMPLES, seed: int = stats.SEED,
                  confidence: float = stats.CONFIDENCE) -> None:
    """Attach ``intervals`` (percent) to every run row with a predictions file; problems go to ``notes``. Accuracy:
    Wilson score interval; other metrics: percentile bootstrap over utterances (``resamples``, ``default_rng(seed)``).
    """
    for row in rows:
        if row.source != "run" or not row.metrics:
            continue
        if not row.predictions:
            row.notes.append("no per-utterance predictions for this test result: no interval")
            continue
        try:
            scores = load_scores(row.predictions, row.task)
        except (OSError, ValueError) as e:
            row.notes.append(f"predictions unusable ({e}): no interval")
            continue
        row.n_test = len(scores.ids)
        for metric, logged in row.metrics.items():
            if metric not in scores.metrics:
                row.notes.append(f"{metric}: not computable from {row.predictions}")
                continue
            num, den = scores.metrics[metric]
            recomputed = 100.0 * stats.ratio(num, den)
            if not abs(recomputed - logged) <= 1e-3 * max(1.0, abs(logged)):
                row.notes.append(f"{metric}: {row.predictions} gives {recomputed:.4f}, the log {logged:.4f} (another "
                                 f"evaluation's predictions): no interval, not compared")
                row.intervals.clear()
                row.predictions = ""
                break
            if metric == "accuracy":
                lo, hi = stats.wilson_interval(int(round(num.sum())), int(den.sum()), confidence)
                kind = "wilson"
            else:
                lo, hi = stats.bootstrap_interval(num, den, resamples, seed, confidence)
                kind = "bootstrap"
            row.intervals[metric] = [100.0 * lo, 100.0 * hi]
            row.interval_kind[metric] = kind
