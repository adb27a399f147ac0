"""Write a small synthetic SUPERB corpus (espeak-ng speech) in the real on-disk format.

ks: Speech Commands v0.01 -> OUT/speech_commands_v0.01 (+ _background_noise_) and
    OUT/speech_commands_test_set_v0.01 (pass both to s3prl's speech_commands downstream).
ic: Fluent Speech Commands -> OUT/fluent_speech_commands_dataset/{wavs,data/*_data.csv}.
asr: LibriSpeech -> OUT/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/ + SPEAKERS.TXT.
sf: Audio SNIPS -> OUT/SNIPS/{train,valid,test}/<Speaker>-snips-<split>-<i>.wav, all.iob.snips.txt, slots.txt.
er: IEMOCAP -> OUT/IEMOCAP/Session1..5/{sentences/wav,dialog/EmoEvaluation} (prosody variants as emotions).
sid: VoxCeleb1 -> OUT/VoxCeleb1/{dev,test}/wav/idXXXXX/<video>/NNNNN.wav + OUT/VoxCeleb1/iden_split.txt.
csv: OUT/csv_corpus/{wavs/,all.csv,train.csv,dev.csv,test.csv} for the generic csv task.

The same --seed always gives the same files. The corpus is built in a temporary directory next to OUT
and moved into place only when complete.
"""
import argparse
import importlib
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from s3prl_speechprompt.errors import ConfigError

NAME = "synth"
HELP = ("write a synthetic KS (Speech Commands), IC (Fluent Speech Commands), ASR (LibriSpeech), SF (SNIPS), "
        "ER (IEMOCAP), SID (VoxCeleb1) or CSV corpus")


@dataclass(frozen=True)
class Option:
    """A corpus-specific flag: which corpora take it, and which keyword of their ``make_*`` it sets."""

    flag: str
    corpora: Tuple[str, ...]
    help: str
    kwarg: Optional[str] = None    # the maker's keyword; default: the flag's name
    ints: int = 0                  # > 0: the value is that many comma-separated integers (a tuple)
    metavar: str = "N"

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def value(self, text):
        if not self.ints:
            return text
        try:
            parts = [int(x) for x in str(text).split(",")]
        except ValueError:
            parts = []
        if len(parts) != self.ints:
            raise ConfigError(f"{self.flag} takes {self.ints} comma-separated integers, got {text!r}")
        return tuple(parts)


OPTIONS = [
    Option("--per-class", ("ks",), "training utterances per command word (default 40; dev and test get N//4 per "
                                   "class, each non-command word a fifth of N)"),
    Option("--per-intent", ("ic",), "training utterances per intent (default 10; valid and test get 30%% of N)"),
    Option("--intents", ("ic",), "number of real FSC intents to use, 1..31 (default 22, which covers every "
                                 "action/object/location value)", kwarg="num_intents", metavar="K"),
    Option("--utterances", ("asr",), "utterances per split (default 120,30,30)", ints=3, metavar="TRAIN,DEV,TEST"),
    Option("--vocabulary", ("asr",), "use the first N words of the built-in 40-word vocabulary"),
    Option("--words", ("asr",), "words per sentence (default 1,6)", ints=2, metavar="MIN,MAX"),
    Option("--texts", ("sf",), "distinct texts per split, each read by every speaker of the split (default 40,8,8)",
           ints=3, metavar="TRAIN,VALID,TEST"),
    Option("--templates", ("sf",), "use the first N of the 10 built-in sentence templates (fewer slot types)"),
    Option("--speakers", ("asr", "sf"), "speakers per split (asr default 6,2,2; sf default 2,1,1, at most 8,4,4 with "
                                        "SUPERB's SNIPS speaker names)", ints=3, metavar="TRAIN,DEV,TEST"),
    Option("--per-emotion", ("er",), "utterances per emotion in each of the 10 dialogs (default 4; hap and exc share "
                                     "N, fru is written and dropped by the reader)"),
    Option("--num-speakers", ("sid",), "speakers (default 30)", kwarg="speakers"),
    Option("--per-speaker", ("sid",), "utterances per speaker and split (default 8,2,2)", ints=3,
           metavar="TRAIN,DEV,TEST"),
    Option("--per-label", ("csv",), "utterances per colour+shape class and split (default 12,3,3)",
           kwarg="per_class", ints=3, metavar="TRAIN,DEV,TEST"),
    Option("--colours", ("csv",), "colours, 1..6 (default 3)"),
    Option("--shapes", ("csv",), "shapes, 1..6 (default 3)"),
]


# ------------------------------------------------------------------------------------------ what each corpus prints
def _ks_lines(s):
    yield f"  speech_commands_root:      {s['root']}"
    yield f"  speech_commands_test_root: {s['test_root']}"
    classes = list(s["counts"]["train"])
    width = max(len(c) for c in classes)
    yield f"  {'class':<{width}}  train  dev  test"
    for c in classes:
        n = [s["counts"][split][c] for split in ("train", "dev", "test")]
        yield f"  {c:<{width}}  {n[0]:5d} {n[1]:4d} {n[2]:5d}"


def _ic_lines(s):
    yield f"  file_path: {s['root']}"
    for split, c in s["counts"].items():
        yield f"  {split:<5}: {c['utterances']} utterances, {c['speakers']} speakers, {c['intents']} intents"


def _asr_lines(s):
    yield f"  libri_root: {s['root']}"
    for split, c in s["counts"].items():
        yield (f"  {split:<15}: {c['utterances']} utterances, {c['speakers']} speakers, "
               f"longest transcript {c['longest_transcript']} characters")


def _sf_lines(s):
    yield f"  path: {s['root']}"
    for split, c in s["counts"].items():
        yield f"  {split:<5}: {c['texts']} texts x {c['speakers']} speakers ({', '.join(s['speakers'][split])})"
    yield f"  slot types: {', '.join(s['slot_types'])}"


def _er_lines(s):
    yield f"  root (datarc.root): {s['root']}"
    for session, c in s["counts"].items():
        yield f"  {session}: " + ", ".join(f"{e} {n}" for e, n in c.items())


def _sid_lines(s):
    yield f"  file_path: {s['root']}"
    yield f"  meta_data: {s['meta_data']}"
    yield f"  speakers: {s['counts']['speakers']}"


def _csv_lines(s):
    yield f"  csv: {s['root']}/all.csv (path,label,split; label_separator '+' for two slots)"
    yield f"  train_csv/dev_csv/test_csv: {s['root']}/{{train,dev,test}}.csv (path,label_1,label_2)"
    yield f"  classes: {len(s['classes'])}"


@dataclass(frozen=True)
class Corpus:
    help: str
    maker: str                     # "<module under s3prl_speechprompt.synth>.<function>"
    lines: Callable                # summary -> the lines printed after "wrote synthetic ..."


CORPORA = {
    "ks": Corpus("Speech Commands v0.01 (keyword spotting)", "corpora.make_ks", _ks_lines),
    "ic": Corpus("Fluent Speech Commands (intents)", "corpora.make_ic", _ic_lines),
    "asr": Corpus("LibriSpeech", "seq_corpora.make_asr", _asr_lines),
    "sf": Corpus("Audio SNIPS (slot filling)", "seq_corpora.make_sf", _sf_lines),
    "er": Corpus("IEMOCAP (emotions)", "cls_corpora.make_er", _er_lines),
    "sid": Corpus("VoxCeleb1 (speaker identification)", "cls_corpora.make_sid", _sid_lines),
    "csv": Corpus("a CSV classification corpus", "cls_corpora.make_csv", _csv_lines),
}


def add_arguments(parser):
    parser.add_argument("corpus", choices=list(CORPORA),
                        help=", ".join(f"{name} = {c.help}" for name, c in CORPORA.items()))
    parser.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS,
                        help="output directory (created; must be empty unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give identical corpora")
    for o in OPTIONS:
        parser.add_argument(o.flag, type=None if o.ints else int, default=argparse.SUPPRESS, metavar=o.metavar,
                            help=f"{'/'.join(o.corpora)} only: {o.help}")
    parser.add_argument("--force", action="store_true",
                        help="write even if --out is not empty, replacing the corpus directories already there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    corpus = CORPORA[args.corpus]
    kwargs = {}
    for o in OPTIONS:
        if not hasattr(args, o.dest):
            continue
        if args.corpus not in o.corpora:
            raise ConfigError(f"{o.flag} does not apply to `synth {args.corpus}` (it is for "
                              f"`synth {'/'.join(o.corpora)}`)")
        kwargs[o.kwarg or o.dest] = o.value(getattr(args, o.dest))
    module, function = corpus.maker.split(".")
    make = getattr(importlib.import_module(f"s3prl_speechprompt.synth.{module}"), function)
    summary = make(args.out, seed=args.seed, force=args.force, progress=not args.quiet, **kwargs)
    print(f"wrote synthetic {args.corpus.upper()} corpus in {summary['seconds']:.1f} s (seed {summary['seed']})")
    for line in corpus.lines(summary):
        print(line)
    print("  totals: " + ", ".join(f"{s} {n}" for s, n in summary["totals"].items()))
    return 0
