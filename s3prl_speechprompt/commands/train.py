"""Train a task from unit files: prompt tuning (pt), full LM fine-tuning (ftlm) or the unit BLSTM (blstm).

Writes EXP/config.json, EXP/verbal.json, EXP/prompt.pt (PT: prompts only; FT-LM: the whole LM, also
as a fairseq checkpoint in EXP/ftlm_ulm/) or EXP/model.pt (BLSTM), EXP/checkpoint_last.pt for --resume and EXP/run.json
(the run record `speechprompt report` reads).
Example: speechprompt train --task ks --train ks/train.txt --valid ks/valid.txt --ulm ulm_ks --method pt --out exp/ks_pt
"""
from __future__ import annotations

from s3prl_speechprompt.commands._json_run import add_threads_argument, log_to_stderr, run_json
from s3prl_speechprompt.engine.methods import train
from s3prl_speechprompt.engine.trainer import LR_SCHEDULES, METHODS, TrainConfig
from s3prl_speechprompt.precision import PRECISIONS
from s3prl_speechprompt.runlock import RunLock
from s3prl_speechprompt.prompt.prefix import INITS
from s3prl_speechprompt.prompt.verbalizer import METHODS as VERBALIZERS

NAME = "train"
HELP = "train PT / FT-LM / unit-BLSTM from unit files, early-stopping on the dev loss"


def add_arguments(parser) -> None:
    d = TrainConfig()
    parser.add_argument("--task", required=True, help="task name (ks, ic, ...; any name works for classification "
                                                       "unit files, scored by exact match)")
    parser.add_argument("--train", required=True, metavar="UNITS", help="training unit file (labels after <s>)")
    parser.add_argument("--valid", required=True, metavar="UNITS", help="dev unit file (early stopping)")
    parser.add_argument("--ulm", metavar="DIR", default=None, help="unit-LM directory (checkpoint + dict.txt); "
                                                                   "not used by --method blstm")
    parser.add_argument("--method", choices=METHODS, default=d.method,
                        help="pt: deep prompts on the frozen LM; ftlm: the whole LM trained; blstm: the unit BLSTM "
                             "baseline (no LM)")
    parser.add_argument("--prompt-length", type=int, default=None, help="L deep-prompt positions (default: the task's)")
    parser.add_argument("--verbalizer", choices=VERBALIZERS, default=d.verbalizer,
                        help="label -> unit code: freq (v1: i-th frequent label -> i-th frequent unit), random, "
                             "identity, multi (k units per label), learnable (v2: a linear head on the LM output)")
    parser.add_argument("--lr", type=float, default=None, help="default: PT 5e-3, FT-LM 5e-4*sqrt(1024/d), BLSTM 1e-3")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                        help="paper: PT constant, FT-LM inverse-sqrt (the reference's); cosine: the same warmup, "
                             "then decay to 0 at --max-updates (needs --max-updates)")
    parser.add_argument("--warmup", type=int, default=None, help="FT-LM warmup updates (default min(4000, epoch/2))")
    parser.add_argument("--dropout", type=float, default=None, help="LM dropout (default PT 0, FT-LM 0.1)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="utterances per update")
    parser.add_argument("--max-epochs", type=int, default=d.max_epochs,
                        help="stop after this many passes over --train (whichever of the limits comes first)")
    parser.add_argument("--patience", type=int, default=d.patience, help="validations without dev-loss improvement")
    parser.add_argument("--max-updates", type=int, default=d.max_updates, help="0 = no limit")
    parser.add_argument("--valid-interval", type=int, default=d.valid_interval, help="updates between validations "
                                                                                     "(0 = once per epoch)")
    parser.add_argument("--clip-norm", type=float, default=d.clip_norm,
                        help="clip the trainable parameters' gradient norm to this (0 = no clipping)")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                        help="how the unit LM runs: fp32 (default, the reference), bf16 or fp16 autocast (fp16 with "
                             "a grad scaler); prompts, heads and optimizer state stay fp32")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seeds prompt initialisation, the random verbalizer, dropout and the batch order "
                             "(runs differing only here are grouped by `speechprompt report --group-seeds`)")
    add_threads_argument(parser)
    parser.add_argument("--prompt-reparam", type=int, default=d.prompt_reparam, metavar="HIDDEN",
                        help="PT: train the prompts as start + MLP(embedding) with this hidden size (Li & Liang "
                             "2021); prompt.pt stores them collapsed (same size as plain prompts). 0 = plain")
    parser.add_argument("--prompt-init", choices=INITS, default=d.prompt_init,
                        help="PT: normal = N(0, 1) prompts (the reference's); activations = the frozen LM's own "
                             "key/value inputs at sampled unit positions of training utterances")
    parser.add_argument("--blstm-hidden", type=int, default=d.blstm_hidden,
                        help="--method blstm: hidden units per direction of each of its 2 BLSTM layers")
    parser.add_argument("--out", required=True, metavar="EXP", help="experiment directory to write (see above)")
    parser.add_argument("--resume", action="store_true", help="continue from EXP/checkpoint_last.pt if present")


def run(args) -> int:
    def work():
        cfg = TrainConfig(task=args.task, method=args.method, prompt_length=args.prompt_length,
                          verbalizer=args.verbalizer, lr=args.lr, lr_schedule=args.lr_schedule,
                          warmup=args.warmup, dropout=args.dropout,
                          batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience,
                          max_updates=args.max_updates, valid_interval=args.valid_interval,
                          clip_norm=args.clip_norm, precision=args.precision, seed=args.seed, threads=args.threads,
                          blstm_hidden=args.blstm_hidden, prompt_reparam=args.prompt_reparam,
                          prompt_init=args.prompt_init)
        with RunLock(args.out, "speechprompt train"):     # one job per --out
            return train(args.train, args.valid, args.ulm, args.out, cfg, resume=args.resume, log=log_to_stderr)

    return run_json(work)
