"""Evaluate a trained experiment on a unit file; the last stdout line is one JSON object.

Writes EXP/<split>_predict.txt and EXP/<split>_truth.txt (``id<TAB>labels`` lines), EXP/<split>_predictions.jsonl
(per-utterance label tokens with ids, read by `speechprompt report` for intervals and paired tests; SpeechPrompt's
id-less unit files get ids ``<stem>-<line number>``), EXP/<split>_scores.json (the JSON printed) and the evaluation in
EXP/run.json (the run record the report reads).
Example: speechprompt evaluate --exp exp/ks_pt --split test ks/test.txt
"""
from __future__ import annotations

from s3prl_speechprompt.commands._json_run import add_threads_argument, log_to_stderr, run_json
from s3prl_speechprompt.engine.evaluate import evaluate
from s3prl_speechprompt.precision import PRECISIONS

NAME = "evaluate"
HELP = "decode + score a trained PT / FT-LM / BLSTM experiment on a unit file"


def add_arguments(parser) -> None:
    parser.add_argument("--exp", required=True, metavar="EXP", help="directory written by `speechprompt train`")
    parser.add_argument("--split", required=True, nargs=2, metavar=("NAME", "UNITS"),
                        help="split name (used in output file names) and its unit file")
    parser.add_argument("--batch-size", type=int, default=64, help="utterances decoded together")
    parser.add_argument("--ulm", metavar="DIR", default=None,
                        help="unit-LM directory, if it moved since training (its weights must be the same)")
    add_threads_argument(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="autocast of the unit LM while decoding: fp32 (default), bf16 or fp16")


def run(args) -> int:
    name, path = args.split
    return run_json(lambda: evaluate(args.exp, name, path, batch_size=args.batch_size, ulm=args.ulm,
                                     threads=args.threads, log=log_to_stderr, precision=args.precision))
