"""ASR on LibriSpeech, as SUPERB runs it (train-clean-100 -> dev-clean / test-clean, characters, WER).

s3prl's ``LibriSpeech`` parser reads ``<libri_root>/<subset>/<spk>/<chapter>/*.flac`` and the chapters'
``.trans.txt``; the datarc's ``train``/``dev``/``test`` are lists of subsets, as in SUPERB's ``asr/config.yaml``.
Label tokens are SUPERB's characters (upper case, apostrophe, ``|`` between words). Metrics as SUPERB's ASR expert
(``editdistance``, corpus level, percent): ``wer`` = 100 x word edits / reference words, ``cer`` = 100 x
character-token edits / reference character tokens (SUPERB's ``uer``; ``|`` counts as a token).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import editdistance

from s3prl_speechprompt.errors import ConfigError, InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, read_utf8, register_task
from s3prl_speechprompt.tasks.sequence import UNDECODABLE, SequenceTask, text_to_tokens, tokens_to_text


# SUPERB's downstream/asr/char.dict order (absent from the PyPI sdist): word boundary first, then by frequency
SUPERB_CHAR_DICT = ("|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "C", "W", "F", "G", "Y",
                    "P", "B", "V", "K", "'", "X", "J", "Q", "Z")


def _as_list(value, key):
    if isinstance(value, str):
        return [value]
    if not value:
        raise ConfigError(f"downstream_expert.datarc.{key}: needs at least one LibriSpeech subset")
    return [str(v) for v in value]


def edit_counts(hyps: Sequence[Sequence[Optional[str]]], refs: Sequence[Sequence[str]]) -> Dict[str, tuple]:
    """Per utterance, SUPERB ASR's counts: ``{"wer": (word edits, reference words), "cer": (character-token
    edits, reference character tokens)}`` as lists (``|`` counts as a character token, ``None`` as one edit)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} predictions for {len(refs)} references")
    counts = {"wer": ([], []), "cer": ([], [])}
    for h, r in zip(hyps, refs):
        h = [UNDECODABLE if t is None else t for t in h]
        counts["cer"][0].append(editdistance.eval(h, list(r)))
        counts["cer"][1].append(len(r))
        hw, rw = tokens_to_text(h).split(), tokens_to_text(r).split()
        counts["wer"][0].append(editdistance.eval(hw, rw))
        counts["wer"][1].append(len(rw))
    return counts


def error_rates(hyps: Sequence[Sequence[Optional[str]]], refs: Sequence[Sequence[str]]) -> Dict[str, float]:
    """SUPERB ASR's WER and UER (here ``cer``), in percent, from label-token sequences (``|`` = word boundary)."""
    out = {}
    for name, (err, n) in edit_counts(hyps, refs).items():
        out[name] = 100.0 * sum(err) / sum(n) if sum(n) else 100.0
    return out


@register_task
class SpeechRecognition(SequenceTask):
    name = "asr"
    metrics = ("wer", "cer")
    primary_metric = "wer"
    higher_is_better = False
    default_prompt_length = 176        # paper, ASR/SF: 4.5M = 1024 * (25 * 176 + 1) trainable parameters
    scores_in_percent = True

    def __init__(self, libri_root: str = "", train=("train-clean-100",), dev=("dev-clean",),
                 test=("test-clean",), n_jobs: int = 1, **datarc):
        super().__init__(**datarc)
        self.root = Path(libri_root)
        self.subsets = {"train": _as_list(train, "train"), "dev": _as_list(dev, "dev"),
                        "test": _as_list(test, "test")}
        self.n_jobs = int(n_jobs)
        self._corpus = None

    def _parsed(self):
        if self._corpus is None:
            wanted = [s for subsets in self.subsets.values() for s in subsets]
            missing = [s for s in wanted if not (self.root / s).is_dir()]
            if not str(self.root) or missing or not (self.root / "SPEAKERS.TXT").is_file():
                raise MissingFileError(
                    f"downstream_expert.datarc.libri_root: {str(self.root) or '(empty)'} is not a LibriSpeech root "
                    f"with SPEAKERS.TXT and the subsets {wanted} (missing: {missing or ['SPEAKERS.TXT']}); point it "
                    f"at the extracted LibriSpeech/ folder (or make a synthetic one with `speechprompt synth asr "
                    f"--out DIR`)")
            from s3prl.dataio.corpus.librispeech import LibriSpeech
            try:
                self._corpus = LibriSpeech(str(self.root), n_jobs=self.n_jobs, train_split=self.subsets["train"],
                                           valid_split=self.subsets["dev"], test_split=self.subsets["test"])
            except UnicodeDecodeError:
                for subset in wanted:                 # s3prl's parser does not say which file: find it
                    for trans in sorted((self.root / subset).glob("*/*/*.trans.txt")):
                        read_utf8(trans)
                raise
        return self._corpus

    def _read(self, split: str) -> List[Item]:
        corpus = self._parsed()
        entries = {"train": corpus.train, "dev": corpus.valid, "test": corpus.test}[split]
        items = []
        for uid, e in sorted(entries.items()):
            if e["transcription"] is None:
                raise InputFileError(f"{e['wav_path']}: no line for it in its chapter's .trans.txt")
            labels = text_to_tokens(e["transcription"])
            if not labels:
                raise InputFileError(f"{e['wav_path']}: empty transcription")
            items.append(Item(str(uid), str(e["wav_path"]), labels))
        return items

    def score(self, hyps, refs) -> Dict[str, float]:
        return error_rates(hyps, refs)

    def utterance_scores(self, hyps, refs):
        """WER / CER as (edits, reference length) per utterance (:func:`edit_counts`)."""
        return {k: (list(map(float, e)), list(map(float, n))) for k, (e, n) in edit_counts(hyps, refs).items()}

    def ctc_vocabulary(self) -> List[str]:
        """The BLSTM-CTC baseline's outputs, as SUPERB's ASR: fairseq's 4 specials (blank = ``<s>``) + char.dict."""
        return ["<s>", "<pad>", "</s>", "<unk>"] + list(SUPERB_CHAR_DICT)

    def label_string(self, tokens) -> str:
        """The transcript, words separated by spaces (``|`` -> space), as SUPERB's ``*-hyp.ark`` lines."""
        return tokens_to_text(tokens)

