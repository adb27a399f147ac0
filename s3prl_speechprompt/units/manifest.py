"""Unit files: one utterance per line, discrete units plus its label tokens, format auto-detected per file.

- SpeechPrompt's released ``data_prompt/*.txt``: ``u1 u2 ... un <s> l1 [l2 ...]``; ids are ``{stem}-{lineno}``.
- our manifest (TSV if the first non-blank line has a tab): ``id<TAB>u1 u2 ...<TAB>l1 l2 ...`` (ASR labels are
  characters with ``|`` as the word boundary).

Units and labels stay strings as written (unit -> LM index is dict.txt's business, label -> unit the
verbalizer's). The reader checks the form: malformed lines and (``check_unit_indices``) units that are not
non-negative integers are errors naming ``file:line``, every such line in one error.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.errors import MissingFileError, UnitFileError

SEPARATOR = "<s>"
MAX_LISTED = 20            # bad lines listed in one error (the rest are counted)
_UNIT_INDEX = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class UnitRecord:
    """One utterance: ``units`` (n,) unit symbols, ``labels`` (k,) label tokens (may be empty);
    ``line``: its 1-based line in the file it was read from (0 if not read from a file)."""

    id: str
    units: Tuple[str, ...]
    labels: Tuple[str, ...]
    line: int = field(default=0, compare=False)


def list_problems(path, problems: Sequence[str], what: str) -> str:
    """One error text for many bad lines: a headline, then up to MAX_LISTED ``file:line: ...`` entries."""
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{path}: {len(problems)} {what}:\n  {shown}{more}"


def check_unit_indices(path, records: Sequence[UnitRecord]) -> None:
    """Every unit symbol must be a non-negative integer (a k-means cluster index). Raises
    :class:`~s3prl_speechprompt.errors.UnitFileError` naming every bad line (``file:line``), e.g. a line
    ``foo bar <s> no``, a special symbol such as ``<unk>`` written as a unit, or ``-1``."""
    problems = []
    for i, r in enumerate(records):
        bad = [u for u in dict.fromkeys(r.units) if not _UNIT_INDEX.fullmatch(u)]
        if bad:
            where = f"{path}:{r.line}" if r.line else f"{path}: record {i + 1} (id {r.id})"
            shown = ", ".join(repr(u) for u in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            verb = "is not an integer unit" if len(bad) == 1 else "are not integer units"
            problems.append(f"{where}: {shown} {verb}")
    if problems:
        raise UnitFileError(list_problems(path, problems, f"of {len(records)} lines have unit symbols that are not "
                                          f"k-means unit indices (non-negative integers, e.g. '71 12 57 <s> label')"))


def _malformed(path: Path, lineno: int, line: str, why: str) -> ValueError:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return ValueError(f"{path}:{lineno}: {why}; line was {shown!r}")


def _parse_speechprompt(path: Path, lineno: int, line: str) -> UnitRecord:
    tokens = line.split()
    n_sep = tokens.count(SEPARATOR)
    if n_sep == 0:
        raise _malformed(path, lineno, line,
                         f"no '{SEPARATOR}' separator (expected 'u1 u2 ... <s> label')")
    if n_sep > 1:
        raise _malformed(path, lineno, line,
                         f"{n_sep} '{SEPARATOR}' separators, expected exactly one ('u1 u2 ... <s> label')")
    cut = tokens.index(SEPARATOR)
    units, labels = tokens[:cut], tokens[cut + 1:]
    if not units:
        raise _malformed(path, lineno, line, f"no units before '{SEPARATOR}'")
    return UnitRecord(f"{path.stem}-{lineno}", tuple(units), tuple(labels), lineno)


def _parse_tsv(path: Path, lineno: int, line: str) -> UnitRecord:
    fields = line.split("\t")
    if len(fields) != 3:
        raise _malformed(path, lineno, line,
                         f"{len(fields)} tab-separated fields, expected 3 (id, units, labels)")
    uid, units, labels = fields[0].strip(), fields[1].split(), fields[2].split()
    if not uid:
        raise _malformed(path, lineno, line, "empty id (first field)")
    if not units:
        raise _malformed(path, lineno, line, "empty units (second field)")
    if SEPARATOR in units or SEPARATOR in labels:
        raise _malformed(path, lineno, line,
                         f"'{SEPARATOR}' inside a TSV field; TSV keeps units and labels in separate columns")
    return UnitRecord(uid, tuple(units), tuple(labels), lineno)


def read_unit_file(path: str | os.PathLike) -> List[UnitRecord]:
    """Read a SpeechPrompt ``units <s> labels`` file or our TSV manifest (blank lines skipped); every malformed
    line is in one :class:`~s3prl_speechprompt.errors.UnitFileError` (``file:line: what``, the first MAX_LISTED,
    and a count).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: unit file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        return []
    parse = _parse_tsv if "\t" in first else _parse_speechprompt
    records, problems = [], []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(parse(path, lineno, line))
            except ValueError as e:
                problems.append(str(e))
    if problems:
        if len(problems) == 1:
            raise UnitFileError(problems[0])
        raise UnitFileError(list_problems(path, problems, "malformed lines"))
    return records


def _check_writable(i: int, rec: UnitRecord) -> None:
    where = f"record {i} (id {rec.id!r})"
    if not rec.id or any(c in rec.id for c in "\t\n\r"):
        raise ValueError(f"{where}: the id must be non-empty and contain no tab or newline")
    if not rec.units:
        raise ValueError(f"{where}: no units; every utterance needs at least one unit")
    for kind, toks in (("unit", rec.units), ("label", rec.labels)):
        for tok in toks:
            if not tok or tok == SEPARATOR or any(c.isspace() for c in tok):
                raise ValueError(f"{where}: {kind} {tok!r} is empty, '{SEPARATOR}' or contains whitespace")


def write_unit_manifest(path: str | os.PathLike, records: Iterable[UnitRecord]) -> None:
    """Write our TSV manifest atomically (temp file in the same dir, then ``os.replace``)."""
    path = Path(path)
    records = list(records)
    for i, rec in enumerate(records):
        _check_writable(i, rec)
    text = "".join(f"{r.id}\t{' '.join(r.units)}\t{' '.join(r.labels)}\n" for r in records)
    atomic_write_text(path, text)
