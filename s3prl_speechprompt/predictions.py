"""Per-utterance predictions: the one file format every run writes and the report reads.

``<split>_predictions.jsonl`` (JSON Lines, UTF-8): a header object, then one utterance per line sorted by id::

    {"format": "s3prl-speechprompt-predictions/1", "task": "ks", "split": "test", "step": 600,
     "mode": "train", "seed": 1337, "source": "s3prl runner", "n": 3081}
    {"id": "yes/0a7c2a8d_nohash_0", "truth": ["yes"], "prediction": ["no"]}

``truth`` / ``prediction`` are the task's label tokens, exactly what its SUPERB scorer receives (``null``: a
code the verbalizer could not map back). Fields and ids: docs/report.md, "Per-utterance predictions".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.errors import InputFileError

FORMAT = "s3prl-speechprompt-predictions/1"


def predictions_name(split: str) -> str:
    return f"{split}_predictions.jsonl"


def _tokens(seq) -> list:
    return [None if t is None else str(t) for t in seq]


def write_predictions(path, ids: Sequence[str], truths: Sequence[Sequence], predictions: Sequence[Sequence], *,
                      task: str, split: str, step: Optional[int] = None, mode: str = "train",
                      seed: Optional[int] = None, source: str = "") -> None:
    """Write one predictions file (atomically), utterances sorted by id."""
    if not (len(ids) == len(truths) == len(predictions)):
        raise ValueError(f"{path}: {len(ids)} ids, {len(truths)} truths, {len(predictions)} predictions")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if list(ids).count(i) > 1)
        raise ValueError(f"{path}: utterance id {dup!r} occurs more than once; ids must name utterances uniquely")
    header = {"format": FORMAT, "task": task, "split": split, "step": step, "mode": mode, "seed": seed,
              "source": source, "n": len(ids)}
    order = sorted(range(len(ids)), key=lambda i: str(ids[i]))
    lines = [json.dumps(header)] + [
        json.dumps({"id": str(ids[i]), "truth": _tokens(truths[i]), "prediction": _tokens(predictions[i])},
                   ensure_ascii=False) for i in order]
    atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass
class Predictions:
    """A predictions file in memory: ``header`` plus parallel lists sorted by id."""

    path: str
    header: dict
    ids: List[str] = field(default_factory=list)
    truths: List[Tuple] = field(default_factory=list)
    predictions: List[Tuple] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.header.get("task", "")


def read_predictions(path) -> Predictions:
    """Read and check a predictions file; errors name the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise InputFileError(f"{path}: empty; expected a header line and one line per utterance")
    try:
        header = json.loads(lines[0])
    except ValueError as e:
        raise InputFileError(f"{path}:1: not JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputFileError(f"{path}:1: header format {header.get('format') if isinstance(header, dict) else header!r}"
                             f", expected {FORMAT!r}")
    out = Predictions(str(path), header)
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            uid, truth, pred = rec["id"], rec["truth"], rec["prediction"]
        except (ValueError, KeyError, TypeError) as e:
            raise InputFileError(f"{path}:{lineno}: expected {{\"id\", \"truth\", \"prediction\"}} ({e!r})") from None
        if not isinstance(truth, list) or not isinstance(pred, list):
            raise InputFileError(f"{path}:{lineno}: truth and prediction must be lists of label tokens")
        out.ids.append(str(uid))
        out.truths.append(tuple(truth))
        out.predictions.append(tuple(pred))
    if len(set(out.ids)) != len(out.ids):
        raise InputFileError(f"{path}: duplicate utterance ids")
    if header.get("n") is not None and header["n"] != len(out.ids):
        raise InputFileError(f"{path}: header says n={header['n']} but the file has {len(out.ids)} utterances "
                             f"(truncated?)")
    return out


LEGACY = "predict.txt+truth.txt"


def read_predict_truth(predict_path, truth_path, task: str) -> Predictions:
    """Per-utterance predictions from ``speechprompt evaluate``'s older ``<split>_predict.txt`` / ``<split>_truth.txt``.

    Label strings become label tokens where that is exact: classification (space-joined tokens; ``<unk>``: no label)
    and ASR (one character per token, space for ``|``); other sequence tasks (SF): ValueError.
    """
    if task == "sf":
        raise InputFileError(f"{predict_path}: SF label strings cannot be turned back into label tokens exactly; "
                             f"re-run `speechprompt evaluate` to write the .jsonl predictions")

    def tokens(text: str) -> tuple:
        if task == "asr":
            return tuple("|" if c == " " else c for c in text)
        return tuple(None if t == "<unk>" else t for t in text.split(" ")) if text else ()

    def read(path) -> dict:
        out = {}
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line:
                continue
            uid, sep, text = line.partition("\t")
            if not sep:
                raise InputFileError(f"{path}:{lineno}: expected 'id<TAB>labels' (speechprompt evaluate's format)")
            if uid in out:
                raise InputFileError(f"{path}:{lineno}: utterance id {uid!r} repeats")
            out[uid] = tokens(text)
        return out

    hyp, ref = read(predict_path), read(truth_path)
    if set(hyp) != set(ref):
        raise InputFileError(f"{predict_path} and {truth_path} list different utterance ids")
    ids = sorted(ref)
    return Predictions(str(predict_path), {"format": LEGACY, "task": task, "n": len(ids)}, ids,
                       [ref[i] for i in ids], [hyp[i] for i in ids])
