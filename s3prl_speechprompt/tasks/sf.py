"""Slot filling on Audio SNIPS, as SUPERB runs it (character + slot-tag targets, slot-type F1, slot-value CER).

s3prl's ``SNIPS`` parser reads ``<path>/{train,valid,test}/**/<Speaker>-snips-<split>-<i>.wav`` and
``all.iob.snips.txt`` (SUPERB's speaker split). Targets come from s3prl's ``CharacterTextSlotEncoder`` (SUPERB's
``character-slot`` mode: space, A-Z, apostrophe, ``B-<slot>``/``E-<slot>`` per line of ``slots.txt`` but the
first), one label token per id, so ``PLAY B-artist ADELE E-artist`` is ``P L A Y | B-artist A D E L E E-artist``.
Scores are s3prl's ``s3prl.downstream.ctc.metric`` functions on the decoded strings, as fractions like SUPERB's CTC
expert logs them: ``slot_type_f1`` (primary), ``slot_value_cer``, ``slot_value_wer``, ``wer``, ``cer``.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from s3prl_speechprompt.errors import InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, register_task
from s3prl_speechprompt.tasks.sequence import UNDECODABLE, WORD_BOUNDARY, SequenceTask

TRAIN_SPEAKERS = ["Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"]
VALID_SPEAKERS = ["Aditi", "Amy", "Geraint", "Nicole"]
TEST_SPEAKERS = ["Brian", "Emma", "Raveena", "Russell"]
# SUPERB's downstream/ctc/vocab/character.txt (absent from the PyPI sdist): space, A-Z, apostrophe
CHARACTERS = [" "] + list(string.ascii_uppercase) + ["'"]
METRICS = ("slot_type_f1", "slot_value_cer", "slot_value_wer", "wer", "cer")


def tokens_to_superb_string(tokens: Sequence[Optional[str]]) -> str:
    """Label tokens -> the string ``CharacterTextSlotEncoder.decode`` gives for the same ids
    (``B-x`` -> ``"B-x "``, ``E-x`` -> ``" E-x"``, ``|`` -> space); ``None`` -> one undecodable character."""
    out = []
    for t in tokens:
        if t is None:
            out.append(UNDECODABLE)
        elif t == WORD_BOUNDARY:
            out.append(" ")
        elif t.startswith("B-"):
            out.append(t + " ")
        elif t.startswith("E-"):
            out.append(" " + t)
        else:
            out.append(t)
    return "".join(out)


def slot_metrics(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """SUPERB SF scores (fractions) of decoded strings, by s3prl's own metric functions."""
    from s3prl.downstream.ctc import metric

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} predictions for {len(refs)} references")
    hyps, refs = list(hyps), list(refs)
    out = {}
    for name in METRICS:
        try:
            out[name] = float(getattr(metric, name)(hyps, refs))
        except ZeroDivisionError:       # e.g. slot_value_cer of references without any slot
            out[name] = 0.0
    return out


def slot_utterance_scores(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, tuple]:
    """Per utterance ``(numerator, denominator)`` lists whose ratio of sums is each of :data:`METRICS`, from
    s3prl's own functions called on one utterance at a time: ``slot_type_f1`` is their mean of per-utterance
    F1 (numerator F1, denominator 1); the error rates are edits over reference length, the length counted
    as s3prl counts it (characters / space-split words of the text or of the reference slot values) and the
    edits recovered as rate x length (integers, so rounded exactly). Sums equal s3prl on the whole set."""
    from s3prl.downstream.ctc import metric

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} predictions for {len(refs)} references")
    out = {name: ([], []) for name in METRICS}

    def add(name, fn, p, t, length):
        rate = float(fn([p], [t])) if length else 0.0
        out[name][0].append(float(round(rate * length)))
        out[name][1].append(float(length))

    for p, t in zip(hyps, refs):
        values = _ref_slot_values(p, t)
        out["slot_type_f1"][0].append(float(metric.slot_type_f1([p], [t])))
        out["slot_type_f1"][1].append(1.0)
        add("slot_value_cer", metric.slot_value_cer, p, t, sum(len(v) for v in values))
        add("slot_value_wer", metric.slot_value_wer, p, t, sum(len(v.split(" ")) for v in values))
        add("wer", metric.wer, p, t, len(t.split(" ")))
        add("cer", metric.cer, p, t, len(t))
    return out


def _ref_slot_values(hyp: str, ref: str) -> List[str]:
    """The reference slot values as s3prl's ``parse`` extracts them (``value:slot;...``)."""
    from s3prl.downstream.ctc import metric

    ref_slots = metric.parse(hyp, ref)[2]
    return [s.split(":")[0] for s in ref_slots.split(";")] if ref_slots else []


@register_task
class SlotFilling(SequenceTask):
    name = "sf"
    metrics = METRICS
    primary_metric = "slot_type_f1"
    higher_is_better = True
    default_prompt_length = 176        # paper, ASR/SF: 4.5M = 1024 * (25 * 176 + 1) trainable parameters

    def __init__(self, path: str = "", slots_file: Optional[str] = None, train_speakers=None,
                 valid_speakers=None, test_speakers=None, **datarc):
        super().__init__(**datarc)
        self.root = Path(path)
        self.slots_file = Path(slots_file) if slots_file else self.root / "slots.txt"
        self.speakers = (list(train_speakers or TRAIN_SPEAKERS), list(valid_speakers or VALID_SPEAKERS),
                         list(test_speakers or TEST_SPEAKERS))
        self._corpus = None
        self._encoder = None

    @property
    def encoder(self):
        """s3prl's ``CharacterTextSlotEncoder`` over SUPERB's characters and this corpus's ``slots.txt``."""
        if self._encoder is None:
            if not self.slots_file.is_file():
                raise MissingFileError(f"{self.slots_file}: slots file not found (set downstream_expert.datarc."
                                       f"slots_file, or put slots.txt in the SNIPS root)")
            from s3prl.downstream.ctc.text import CharacterTextSlotEncoder
            # the first line is not a slot (as load_from_file reads it); blank lines are not slots either
            names = [s.strip() for s in self.slots_file.read_text().split("\n")[1:] if s.strip()]
            slots = [f"{p}-{s}" for s in names for p in ("B", "E")]
            self._encoder = CharacterTextSlotEncoder(list(CHARACTERS), slots)
        return self._encoder

    def _parsed(self):
        if self._corpus is None:
            missing = [n for n in ("all.iob.snips.txt", "train", "valid", "test") if not (self.root / n).exists()]
            if not str(self.root) or missing:
                raise MissingFileError(
                    f"downstream_expert.datarc.path: {str(self.root) or '(empty)'} is not an Audio SNIPS root "
                    f"(missing {', '.join(missing)}); point it at the preprocessed SNIPS/ folder (or make a "
                    f"synthetic one with `speechprompt synth sf --out DIR`)")
            from s3prl.dataio.corpus.snips import SNIPS
            self._corpus = SNIPS(str(self.root), *self.speakers)
        return self._corpus

    def encode(self, transcription: str, iob: str, intent: str = "") -> tuple:
        """The SNIPS parser's fields -> label tokens, through ``CharacterTextSlotEncoder.encode``."""
        enc = self.encoder
        line = f"BOS {transcription.upper()} EOS\tO {iob} {intent or 'intent'}"
        tokens = []
        for idx in enc.encode(line):
            if idx == enc.eos_idx:
                break
            if idx in enc.id2slot:
                tokens.append(enc.id2slot[idx])
            else:
                v = enc.idx_to_vocab(idx)
                tokens.append(WORD_BOUNDARY if v == " " else v)
        return tuple(tokens)

    def _read(self, split: str) -> List[Item]:
        corpus = self._parsed()
        entries = {"train": corpus.train, "dev": corpus.valid, "test": corpus.test}[split]
        items = []
        for uid, e in sorted(entries.items()):
            try:
                labels = self.encode(e["transcription"], e["iob"], e["intent"])
            except KeyError as err:
                raise InputFileError(f"{uid}: slot {err} is not in {self.slots_file}") from None
            items.append(Item(str(uid), str(e["wav_path"]), labels))
        return items

    def ctc_vocabulary(self) -> List[str]:
        """The BLSTM-CTC baseline's outputs, as SUPERB's SF: ``<pad>`` (blank), ``<eos>``, ``<unk>``, the
        characters (space written as the word-boundary token) and the B-/E- slot tags."""
        enc = self.encoder
        chars = [WORD_BOUNDARY if c == " " else c for c in CHARACTERS]
        return ["<pad>", "<eos>", "<unk>"] + chars + [enc.id2slot[i] for i in sorted(enc.id2slot)]

    def score(self, hyps, refs) -> Dict[str, float]:
        return slot_metrics([tokens_to_superb_string(h) for h in hyps], [tokens_to_superb_string(r) for r in refs])

    def utterance_scores(self, hyps, refs):
        return slot_utterance_scores([tokens_to_superb_string(h) for h in hyps],
                                     [tokens_to_superb_string(r) for r in refs])

    def label_string(self, tokens) -> str:
        """SUPERB's decoded form, e.g. ``PLAY B-artist ADELE E-artist``."""
        return tokens_to_superb_string(tokens)
