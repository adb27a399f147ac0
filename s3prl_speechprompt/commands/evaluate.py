"""Evaluate a trained experiment on a unit file; the last stdout line is one JSON object.

Writes EXP/<split>_predict.txt and EXP/<split>_truth.txt (``id<TAB>labels`` lines).
Example: speechprompt evaluate --exp exp/ks_pt --split test ks/test.txt
"""
from __future__ import annotations

import json
import sys

from s3prl_speechprompt.engine.evaluate import evaluate
from s3prl_speechprompt.precision import PRECISIONS

NAME = "evaluate"
HELP = "decode + score a trained PT / FT-LM / BLSTM experiment on a unit file"


def add_arguments(parser) -> None:
    parser.add_argument("--exp", required=True, metavar="EXP", help="directory written by `speechprompt train`")
    parser.add_argument("--split", required=True, nargs=2, metavar=("NAME", "UNITS"),
                        help="split name (used in output file names) and its unit file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ulm", metavar="DIR", default=None,
                        help="unit-LM directory, if it moved since training (its weights must be the same)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="autocast of the unit LM while decoding: fp32 (default), bf16 or fp16")


def run(args) -> int:
    name, path = args.split
    try:
        result = evaluate(args.exp, name, path, batch_size=args.batch_size, ulm=args.ulm, threads=args.threads,
                          log=lambda m: print(m, file=sys.stderr), precision=args.precision)
    except (ValueError, OSError, KeyError) as e:
        print(f"speechprompt {NAME}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
