"""Write a small synthetic SUPERB corpus (espeak-ng speech) in the real on-disk format.

ks: Speech Commands v0.01 -> OUT/speech_commands_v0.01 (+ _background_noise_) and
    OUT/speech_commands_test_set_v0.01 (pass both to s3prl's speech_commands downstream).
ic: Fluent Speech Commands -> OUT/fluent_speech_commands_dataset/{wavs,data/*_data.csv}.

The same --seed always gives the same files. The corpus is built in a temporary directory next to OUT
and moved into place only when complete.
"""
import argparse
import sys

NAME = "synth"
HELP = "write a synthetic KS (Speech Commands) or IC (Fluent Speech Commands) corpus"


def add_arguments(parser):
    parser.add_argument("corpus", choices=["ks", "ic"],
                        help="ks = Speech Commands v0.01 (keyword spotting), ic = Fluent Speech Commands (intents)")
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
    parser.add_argument("--force", action="store_true",
                        help="write even if --out is not empty, replacing the corpus directories already there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from s3prl_speechprompt.synth import corpora
    from s3prl_speechprompt.synth.tts import EspeakUnavailable

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
