"""Write a small synthetic SUPERB corpus (espeak-ng speech) in the real on-disk format.

ks: Speech Commands v0.01 -> OUT/speech_commands_v0.01 (+ _background_noise_) and
    OUT/speech_commands_test_set_v0.01 (pass both to s3prl's speech_commands downstream).
ic: Fluent Speech Commands -> OUT/fluent_speech_commands_dataset/{wavs,data/*_data.csv}.
asr: LibriSpeech -> OUT/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/ + SPEAKERS.TXT.
sf: Audio SNIPS -> OUT/SNIPS/{train,valid,test}/<Speaker>-snips-<split>-<i>.wav, all.iob.snips.txt, slots.txt.
er, sid, csv: IEMOCAP, VoxCeleb1 (identification split) and a generic CSV corpus (see commands/_synth_cls.py).

The same --seed always gives the same files. The corpus is built in a temporary directory next to OUT
and moved into place only when complete.
"""
import argparse
import sys

from s3prl_speechprompt.commands import _synth_cls

NAME = "synth"
HELP = ("write a synthetic KS (Speech Commands), IC (Fluent Speech Commands), ASR (LibriSpeech), SF (SNIPS), "
        "ER (IEMOCAP), SID (VoxCeleb1) or CSV corpus")


def add_arguments(parser):
    parser.add_argument("corpus", choices=["ks", "ic", "asr", "sf"] + list(_synth_cls.CORPORA),
                        help="ks = Speech Commands v0.01 (keyword spotting), ic = Fluent Speech Commands (intents), "
                             "asr = LibriSpeech, sf = Audio SNIPS (slot filling), " + _synth_cls.HELP)
    parser.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS,
                        help="output directory (created; must be empty unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give identical corpora")
    parser.add_argument("--per-class", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="ks only: training utterances per command word (default 40; dev and test get N//4 "
                             "per class, each non-command word a fifth of N)")
    parser.add_argument("--per-intent", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="ic only: training utterances per intent (default 10; valid and test get 30%% of N)")
    parser.add_argument("--intents", type=int, default=argparse.SUPPRESS, metavar="K",
                        help="ic only: number of real FSC intents to use, 1..31 (default 22, which covers every "
                             "action/object/location value)")
    parser.add_argument("--utterances", default=argparse.SUPPRESS, metavar="TRAIN,DEV,TEST",
                        help="asr only: utterances per split (default 120,30,30)")
    parser.add_argument("--vocabulary", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="asr only: use the first N words of the built-in 40-word vocabulary")
    parser.add_argument("--words", default=argparse.SUPPRESS, metavar="MIN,MAX",
                        help="asr only: words per sentence (default 1,6)")
    parser.add_argument("--texts", default=argparse.SUPPRESS, metavar="TRAIN,VALID,TEST",
                        help="sf only: distinct texts per split, each read by every speaker of the split "
                             "(default 40,8,8)")
    parser.add_argument("--templates", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="sf only: use the first N of the 10 built-in sentence templates (fewer slot types)")
    parser.add_argument("--speakers", default=argparse.SUPPRESS, metavar="TRAIN,DEV,TEST",
                        help="asr/sf only: speakers per split (asr default 6,2,2; sf default 2,1,1, at most 8,4,4 "
                             "with SUPERB's SNIPS speaker names)")
    _synth_cls.add_arguments(parser)
    parser.add_argument("--force", action="store_true",
                        help="write even if --out is not empty, replacing the corpus directories already there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from s3prl_speechprompt.synth import corpora
    from s3prl_speechprompt.synth.tts import EspeakUnavailable

    if args.corpus in _synth_cls.CORPORA or _synth_cls.given(args):
        return _synth_cls.run(args)
    if args.corpus in ("asr", "sf"):
        return _run_seq(args)
    seq_only = [o for o in ("utterances", "vocabulary", "words", "texts", "templates", "speakers") if hasattr(args, o)]
    if seq_only:
        print(f"error: --{seq_only[0]} applies to `synth asr`/`synth sf` only", file=sys.stderr)
        return 2
    per_class = getattr(args, "per_class", None)
    per_intent = getattr(args, "per_intent", None)
    intents = getattr(args, "intents", None)
    if args.corpus == "ks" and (per_intent is not None or intents is not None):
        print("error: --per-intent/--intents apply to `synth ic` only", file=sys.stderr)
        return 2
    if args.corpus == "ic" and per_class is not None:
        print("error: --per-class applies to `synth ks` only", file=sys.stderr)
        return 2
    try:
        if args.corpus == "ks":
            kw = {} if per_class is None else {"per_class": per_class}
            summary = corpora.make_ks(args.out, seed=args.seed, force=args.force, progress=not args.quiet, **kw)
        else:
            kw = {}
            if per_intent is not None:
                kw["per_intent"] = per_intent
            if intents is not None:
                kw["num_intents"] = intents
            summary = corpora.make_ic(args.out, seed=args.seed, force=args.force, progress=not args.quiet, **kw)
    except (FileExistsError, ValueError, EspeakUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    print(f"wrote synthetic {args.corpus.upper()} corpus in {summary['seconds']:.1f} s (seed {summary['seed']})")
    if args.corpus == "ks":
        print(f"  speech_commands_root:      {summary['root']}")
        print(f"  speech_commands_test_root: {summary['test_root']}")
        classes = list(summary["counts"]["train"])
        width = max(len(c) for c in classes)
        print(f"  {'class':<{width}}  train  dev  test")
        for c in classes:
            n = [summary["counts"][s][c] for s in ("train", "dev", "test")]
            print(f"  {c:<{width}}  {n[0]:5d} {n[1]:4d} {n[2]:5d}")
    else:
        print(f"  file_path: {summary['root']}")
        for split, c in summary["counts"].items():
            print(f"  {split:<5}: {c['utterances']} utterances, {c['speakers']} speakers, {c['intents']} intents")
    print("  totals: " + ", ".join(f"{s} {n}" for s, n in summary["totals"].items()))
    return 0


def _ints(text, n, flag):
    parts = [int(x) for x in str(text).split(",")]
    if len(parts) != n:
        raise ValueError(f"--{flag} takes {n} comma-separated integers, got {text!r}")
    return tuple(parts)


def _run_seq(args):
    from s3prl_speechprompt.synth import seq_corpora
    from s3prl_speechprompt.synth.tts import EspeakUnavailable

    allowed = {"asr": ("utterances", "vocabulary", "words", "speakers"), "sf": ("texts", "templates", "speakers")}[args.corpus]
    wrong = [o for o in ("per_class", "per_intent", "intents", "utterances", "vocabulary", "words", "texts",
                         "templates", "speakers") if hasattr(args, o) and o not in allowed]
    if wrong:
        print(f"error: --{wrong[0].replace('_', '-')} does not apply to `synth {args.corpus}`", file=sys.stderr)
        return 2
    try:
        kw = {}
        if hasattr(args, "speakers"):
            kw["speakers"] = _ints(args.speakers, 3, "speakers")
        if args.corpus == "asr":
            if hasattr(args, "utterances"):
                kw["utterances"] = _ints(args.utterances, 3, "utterances")
            if hasattr(args, "words"):
                kw["words"] = _ints(args.words, 2, "words")
            if hasattr(args, "vocabulary"):
                kw["vocabulary"] = args.vocabulary
            summary = seq_corpora.make_asr(args.out, seed=args.seed, force=args.force, progress=not args.quiet, **kw)
        else:
            if hasattr(args, "texts"):
                kw["texts"] = _ints(args.texts, 3, "texts")
            if hasattr(args, "templates"):
                kw["templates"] = args.templates
            summary = seq_corpora.make_sf(args.out, seed=args.seed, force=args.force, progress=not args.quiet, **kw)
    except (FileExistsError, ValueError, EspeakUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote synthetic {args.corpus.upper()} corpus in {summary['seconds']:.1f} s (seed {summary['seed']})")
    if args.corpus == "asr":
        print(f"  libri_root: {summary['root']}")
        for split, c in summary["counts"].items():
            print(f"  {split:<15}: {c['utterances']} utterances, {c['speakers']} speakers, "
                  f"longest transcript {c['longest_transcript']} characters")
    else:
        print(f"  path: {summary['root']}")
        for split, c in summary["counts"].items():
            print(f"  {split:<5}: {c['texts']} texts x {c['speakers']} speakers ({', '.join(summary['speakers'][split])})")
        print(f"  slot types: {', '.join(summary['slot_types'])}")
    print("  totals: " + ", ".join(f"{s} {n}" for s, n in summary["totals"].items()))
    return 0
