"""Predict with trained prompts: audio files in, one JSON line per (file, checkpoint) out.

    speechprompt predict --ckpt runs/ks_pt/dev-best.ckpt --ckpt runs/ic_pt/dev-best.ckpt a.wav b.wav --out preds.jsonl
    speechprompt predict --ckpt runs/ks_pt/dev-best.ckpt --list wavs.txt

Checkpoints are s3prl runner checkpoints of ``-d speechprompt_<task>`` (PT) or ``_ftlm`` runs. The upstream
and the frozen unit LM are loaded once per (upstream, layer, LM fingerprint); each file's units are
computed once and decoded with every checkpoint's prompts in one mixed-task LM pass (prompt/bank.py).
Checkpoints on different LMs or upstreams are served as separate groups (listed on stderr); an FT-LM
checkpoint is its own group (it carries its own LM). A PT checkpoint whose LM (``downstream_expert.ulm``,
or ``--ulm``) is not the one it was trained on is an error.

JSON line: ``file``, ``checkpoint``, ``task``, ``method`` (pt | ftlm), ``prediction`` (the label string, as
in ``<split>_predict.txt``), ``labels`` (label tokens; null = a code no label maps to), ``score`` (natural-log
probability of the predicted label sequence incl. ``</s>``; for one-unit class labels, log of the class
probability), ``finished`` (false = the decoding budget ran out before ``</s>``), ``units`` (the file's
deduplicated units: the LM source length).
"""
import json
import sys

from s3prl_speechprompt.errors import ConfigError

NAME = "predict"
HELP = "predict labels for audio files with one or more trained prompt checkpoints (JSON lines)"


def add_arguments(parser):
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files (any soundfile format; resampled "
                        "to 16 kHz mono like the corpora)")
    parser.add_argument("--ckpt", action="append", required=True, metavar="CKPT",
                        help="s3prl runner checkpoint (dev-best.ckpt) of a speechprompt PT / FT-LM run; repeat for "
                             "several tasks")
    parser.add_argument("--list", metavar="TXT", help="file with one audio path per line (relative to the list)")
    parser.add_argument("--out", default="-", metavar="JSONL", help="output file ('-' = stdout)")
    parser.add_argument("--ulm", default=None, metavar="DIR",
                        help="unit LM to use instead of each checkpoint's downstream_expert.ulm (e.g. a copy on "
                             "this machine); its fingerprint must still match")
    parser.add_argument("--bad-audio", choices=("error", "skip"), default="error",
                        help="unusable audio files: error (stop before predicting, naming all) or skip (listed on "
                             "stderr)")
    parser.add_argument("--batch-size", type=int, default=16, help="files per batch (rows = files x checkpoints)")
    parser.add_argument("--device", default="cpu", help="torch device for the upstream and the LM")


def run(args) -> int:
    from tqdm import tqdm

    from s3prl_speechprompt.serve import LMCache, Predictor, batches, check_files, load_task_checkpoint, read_file_list
    from s3prl_speechprompt.tasks.audio import read_audio_file

    files = list(args.files) + (read_file_list(args.list) if args.list else [])
    if not files:
        raise ConfigError("no audio files: give FILE arguments or --list")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    good, bad = check_files(files, args.bad_audio)
    for f, reason in bad:
        print(f"[speechprompt predict] skipped {f}: {reason}", file=sys.stderr)
    lms = LMCache()
    tasks = [load_task_checkpoint(c, lms, ulm=args.ulm, device=args.device) for c in args.ckpt]
    predictor = Predictor(tasks, device=args.device)
    for line in predictor.describe():
        print(f"[speechprompt predict] {line}", file=sys.stderr)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    n = 0
    try:
        with tqdm(total=len(good), unit="file", desc="predict", file=sys.stderr) as bar:
            for chunk in batches(good, args.batch_size):
                wavs = [read_audio_file(f) for f in chunk]
                for p in predictor.predict(chunk, wavs):
                    out.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
                    n += 1
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"[speechprompt predict] {n} predictions ({len(good)} files x {len(tasks)} checkpoints"
          + (f"; {len(bad)} files skipped" if bad else "") + ")"
          + ("" if args.out == "-" else f" -> {args.out}"), file=sys.stderr)
    return 0
