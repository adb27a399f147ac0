"""Compare finished s3prl experiments (PT, FT-LM, SUPERB baselines; any tasks) side by side with the
published SpeechPrompt and SUPERB numbers, in one table.

EXPDIR is what s3prl's runner wrote (-p/-n): args_*.yaml, config_*.yaml, log.log,
speechprompt_info.json, tensorboard events, *.ckpt. A folder holding several experiment directories
(e.g. result/downstream) expands to all of them. Partial runs are listed with what is missing.
Example: speechprompt report result/downstream/ks_pt result/downstream/ks_linear --format md
"""
from __future__ import annotations

import sys

NAME = "report"
HELP = "side-by-side table of s3prl experiment dirs (PT / FT-LM / baselines) and published numbers"


def add_arguments(parser) -> None:
    parser.add_argument("expdirs", nargs="+", metavar="EXPDIR", help="s3prl experiment directories")
    parser.add_argument("--format", default="md", choices=["md", "csv", "json"], help="output format")
    parser.add_argument("--references", default="tasks", choices=["tasks", "all", "none"],
                        help="published rows: for the runs' tasks, all of them, or none")
    parser.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of stdout")


def run(args) -> int:
    from pathlib import Path

    from s3prl_speechprompt.report import build_report, render

    rows = build_report(args.expdirs, references=args.references)
    text = render(rows, args.format)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    missing = [r.expdir for r in rows if r.source == "run" and "directory not found" in r.notes]
    for path in missing:
        print(f"speechprompt {NAME}: warning: {path}: directory not found", file=sys.stderr)
    return 1 if missing else 0
