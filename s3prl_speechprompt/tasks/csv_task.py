"""Generic utterance classification from CSV files (task ``csv``): bring your own corpus without code.

``downstream_expert.datarc``: ``csv: data.csv`` with a ``split`` column (``train``/``dev``/``test``; ``valid``,
``validation``, ``val`` = dev), or ``train_csv`` / ``dev_csv`` / ``test_csv``. Columns: ``path`` (relative to the
CSV's folder), optional ``id`` (default: the path; unique within a split), and ``label`` (one token, or several
with ``label_separator``) or ``label_1 .. label_k`` (IC-like slots); ``prefix_slots: true`` writes
``<slot>:<value>`` so equal values in different slots get different codes. Score: exact-match accuracy over the
whole label sequence. Extra columns are ignored; only ``path`` and label cells must be non-empty.
Reference: docs/adding_a_task.md.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from s3prl_speechprompt.errors import ConfigError, InputFileError, MissingFileError
from s3prl_speechprompt.tasks.base import Item, Task, read_utf8, register_task

SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "valid": "dev", "validation": "dev",
                 "val": "dev", "test": "test", "testing": "test", "eval": "test"}
_SLOT_COLUMN = re.compile(r"^label_(\d+)$")


def _label_columns(header: Sequence[str], source: str) -> List[str]:
    slots = sorted(((int(m.group(1)), c) for c in header if (m := _SLOT_COLUMN.match(c))), key=lambda x: x[0])
    if slots:
        if "label" in header:
            raise InputFileError(f"{source}: has both a 'label' column and label_1..label_k columns; keep one form")
        numbers = [n for n, _ in slots]
        if numbers != list(range(1, len(numbers) + 1)):
            raise InputFileError(f"{source}: label columns must be label_1..label_k without gaps, found "
                                 f"{[c for _, c in slots]}")
        return [c for _, c in slots]
    if "label" not in header:
        raise InputFileError(f"{source}: no label column; expected 'label' or 'label_1', 'label_2', ... "
                             f"(columns: {list(header)})")
    return ["label"]


@register_task
class CsvClassification(Task):
    name = "csv"
    default_prompt_length = 6
    max_label_tokens = 1                    # set per instance from the data

    def __init__(self, csv: str = "", train_csv: str = "", dev_csv: str = "", test_csv: str = "",
                 label_separator: Optional[str] = None, prefix_slots: bool = False, split_column: str = "split",
                 **datarc):
        super().__init__(**datarc)
        per_split = {"train": train_csv, "dev": dev_csv, "test": test_csv}
        if csv and any(per_split.values()):
            raise ConfigError("downstream_expert.datarc: give either csv (one file with a split column) or "
                              "train_csv/dev_csv/test_csv (one file per split), not both")
        if not csv and not any(per_split.values()):
            raise ConfigError("downstream_expert.datarc.csv (or train_csv/dev_csv/test_csv) is required: a CSV with "
                              "columns path,label[,split] (make an example with `speechprompt synth csv --out DIR`)")
        if label_separator == "":
            raise ConfigError("downstream_expert.datarc.label_separator must be a non-empty string or null")
        self.separator = label_separator
        self.prefix_slots = bool(prefix_slots)
        self.split_column = split_column
        self.rows: Dict[str, List[Item]] = {s: [] for s in self.splits}
        if csv:
            self._read(Path(csv), None)
        else:
            for split, path in per_split.items():
                if path:
                    self._read(Path(path), split)
        lengths = {len(it.labels) for items in self.rows.values() for it in items}
        self.max_label_tokens = max(lengths) if lengths else 1

    def _read(self, path: Path, split: Optional[str]) -> None:
        if not path.is_file():
            raise MissingFileError(f"{path}: CSV file not found (downstream_expert.datarc)")
        folder = path.resolve().parent
        reader = csv.DictReader(io.StringIO(read_utf8(path)))
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        if "path" not in header:
            raise InputFileError(f"{path}: no 'path' column (columns: {header})")
        columns = _label_columns(header, str(path))
        if split is None and self.split_column not in header:
            raise InputFileError(f"{path}: no '{self.split_column}' column; a single CSV needs one (train/dev/test), "
                                 f"or give train_csv/dev_csv/test_csv")
        for row in reader:
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{path}:{reader.line_num}"
            row_split = split
            if row_split is None:
                row_split = SPLIT_ALIASES.get(row.get(self.split_column, "").lower())
                if row_split is None:
                    raise InputFileError(f"{where}: split {row.get(self.split_column)!r} is not one of "
                                         f"train/dev/test (or valid/validation/val)")
            if not row["path"]:
                raise InputFileError(f"{where}: empty path")
            labels = self._labels(row, columns, where)
            wav = Path(row["path"]).expanduser()
            wav = wav if wav.is_absolute() else folder / wav
            self.rows[row_split].append(Item(row.get("id") or row["path"], str(wav), labels))

    def _labels(self, row: dict, columns: List[str], where: str) -> tuple:
        if columns == ["label"]:
            cell = row["label"]
            values = [v.strip() for v in cell.split(self.separator)] if self.separator else [cell]
            names = [f"label_{i + 1}" for i in range(len(values))]
        else:
            values, names = [row[c] for c in columns], columns
        empty = [n for n, v in zip(names, values) if not v]
        if empty:
            raise InputFileError(f"{where}: empty label ({', '.join(empty)}) in {row.get('label', row)!r}")
        return tuple(f"{n}:{v}" for n, v in zip(names, values)) if self.prefix_slots else tuple(values)

    def read_split(self, split: str) -> List[Item]:
        self.check_split(split)
        items = self.rows[split]
        if not items:
            raise InputFileError(f"CSV task: split {split!r} has no rows")
        seen = set()
        for it in items:
            if it.id in seen:
                raise InputFileError(f"CSV task: id {it.id!r} appears twice in split {split!r}; add a unique 'id' "
                                     f"column")
            seen.add(it.id)
        return list(items)
