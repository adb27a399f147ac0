"""Build a verbalizer (label -> unit code table) from a training unit file and write it as JSON.

Example: speechprompt verbalize --train ks/train.txt --dict dict.txt --method freq --out verbal.json
"""
from __future__ import annotations

from s3prl_speechprompt.errors import InputFileError
from s3prl_speechprompt.prompt.verbalizer import METHODS, build_verbalizer, natural_order
from s3prl_speechprompt.units.manifest import read_unit_file

NAME = "verbalize"
HELP = "build a label -> unit-code verbalizer from the training split"


def add_arguments(parser) -> None:
    parser.add_argument("--train", required=True, metavar="FILE",
                        help="training unit file: SpeechPrompt 'u1 u2 ... <s> label' lines or our "
                             "'id<TAB>units<TAB>labels' manifest")
    parser.add_argument("--dict", dest="dict_path", metavar="DICT_TXT", default=None,
                        help="GSLM dict.txt ('<symbol> <count>' lines) giving the unit vocabulary in order; "
                             "if omitted, the sorted set of units seen in --train is used")
    parser.add_argument("--method", "--verbalizer", dest="method", choices=METHODS, default="freq",
                        help="freq: i-th most frequent label -> i-th most frequent unit (SpeechPrompt v1); "
                             "random: seeded distinct units; identity: labels in order -> units in dict order; "
                             "multi: k units per label when labels outnumber units; learnable: identity input "
                             "codes for a model with a learned head over the LM logits (SpeechPrompt v2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (only used by --method random)")
    parser.add_argument("--task-key", default=None, metavar="KEY",
                        help="write SpeechPrompt's {KEY: {label: units}} shape (e.g. KS) instead of ours")
    parser.add_argument("--out", required=True, metavar="JSON", help="output verbalizer file, e.g. verbal.json")


def _unit_vocab(dict_path, records):
    """Units in dict.txt order, or (no dict) the sorted set of units seen in the training split."""
    if dict_path is not None:
        from s3prl_speechprompt.ulm.dictionary import Dictionary
        return list(Dictionary.load(dict_path).units), f"{dict_path}"
    seen = {u for r in records for u in r.units}
    return natural_order(seen), "the units seen in --train (no --dict given)"


def run(args) -> int:
    records = read_unit_file(args.train)
    if not records:
        raise InputFileError(f"{args.train}: no utterances; --train needs the training split's unit file")
    vocab, vocab_source = _unit_vocab(args.dict_path, records)
    verbalizer = build_verbalizer(args.method, [r.labels for r in records], [r.units for r in records],
                                  vocab, seed=args.seed)
    verbalizer.save(args.out, task_key=args.task_key)
    print(f"verbalize: {len(verbalizer.codes)} labels -> {len(vocab)} units from {vocab_source}, "
          f"method {verbalizer.method}, code length {verbalizer.code_length}, wrote {args.out}")
    return 0
