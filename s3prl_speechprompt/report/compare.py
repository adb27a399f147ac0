"""Paired comparisons of runs scored on the same test utterances (``speechprompt report --compare``).

For runs A and B of one task, each metric's ``A - B`` (percentage points) gets a 95% paired bootstrap interval
and a two-sided p-value (exact McNemar on the discordant utterances for accuracy, the paired bootstrap for the
others). Runs are paired by utterance id; runs whose ids or references differ are not comparable
(:class:`TestSetMismatch`, :func:`compare_runs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import List, Optional, Sequence, Tuple

import numpy as np

import s3prl_speechprompt.report.stats as stats
from s3prl_speechprompt.errors import ConfigError, UserError
from s3prl_speechprompt.report.rows import METRIC_LABELS, Row, higher_is_better
from s3prl_speechprompt.report.scores import UtteranceScores, load_scores


class TestSetMismatch(UserError, ValueError):
    """Two runs were not scored on the same test utterances (a user error: the message names both runs)."""

    __test__ = False        # not a pytest test class


@dataclass
class Comparison:
    task: str
    metric: str
    a: str                      # run names (experiment directory names)
    b: str
    a_method: str
    b_method: str
    a_value: float              # percent
    b_value: float
    diff: float                 # a - b, percentage points
    low: float                  # paired-bootstrap interval of the difference
    high: float
    p: float
    test: str                   # "exact McNemar" | "paired bootstrap"
    n: int                      # test utterances
    only_a: Optional[int] = None    # accuracy: utterances only A got right
    only_b: Optional[int] = None
    p_holm: Optional[float] = None  # Holm-adjusted over all comparisons reported together
    resamples: int = stats.RESAMPLES
    seed: int = stats.SEED
    confidence: float = stats.CONFIDENCE

    def verdict(self, alpha: float = 0.05) -> str:
        if not self.p < alpha:
            return "not distinguishable on this test set"
        a_better = (self.diff > 0) == higher_is_better(self.metric)
        return f"{self.a if a_better else self.b} is better on this test set"

    def sentence(self, alpha: float = 0.05) -> str:
        label = METRIC_LABELS.get(self.metric, self.metric)
        detail = self.test + (f", {self.only_a} vs {self.only_b} discordant" if self.only_a is not None else "")
        return (f"{self.a} vs {self.b} ({label}): {self.diff:+.2f} points [{self.low:+.2f}, {self.high:+.2f}], "
                f"{format_p(self.p)} ({detail}): {self.verdict(alpha)}")


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _aligned(a: Row, sa: UtteranceScores, b: Row, sb: UtteranceScores) -> Tuple[np.ndarray, np.ndarray]:
    """Row indices of A and B that name the same utterances in the same order; TestSetMismatch otherwise."""
    ids_a, ids_b = set(sa.ids), set(sb.ids)
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise TestSetMismatch(
            f"{a.expdir} and {b.expdir} were not scored on the same test utterances: {len(only_a)} of "
            f"{len(ids_a)} ids only in {a.name}{f' (e.g. {only_a[0]!r})' if only_a else ''}, {len(only_b)} of "
            f"{len(ids_b)} only in {b.name}{f' (e.g. {only_b[0]!r})' if only_b else ''}; a paired comparison needs "
            f"the same test set (compare them separately, or evaluate both on one split)")
    index_b = {u: i for i, u in enumerate(sb.ids)}
    ia = np.arange(len(sa.ids))
    ib = np.asarray([index_b[u] for u in sa.ids])
    differ = [u for u, i, j in zip(sa.ids, ia, ib) if list(sa.truths[i]) != list(sb.truths[j])]
    if differ:
        raise TestSetMismatch(f"{a.expdir} and {b.expdir} have the same {len(ids_a)} utterance ids but different "
                              f"reference labels for {len(differ)} of them (e.g. {differ[0]!r}); they were scored "
                              f"against different versions of the test set")
    return ia, ib


def compare_pair(a: Row, b: Row, resamples: int = stats.RESAMPLES, seed: int = stats.SEED,
                 confidence: float = stats.CONFIDENCE) -> List[Comparison]:
    """One :class:`Comparison` per metric both runs report."""
    sa, sb = load_scores(a.predictions, a.task), load_scores(b.predictions, b.task)
    ia, ib = _aligned(a, sa, b, sb)
    out = []
    for metric in a.metrics:
        if metric not in b.metrics or metric not in sa.metrics or metric not in sb.metrics:
            continue
        (na, da), (nb, db) = sa.metrics[metric], sb.metrics[metric]
        na, da, nb, db = na[ia], da[ia], nb[ib], db[ib]
        boot = stats.paired_bootstrap(na, da, nb, db, resamples, seed, confidence)
        c = Comparison(a.task, metric, a.name, b.name, a.method, b.method, 100 * stats.ratio(na, da),
                       100 * stats.ratio(nb, db), 100 * boot.diff, 100 * boot.low, 100 * boot.high, boot.p,
                       "paired bootstrap", len(ia), resamples=resamples, seed=seed, confidence=confidence)
        if metric == "accuracy":
            mc = stats.mcnemar_exact(na > 0.5, nb > 0.5)
            c.p, c.test, c.only_a, c.only_b = mc.p, "exact McNemar", mc.only_a, mc.only_b
        out.append(c)
    return out


def _find(rows: Sequence[Row], wanted: str) -> Row:
    from pathlib import Path
    hits = [r for r in rows if wanted in (r.expdir, r.name) or
            (r.expdir and Path(r.expdir).resolve() == Path(wanted).resolve())]
    if len(hits) != 1:
        names = ", ".join(r.name for r in rows)
        raise ConfigError(f"--reference {wanted!r} matches {len(hits)} of the runs ({names}); give one run's "
                          f"directory or name")
    return hits[0]


def compare_runs(rows: Sequence[Row], reference: Optional[str] = None, resamples: int = stats.RESAMPLES,
                 seed: int = stats.SEED, confidence: float = stats.CONFIDENCE) -> Tuple[List[Comparison], List[str]]:
    """Every pair of runs of the same task (or each run against ``reference``), plus the runs and pairs left out
    and why. Pairs scored on different test sets are left out (listed) when other pairs can be compared; when
    none can, :class:`TestSetMismatch` is raised, so two runs on different test sets never give a number.
    p-values are also Holm-adjusted over all comparisons of one metric returned together."""
    runs = [r for r in rows if r.source == "run"]
    skipped = [f"{r.name}: no per-utterance predictions for its test result" for r in runs
               if r.metrics and not r.predictions]
    usable = [r for r in runs if r.metrics and r.predictions]
    if reference is not None:
        ref = _find(runs, reference)
        if not ref.predictions:
            raise ConfigError(f"--reference {reference}: {ref.expdir} has no per-utterance predictions for its test "
                              f"result, so nothing can be paired with it")
        pairs = [(ref, r) for r in usable if r is not ref and r.task == ref.task]
    else:
        pairs = [(a, b) for a, b in combinations(usable, 2) if a.task == b.task]
    out: List[Comparison] = []
    mismatched: List[str] = []
    for a, b in pairs:
        try:
            out += compare_pair(a, b, resamples, seed, confidence)
        except TestSetMismatch as e:      # e.g. dev- and test-evaluated runs in one folder: compare the rest
            mismatched.append(str(e))
    if mismatched and not out:
        raise TestSetMismatch(" ; ".join(mismatched))
    skipped += [f"different test sets: {m}" for m in mismatched]
    for metric in {c.metric for c in out}:
        same = [c for c in out if c.metric == metric]
        for c, adj in zip(same, stats.holm([c.p for c in same])):
            c.p_holm = adj
    return out, skipped
