"""Pretrain a GSLM-style unit LM on the units of a unit file (labels ignored), on CPU.

Writes DIR/checkpoint_best.pt, DIR/checkpoint_last.pt and DIR/dict.txt in fairseq's format.
Example: speechprompt pretrain-ulm --train ks/train.txt --valid ks/valid.txt --out ulm_ks
"""
from __future__ import annotations

from s3prl_speechprompt.commands._json_run import add_threads_argument, log_to_stderr, run_json
from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
from s3prl_speechprompt.runlock import RunLock
from s3prl_speechprompt.ulm.model import ARCHITECTURES

NAME = "pretrain-ulm"
HELP = "pretrain a unit LM (GSLM recipe, scaled down) on a unit file's source units"


def add_arguments(parser) -> None:
    d = PretrainConfig()
    parser.add_argument("--train", required=True, metavar="UNITS", help="unit file (SpeechPrompt 'units <s> label' or TSV)")
    parser.add_argument("--valid", metavar="UNITS", default=None, help="validation unit file (selects checkpoint_best)")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default=d.arch, help="LM architecture")
    parser.add_argument("--dict", dest="dict_path", metavar="DICT_TXT", default=None,
                        help="LM dictionary (e.g. the GSLM/peer dict.txt; CPC's is frequency ordered); "
                             "default: the units seen in --train in natural order")
    parser.add_argument("--max-updates", type=int, default=d.max_updates, help="optimizer updates to train for")
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens, help="tokens per batch")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (inverse-sqrt schedule)")
    parser.add_argument("--warmup", type=int, default=d.warmup_updates, help="linear warmup updates")
    parser.add_argument("--dropout", type=float, default=d.dropout,
                        help="dropout and attention dropout of the LM while pretraining (GSLM: 0.1)")
    parser.add_argument("--valid-interval", type=int, default=d.valid_interval, help="updates between checkpoints")
    parser.add_argument("--seed", type=int, default=d.seed, help="seeds the initial weights, dropout and batch order")
    add_threads_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="LM directory to write: checkpoint_best.pt / checkpoint_last.pt (fairseq format) "
                             "+ dict.txt")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint_last.pt if present")


def run(args) -> int:
    cfg = PretrainConfig(arch=args.arch, max_updates=args.max_updates, max_tokens=args.max_tokens, lr=args.lr,
                         warmup_updates=args.warmup, dropout=args.dropout, valid_interval=args.valid_interval,
                         seed=args.seed, threads=args.threads)

    def work():
        with RunLock(args.out, "speechprompt pretrain-ulm"):     # one job per --out
            return pretrain_ulm(args.train, args.out, valid_path=args.valid, dict_path=args.dict_path, cfg=cfg,
                                resume=args.resume, log=log_to_stderr)

    return run_json(work)
