"""The ``er``, ``sid`` and ``csv`` corpora of ``speechprompt synth`` (options and run; see commands/synth.py).

er: IEMOCAP -> OUT/IEMOCAP/Session1..5/{sentences/wav,dialog/EmoEvaluation} (prosody variants as emotions).
sid: VoxCeleb1 -> OUT/VoxCeleb1/{dev,test}/wav/idXXXXX/<video>/NNNNN.wav + OUT/VoxCeleb1/iden_split.txt.
csv: OUT/csv_corpus/{wavs/,all.csv,train.csv,dev.csv,test.csv} for the generic csv task.
"""
import argparse
import sys

CORPORA = ("er", "sid", "csv")
HELP = "er = IEMOCAP (emotions), sid = VoxCeleb1 (speaker identification), csv = a CSV classification corpus"
# option dest -> corpora it applies to
OPTIONS = {"per_emotion": ("er",), "num_speakers": ("sid",), "per_speaker": ("sid",), "per_label": ("csv",),
           "colours": ("csv",), "shapes": ("csv",)}
# options of the other corpora (commands/synth.py) that do not apply here
FOREIGN = ("per_class", "per_intent", "intents", "utterances", "vocabulary", "words", "texts", "templates",
           "speakers")


def add_arguments(parser):
    s = argparse.SUPPRESS
    parser.add_argument("--per-emotion", type=int, default=s, metavar="N",
                        help="er only: utterances per emotion in each of the 10 dialogs (default 4; hap and exc "
                             "share N, fru is written and dropped by the reader)")
    parser.add_argument("--num-speakers", type=int, default=s, metavar="N", help="sid only: speakers (default 30)")
    parser.add_argument("--per-speaker", default=s, metavar="TRAIN,DEV,TEST",
                        help="sid only: utterances per speaker and split (default 8,2,2)")
    parser.add_argument("--per-label", default=s, metavar="TRAIN,DEV,TEST",
                        help="csv only: utterances per colour+shape class and split (default 12,3,3)")
    parser.add_argument("--colours", type=int, default=s, metavar="N", help="csv only: colours, 1..6 (default 3)")
    parser.add_argument("--shapes", type=int, default=s, metavar="N", help="csv only: shapes, 1..6 (default 3)")


def given(args):
    return [o for o in OPTIONS if hasattr(args, o)]


def _ints(text, n, flag):
    parts = [int(x) for x in str(text).split(",")]
    if len(parts) != n:
        raise ValueError(f"--{flag} takes {n} comma-separated integers, got {text!r}")
    return tuple(parts)


def run(args):
    from s3prl_speechprompt.synth import cls_corpora
    from s3prl_speechprompt.synth.tts import EspeakUnavailable

    for o in given(args):
        if args.corpus not in OPTIONS[o]:
            print(f"error: --{o.replace('_', '-')} applies to `synth {'/'.join(OPTIONS[o])}` only", file=sys.stderr)
            return 2
    foreign = [o for o in FOREIGN if hasattr(args, o)]
    if foreign:
        print(f"error: --{foreign[0].replace('_', '-')} does not apply to `synth {args.corpus}`", file=sys.stderr)
        return 2
    common = dict(seed=args.seed, force=args.force, progress=not args.quiet)
    try:
        if args.corpus == "er":
            kw = {"per_emotion": args.per_emotion} if hasattr(args, "per_emotion") else {}
            summary = cls_corpora.make_er(args.out, **common, **kw)
        elif args.corpus == "sid":
            kw = {}
            if hasattr(args, "num_speakers"):
                kw["speakers"] = args.num_speakers
            if hasattr(args, "per_speaker"):
                kw["per_speaker"] = _ints(args.per_speaker, 3, "per-speaker")
            summary = cls_corpora.make_sid(args.out, **common, **kw)
        else:
            kw = {k: getattr(args, k) for k in ("colours", "shapes") if hasattr(args, k)}
            if hasattr(args, "per_label"):
                kw["per_class"] = _ints(args.per_label, 3, "per-label")
            summary = cls_corpora.make_csv(args.out, **common, **kw)
    except (FileExistsError, ValueError, EspeakUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote synthetic {args.corpus.upper()} corpus in {summary['seconds']:.1f} s (seed {summary['seed']})")
    if args.corpus == "er":
        print(f"  root (datarc.root): {summary['root']}")
        for session, c in summary["counts"].items():
            print(f"  {session}: " + ", ".join(f"{e} {n}" for e, n in c.items()))
    elif args.corpus == "sid":
        print(f"  file_path: {summary['root']}")
        print(f"  meta_data: {summary['meta_data']}")
        print(f"  speakers: {summary['counts']['speakers']}")
    else:
        print(f"  csv: {summary['root']}/all.csv (path,label,split; label_separator '+' for two slots)")
        print(f"  train_csv/dev_csv/test_csv: {summary['root']}/{{train,dev,test}}.csv (path,label_1,label_2)")
        print(f"  classes: {len(summary['classes'])}")
    print("  totals: " + ", ".join(f"{s} {n}" for s, n in summary["totals"].items()))
    return 0
