"""Verbalizers: label tokens <-> fixed-length codes of unit symbols (a frozen unit LM can only emit units).

- ``freq`` (SpeechPrompt v1): the i-th most frequent training label -> the i-th most frequent training source
  unit, ties in first-seen order; unseen units follow in dict order. ``random`` (v2): a seeded sample of distinct
  units. ``identity``: labels in natural order -> units in dict order.
- ``multi``: k units per label, the smallest k with ``n_units**k >= n_labels``, the frequency-ranked label index
  written in base ``n_units`` over frequency-ranked units (1,251 SID speakers fit 100 units with k=2; k=1: freq).
- ``learnable`` (v2): input codes as ``identity``; the model adds a linear head over the LM logits.

On disk: ``{"method": "freq", "code_length": 1, "codes": {"0": "53", ...}}``; ``load`` also reads SpeechPrompt's
``{"KS": {"0": "53", ...}}``.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.errors import ConfigError, InputFileError

METHODS = ("freq", "random", "identity", "multi", "learnable")


def natural_order(labels: Iterable[str]) -> List[str]:
    """Labels sorted numerically if all are integers ("2" < "10"), else lexicographically."""
    labels = list(labels)
    if labels and all(_is_int(x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _preview(items: Sequence[str], n: int = 20) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in total)" if len(items) > n else "")


@dataclass
class Verbalizer:
    """``codes``: label token -> tuple of ``code_length`` unit symbols (strings as in dict.txt)."""

    method: str
    codes: Dict[str, Tuple[str, ...]]

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown verbalizer method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not self.codes:
            raise ConfigError("a verbalizer needs at least one label")
        self.codes = {str(k): tuple(str(u) for u in v) for k, v in self.codes.items()}
        lengths = {len(c) for c in self.codes.values()}
        if 0 in lengths:
            empty = [k for k, c in self.codes.items() if not c]
            raise ConfigError(f"verbalizer: label(s) {_preview(empty)} have an empty code")
        if len(lengths) != 1:
            by_len = {n: next(k for k, c in self.codes.items() if len(c) == n) for n in sorted(lengths)}
            raise ConfigError(
                f"verbalizer: all codes must have the same length, found lengths {sorted(lengths)} "
                f"(e.g. {', '.join(f'label {k!r} has {n}' for n, k in by_len.items())})")
        seen: Dict[Tuple[str, ...], str] = {}
        for label, code in self.codes.items():
            if code in seen:
                raise ConfigError(
                    f"verbalizer: labels {seen[code]!r} and {label!r} share the code {' '.join(code)!r}; "
                    f"codes must be distinct or predictions cannot be decoded")
            seen[code] = label

    @property
    def code_length(self) -> int:
        return len(next(iter(self.codes.values())))

    @property
    def labels(self) -> List[str]:
        return list(self.codes)

    def encode(self, labels: Sequence[str]) -> List[str]:
        """(k,) label tokens -> (k * code_length,) unit symbols."""
        out: List[str] = []
        for label in labels:
            code = self.codes.get(label)
            if code is None:
                raise ConfigError(
                    f"verbalizer has no code for label {label!r}; known labels: {_preview(self.labels)}. "
                    f"Was the verbalizer built from the same task's training labels?")
            out.extend(code)
        return out

    def decode(self, units: Sequence[str]) -> List[Optional[str]]:
        """(n,) unit symbols -> ceil(n / code_length) labels; None for an unknown code or a
        trailing partial chunk (the LM may emit anything)."""
        inverse = {code: label for label, code in self.codes.items()}
        k = self.code_length
        units = [str(u) for u in units]
        return [inverse.get(tuple(units[i:i + k])) if i + k <= len(units) else None
                for i in range(0, len(units), k)]

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        return {"method": self.method, "code_length": self.code_length,
                "codes": {label: " ".join(code) for label, code in self.codes.items()}}

    @classmethod
    def from_dict(cls, d: dict, task_key: Optional[str] = None, source: str = "verbalizer") -> "Verbalizer":
        """Read our shape, or SpeechPrompt's ``{task: {label: "u1 u2"}}`` (single key, or ``task_key``;
        ignored for our shape). ``source`` names the file in error messages."""
        if not isinstance(d, dict):
            raise InputFileError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if "codes" in d:
            # our shape holds a single task, so a task_key has nothing to select
            method, codes = d.get("method", "freq"), d["codes"]
        else:
            if task_key is None:
                if len(d) != 1:
                    raise InputFileError(
                        f"{source}: SpeechPrompt-style table with tasks {_preview(list(d))}; "
                        f"pass task_key= (--task-key) to pick one")
                task_key = next(iter(d))
            if task_key not in d:
                raise InputFileError(f"{source}: no task {task_key!r}; found {_preview(list(d))}")
            # SpeechPrompt only released tables made by its frequency verbalizer
            method, codes = "freq", d[task_key]
        if not isinstance(codes, dict):
            raise InputFileError(f"{source}: codes must map label -> 'u1 u2 ...', got {type(codes).__name__}")
        parsed = {}
        for label, code in codes.items():
            if not isinstance(code, str):
                raise InputFileError(f"{source}: label {label!r} has code {code!r}; expected a string of "
                                 f"space-separated unit symbols")
            parsed[str(label)] = tuple(code.split())
        try:
            v = cls(method, parsed)
        except ValueError as e:
            raise InputFileError(f"{source}: {e}") from None
        if "code_length" in d and int(d["code_length"]) != v.code_length:
            raise InputFileError(f"{source}: code_length is {d['code_length']} but the codes have "
                             f"{v.code_length} units; fix or drop the code_length field")
        return v

    def save(self, path: str | os.PathLike, task_key: Optional[str] = None) -> None:
        """Write JSON atomically; with ``task_key`` in SpeechPrompt's ``{task_key: {...}}`` shape
        (which has no room for the method: it loads back as ``freq``)."""
        if task_key is None:
            text = json.dumps(self.to_dict(), indent=1) + "\n"
        else:
            # byte-for-byte SpeechPrompt's verbal.json layout (indent 1, no trailing newline)
            text = json.dumps({task_key: self.to_dict()["codes"]}, indent=1)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike, task_key: Optional[str] = None) -> "Verbalizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: verbalizer file not found; make one with `speechprompt verbalize`")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputFileError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, task_key=task_key, source=str(path))


# -------------------------------------------------------------------- building
def _ranked(counts: Counter) -> List[str]:
    """Keys by descending count; ties keep first-seen order (Counter keeps insertion order and
    ``sorted`` is stable, as in SpeechPrompt)."""
    return sorted(counts, key=lambda k: -counts[k])


def _too_many(method: str, n_labels: int, n_units: int) -> ConfigError:
    return ConfigError(
        f"verbalizer '{method}' gives each label its own single unit, but there are {n_labels} labels and only "
        f"{n_units} units; use the multi-unit verbalizer instead (--verbalizer multi / method='multi'), "
        f"which gives each label a code of several units")


def build_verbalizer(method: str, train_label_seqs: Iterable[Sequence[str]],
                     train_unit_seqs: Iterable[Sequence[str]], unit_vocab: Sequence[str],
                     seed: int = 0) -> Verbalizer:
    """Build a verbalizer from the training split: per utterance its label tokens and its source units;
    ``unit_vocab``: the unit symbols in dict.txt order (no specials). ``seed`` only matters for ``random``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown verbalizer method {method!r}; choose one of {', '.join(METHODS)}")
    vocab = [str(u) for u in unit_vocab]
    if not vocab:
        raise ConfigError("unit vocabulary is empty; pass the GSLM dict.txt symbols")
    if len(set(vocab)) != len(vocab):
        dup = next(u for i, u in enumerate(vocab) if u in vocab[:i])
        raise ConfigError(f"unit vocabulary lists unit {dup!r} twice; check dict.txt")

    label_counts: Counter = Counter()
    for labels in train_label_seqs:
        label_counts.update(str(x) for x in labels)
    if not label_counts:
        raise ConfigError("no training labels found; the verbalizer is built from the train split's labels")
    unit_counts: Counter = Counter()
    for units in train_unit_seqs:
        unit_counts.update(str(u) for u in units)
    known = set(vocab)
    unknown = [u for u in unit_counts if u not in known]
    if unknown:
        raise ConfigError(
            f"training sources use unit(s) {_preview(unknown)} that are not in the unit vocabulary "
            f"({len(vocab)} units: {_preview(vocab, 5)}); were the units made with the k-means of this dict.txt?")

    n_labels, n_units = len(label_counts), len(vocab)
    labels_by_freq = _ranked(label_counts)
    units_by_freq = _ranked(unit_counts) + [u for u in vocab if u not in unit_counts]
    labels_natural = natural_order(label_counts)

    if method == "multi":
        k = 1
        while n_units ** k < n_labels:
            k += 1
        codes = {}
        for rank, label in enumerate(labels_by_freq):
            digits = []
            for _ in range(k):
                rank, d = divmod(rank, n_units)
                digits.append(units_by_freq[d])
            codes[label] = tuple(reversed(digits))
    elif n_labels > n_units:
        if method == "learnable":
            raise ConfigError(
                f"verbalizer 'learnable' keeps one input unit per label (code length 1), but there are "
                f"{n_labels} labels and only {n_units} units; use the multi-unit verbalizer instead "
                f"(--verbalizer multi / method='multi')")
        raise _too_many(method, n_labels, n_units)
    elif method == "freq":
        codes = {label: (units_by_freq[i],) for i, label in enumerate(labels_by_freq)}
    elif method == "random":
        picked = random.Random(seed).sample(vocab, n_labels)
        codes = {label: (u,) for label, u in zip(labels_natural, picked)}
    else:  # identity, learnable
        codes = {label: (vocab[i],) for i, label in enumerate(labels_natural)}
    return Verbalizer(method, {label: codes[label] for label in labels_natural})
