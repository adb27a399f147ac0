"""Predict with trained tasks: audio files (or a unit file) in, one JSON line per (file, run) out.

    speechprompt predict --ckpt runs/ks_pt/dev-best.ckpt --ckpt runs/ic_pt/dev-best.ckpt a.wav b.wav --out preds.jsonl
    speechprompt predict --ckpt runs/ks_pt/dev-best.ckpt --list wavs.txt
    speechprompt predict --ckpt exp/ks_pt --ckpt runs/ks_pt/dev-best.ckpt --units ks/test.tsv

``--ckpt`` is any trained PT / FT-LM run (:meth:`s3prl_speechprompt.trained.TrainedTask.find`): an s3prl runner
checkpoint of ``-d speechprompt_<task>`` / ``_ftlm``, a run directory holding ``trained_task/`` (the runner's
expdir, a ``speechprompt train`` EXP) or an older ``speechprompt train`` directory. Runs trained from audio take
audio files (each file's units made with the run's own upstream and k-means) or ``--units``; runs trained on unit
files take ``--units`` (a unit file as ``speechprompt evaluate`` reads; ``file`` is then the utterance id). Every
run on the same LM weights decodes in one mixed-task LM pass (prompt/bank.py), whatever front end trained it; runs
on other LMs are separate groups (listed on stderr); an FT-LM run is its own group (it carries its own LM). A run
whose LM (the one it recorded, or ``--ulm``) is not the one it was trained on is an error.

JSON line: ``file``, ``checkpoint``, ``task``, ``method`` (pt | ftlm), ``prediction`` (the label string, as
in ``<split>_predict.txt``), ``labels`` (label tokens; null = a code no label maps to), ``score`` (natural-log
probability of the predicted label sequence incl. ``</s>``; for one-unit class labels, log of the class
probability), ``finished`` (false = the decoding budget ran out before ``</s>``), ``units`` (the file's
deduplicated units: the LM source length).

``--out FILE`` is only ever complete: lines go to ``FILE.partial`` (fsynced per batch) and it is renamed to
``FILE`` at the end. A run that is killed leaves ``FILE.partial``; the same command again continues after its last
complete file (the job's identity - runs, inputs, device - is kept in ``FILE.partial.json``; another job's partial
file is discarded), so the finished file has every (file, run) line once, as an uninterrupted run writes it.
"""
import hashlib
import json
import sys
from pathlib import Path

from s3prl_speechprompt.atomic import PartialLines
from s3prl_speechprompt.errors import ConfigError

NAME = "predict"
HELP = "predict labels for audio files (or a unit file) with one or more trained prompt runs (JSON lines)"


def add_arguments(parser):
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files (any soundfile format; resampled "
                        "to 16 kHz mono like the corpora)")
    parser.add_argument("--ckpt", action="append", required=True, metavar="CKPT",
                        help="a speechprompt PT / FT-LM run: s3prl runner checkpoint (dev-best.ckpt), a run directory "
                             "with trained_task/, or a `speechprompt train` directory; repeat for several tasks")
    parser.add_argument("--list", metavar="TXT", help="file with one audio path per line (relative to the list)")
    parser.add_argument("--units", metavar="UNITS", help="a unit file (as `speechprompt evaluate` reads) instead of "
                        "audio: its utterances' units are decoded by every run")
    parser.add_argument("--out", default="-", metavar="JSONL",
                        help="output file ('-' = stdout). Written as JSONL.partial and renamed when complete; an "
                             "interrupted run's partial file is continued by the same command (no duplicates)")
    parser.add_argument("--ulm", default=None, metavar="DIR",
                        help="unit LM to use instead of each run's recorded LM (e.g. a copy on this machine); its "
                             "weights fingerprint must still match")
    parser.add_argument("--bad-audio", choices=("error", "skip"), default="error",
                        help="unusable audio files: error (stop before predicting, naming all) or skip (listed on "
                             "stderr)")
    parser.add_argument("--batch-size", type=int, default=16, help="files per batch (rows = files x checkpoints)")
    parser.add_argument("--device", default="cpu", help="torch device for the upstream and the LM")


def run(args) -> int:
    from tqdm import tqdm

    from s3prl_speechprompt.lm_ref import LMCache
    from s3prl_speechprompt.serve import Predictor, check_files, read_file_list
    from s3prl_speechprompt.trained import TrainedTask

    files = list(args.files) + (read_file_list(args.list) if args.list else [])
    if args.units and files:
        raise ConfigError("give audio files (FILE arguments / --list) or --units, not both")
    if not files and not args.units:
        raise ConfigError("no input: give audio FILE arguments or --list, or a unit file with --units")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    bad = []
    if args.units:
        from s3prl_speechprompt.engine.data import check_in_dictionary, read_records
        records = read_records(args.units, "--units")
        names, inputs, what = [r.id for r in records], [r.units for r in records], "utterances"
    else:
        names, bad = check_files(files, args.bad_audio)
        inputs, what = names, "files"
    for f, reason in bad:
        print(f"[speechprompt predict] skipped {f}: {reason}", file=sys.stderr)
    lms = LMCache()
    tasks = [TrainedTask.find(c).build(lms, ulm=args.ulm, device=args.device, name=str(Path(c))) for c in args.ckpt]
    if args.units:
        for t in tasks:
            check_in_dictionary(args.units, records, t.dictionary)
    predictor = Predictor(tasks, device=args.device, unit_input=bool(args.units))
    for line in predictor.describe():
        print(f"[speechprompt predict] {line}", file=sys.stderr)
    out, start = None, 0
    if args.out != "-":
        out = PartialLines(args.out, _job_identity(args, tasks, names), group=len(tasks))
        start = out.open()
        if start:
            print(f"[speechprompt predict] continuing the interrupted {out.partial}: {start} of {len(names)} {what} "
                  f"already predicted", file=sys.stderr)
    n = start * len(tasks)
    try:
        with tqdm(total=len(names), initial=start, unit=what[:-1], desc="predict", file=sys.stderr) as bar:
            for lo in range(start, len(names), args.batch_size):
                chunk = names[lo:lo + args.batch_size]
                if args.units:
                    batch = inputs[lo:lo + args.batch_size]
                else:
                    from s3prl_speechprompt.tasks.audio import read_audio_file
                    batch = [read_audio_file(f) for f in chunk]
                lines = [json.dumps(p.to_json(), ensure_ascii=False) for p in predictor.predict(chunk, batch)]
                if out is None:
                    print("".join(line + "\n" for line in lines), end="", flush=True)
                else:
                    out.write(lines)
                n += len(lines)
                bar.update(len(chunk))
        if out is not None:
            out.finish()
    finally:
        if out is not None:
            out.close()
    print(f"[speechprompt predict] {n} predictions ({len(names)} {what} x {len(tasks)} checkpoints"
          + (f"; {len(bad)} files skipped" if bad else "") + ")"
          + ("" if args.out == "-" else f" -> {args.out}"), file=sys.stderr)
    return 0


def _job_identity(args, tasks, names) -> dict:
    """What makes a rerun the same job, so it may continue an interrupted ``--out``: the runs (their trained state,
    LM and decoding), the inputs in order and the settings that change a prediction."""
    import torch
    h = hashlib.sha256()
    for t in tasks:
        h.update(f"{t.lm_fingerprint}|{t.trained.decoding}|{t.trained.task}|{t.trained.method}".encode())
        for key in sorted(t.trained.state):
            h.update(key.encode())
            h.update(t.trained.state[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"runs": h.hexdigest(), "checkpoints": [str(c) for c in args.ckpt],
            "inputs": hashlib.sha256("\n".join(names).encode()).hexdigest(), "units": args.units,
            "device": args.device}
