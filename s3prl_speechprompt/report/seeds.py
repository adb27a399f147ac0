"""Seed groups: runs that differ only in their training seed, summarised as mean +- standard deviation.

Two runs are one recipe when task, method, upstream / units text, trainable-parameter count and the hash
of their other settings (``Row.config_key``: the s3prl config and upstream arguments, or ``speechprompt
train``'s settings, without the seed and without file locations) are equal.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import s3prl_speechprompt.report.stats as stats
from s3prl_speechprompt.report.rows import Row


def group_key(row: Row) -> tuple:
    return (row.task, row.method, row.upstream, row.trainable_params, row.config_key)


def seed_groups(rows: Sequence[Row]) -> List[Row]:
    """One ``source="seeds"`` row per recipe with two or more finished runs: mean and std (ddof=1) per metric."""
    groups: Dict[tuple, List[Row]] = {}
    for r in rows:
        if r.source == "run" and r.metrics and r.config_key:
            groups.setdefault(group_key(r), []).append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        g = Row("seeds", first.task, first.method, upstream=first.upstream, trainable_params=first.trainable_params,
                bytes_per_task=first.bytes_per_task, config_key=first.config_key, test_from="mean ± std over seeds")
        g.seeds = [m.seed for m in members]
        g.members = [m.expdir for m in members]
        for metric in first.metrics:
            mean, std, n = stats.mean_std([m.metrics.get(metric) for m in members])
            if n < len(members):
                g.notes.append(f"{metric}: {len(members) - n} run(s) without it")
            g.metrics[metric] = mean
            if std is not None:
                g.std[metric] = std
        if len(set(g.seeds)) < len(g.seeds):
            g.notes.append(f"seeds repeat ({g.seeds}): these runs differ in nothing recorded")
        if any(m.n_test != first.n_test for m in members):
            g.notes.append("members were scored on different numbers of test utterances")
        out.append(g)
    return out
