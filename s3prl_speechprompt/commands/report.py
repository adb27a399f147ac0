"""Compare finished experiments (PT, FT-LM, SUPERB baselines, unit BLSTM; any tasks) side by side with the
published SpeechPrompt and SUPERB numbers, in one table, with a 95% interval for every test metric.

EXPDIR is what s3prl's runner wrote (-p/-n) with our downstreams or a `speechprompt train` directory scored by
`speechprompt evaluate`; the report reads only its run.json (the run record) and the predictions files it names
(<split>_predictions.jsonl). A folder holding several experiment directories (e.g. result/downstream) expands to all
of them. Partial runs are listed with what is missing; runs from before run.json are converted once with
`speechprompt upgrade-run`. Intervals: Wilson for accuracy, bootstrap over test utterances for WER / CER / slot F1
(docs/report.md).

Examples:
  speechprompt report result/downstream/ks_pt result/downstream/ks_linear
  speechprompt report bench_ks --compare --reference bench_ks/hubert100_pt-learnable --group-seeds --plot ks.png
"""
from __future__ import annotations

import sys

from s3prl_speechprompt.errors import ConfigError

NAME = "report"
HELP = "side-by-side table of experiment dirs and published numbers, with intervals, paired tests, seeds, plot"


def add_arguments(parser) -> None:
    from s3prl_speechprompt.report.stats import CONFIDENCE, RESAMPLES, SEED

    parser.add_argument("expdirs", nargs="+", metavar="EXPDIR", help="experiment directories (or folders of them)")
    parser.add_argument("--format", default="md", choices=["md", "csv", "json"], help="output format")
    parser.add_argument("--references", default="tasks", choices=["tasks", "all", "none"],
                        help="published rows: for the runs' tasks, all of them, or none")
    parser.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--compare", action="store_true",
                        help="paired tests between runs of the same task on the same test utterances: difference, "
                             "95%% paired-bootstrap interval, p (exact McNemar for accuracy, paired bootstrap "
                             "otherwise); every pair, or each run against --reference")
    parser.add_argument("--reference", default=None, metavar="RUN",
                        help="with --compare: compare every other run of its task against this one (a directory "
                             "given or its name) instead of every pair")
    parser.add_argument("--group-seeds", action="store_true",
                        help="add a row per recipe run with several seeds: mean ± std over seeds (n), after its runs")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="also draw metric vs trainable parameters per task (log x) to FILE.png, and the "
                             "points drawn to FILE.json")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help="bootstrap resamples of the test utterances (intervals of WER/CER/F1, paired tests)")
    parser.add_argument("--bootstrap-seed", type=int, default=SEED,
                        help="seed of the bootstrap's numpy generator (the same seed gives the same intervals)")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE, help="interval coverage (0.95 = 95%%)")
    parser.add_argument("--no-intervals", action="store_true",
                        help="skip the per-utterance statistics (the table as before: point estimates only)")


def run(args) -> int:
    from pathlib import Path

    from s3prl_speechprompt.report import build_report, render, statistics_note

    if args.resamples < 1:
        raise ConfigError(f"--resamples must be >= 1, got {args.resamples}")
    if not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must be in (0, 1), got {args.confidence}")
    if args.reference and not args.compare:
        raise ConfigError("--reference needs --compare")
    stat = dict(resamples=args.resamples, seed=args.bootstrap_seed, confidence=args.confidence)
    rows = build_report(args.expdirs, references=args.references, intervals=not args.no_intervals,
                        group_seeds=args.group_seeds, **stat)
    comparisons, skipped = None, []
    if args.compare:
        from s3prl_speechprompt.report.compare import compare_runs
        # different test sets (TestSetMismatch), an unknown --reference (ConfigError): one line, no number
        comparisons, skipped = compare_runs(rows, reference=args.reference, **stat)
        for why in skipped:
            print(f"speechprompt {NAME}: warning: not compared: {why}", file=sys.stderr)
    text = render(rows, args.format, comparisons=comparisons, not_compared=skipped, stats_note=statistics_note(**stat))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if args.plot:
        from s3prl_speechprompt.report.plot import plot_report
        data = plot_report(rows, args.plot)
        drawn = ", ".join(f"{n} {src}" for src, n in data["drawn"].items())
        print(f"speechprompt {NAME}: plot written to {args.plot} ({drawn}; points in "
              f"{Path(args.plot).with_suffix('.json')})", file=sys.stderr)
    missing = [r.expdir for r in rows if r.source == "run" and "directory not found" in r.notes]
    for path in missing:
        print(f"speechprompt {NAME}: warning: {path}: directory not found", file=sys.stderr)
    return 1 if missing else 0
