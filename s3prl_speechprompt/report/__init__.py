"""``speechprompt report``: finished runs side by side with published numbers, with the uncertainty of each.

Modules: ``runs`` (run directories, their run.json, into rows), ``upgrade`` (run.json for older run directories:
``speechprompt upgrade-run``), ``published`` (SpeechPrompt / SUPERB rows), ``rows`` (the row type, task / metric
conventions), ``scores`` (a run's per-utterance scores and 95% intervals), ``stats`` (pure statistics), ``compare``
(paired comparisons on the same test utterances, ``--compare``), ``seeds`` (mean ± std over seeds,
``--group-seeds``), ``table`` (Markdown, CSV, JSON), ``plot`` (metric vs trainable parameters, ``--plot``).
Nothing here trains or needs the data. :func:`build_report` is the whole pipeline behind the command.
"""
from __future__ import annotations

from typing import List, Sequence

from s3prl_speechprompt.report.published import (SOURCES, SPEECHPROMPT_SRC, SUPERB_SRC,  # noqa: F401
                                                 reference_rows, superb_head_params)
from s3prl_speechprompt.report.rows import (METHOD_LABELS, METRIC_LABELS, TASK_LABELS, TASK_METRICS,  # noqa: F401
                                            Row)
from s3prl_speechprompt.report.runs import check_converted, collect_run, expand_dirs  # noqa: F401
from s3prl_speechprompt.report.stats import CONFIDENCE, RESAMPLES, SEED
from s3prl_speechprompt.report.table import render, sort_rows  # noqa: F401


def statistics_note(resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE) -> str:
    """One line saying how the intervals were computed (printed under the table)."""
    return (f"{100 * confidence:g}% interval over the test utterances: Wilson score interval for accuracy; "
            f"percentile bootstrap ({resamples:,} resamples of utterances, seed {seed}) for the other metrics")


def build_report(expdirs: Sequence, references: str = "tasks", intervals: bool = True, group_seeds: bool = False,
                 resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE) -> List[Row]:
    """Rows for the experiment dirs (with their intervals; plus seed-group rows) and the published rows:
    ``references`` = tasks (of the runs) | all | none."""
    dirs = expand_dirs(expdirs)
    check_converted(dirs)          # a run from before run.json: one error naming the converter, nothing misread
    runs = [collect_run(d) for d in dirs]
    if intervals:
        from s3prl_speechprompt.report.scores import add_intervals
        add_intervals(runs, resamples=resamples, seed=seed, confidence=confidence)
    rows = list(runs)
    if group_seeds:
        from s3prl_speechprompt.report.seeds import seed_groups
        rows += seed_groups(runs)
    if references == "none":
        return rows
    if references == "all" or not runs:
        tasks = None
    else:
        tasks = [t for t in TASK_METRICS if any(r.task == t for r in runs)]
    return rows + reference_rows(tasks)
