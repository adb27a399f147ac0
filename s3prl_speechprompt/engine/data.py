"""Unit files -> token ids and length-bucketed batches.

Batches are built from a length-sorted order (random tie-breaking) and then shuffled, as fairseq
does, so little compute goes to padding; the order depends only on ``(seed, epoch)`` so that a
resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import torch

from s3prl_speechprompt.errors import InputFileError, UnitFileError
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.units.manifest import UnitRecord, check_unit_indices, list_problems, read_unit_file


def default_threads() -> int:
    """Cores this process may use (respects taskset/cgroup affinity), for ``torch.set_num_threads``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                              # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def read_records(path, what: str, dictionary: Optional[Dictionary] = None) -> List[UnitRecord]:
    """A unit file's utterances, checked before any training: every line well formed, every unit a k-means
    index (a line ``foo bar <s> no`` is an error naming ``file:line``, with all such lines listed) and, given
    the LM's ``dictionary``, one of its units."""
    records = read_unit_file(path)
    if not records:
        raise InputFileError(f"{path}: no utterances in the {what} unit file")
    check_unit_indices(path, records)
    if dictionary is not None:
        check_in_dictionary(path, records, dictionary)
    return records


def _describe(dictionary: Dictionary) -> str:
    units = dictionary.units
    if units == [str(i) for i in range(len(units))]:
        return f"{len(units)} units, 0..{len(units) - 1}"
    return f"{len(units)} units, e.g. {', '.join(units[:5])}"


def check_in_dictionary(path, records: Sequence[UnitRecord], dictionary: Dictionary) -> None:
    """Every unit must be one of the dictionary's units (not a special symbol such as ``<unk>``); one
    :class:`~s3prl_speechprompt.errors.UnitFileError` lists every line that has others."""
    known = set(dictionary.units)
    problems = []
    for i, r in enumerate(records):
        missing = [u for u in dict.fromkeys(r.units) if u not in known]
        if missing:
            where = f"{path}:{r.line}" if r.line else f"{path}: utterance {r.id} (record {i + 1})"
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            problems.append(f"{where}: unit{'s' if len(missing) > 1 else ''} {shown} not in the dictionary")
    if problems:
        raise UnitFileError(list_problems(
            path, problems, f"of {len(records)} lines have units outside the LM's dictionary (dict.txt: "
                            f"{_describe(dictionary)}; units must come from the k-means the LM was trained on)"))


def encode_sources(records: Sequence[UnitRecord], dictionary: Dictionary, path) -> List[List[int]]:
    """Unit symbols -> LM ids through dict.txt, after :func:`check_in_dictionary`."""
    check_in_dictionary(path, records, dictionary)
    return [dictionary.encode(r.units) for r in records]


def bucketed_batches(lengths: Sequence[int], *, max_sentences: int, max_tokens: Optional[int] = None,
                     seed: int = 0, epoch: int = 0, shuffle: bool = True) -> List[List[int]]:
    """Index batches of similar length: at most ``max_sentences`` rows and (if given) ``max_tokens``
    padded tokens each. Deterministic in ``(seed, epoch)``."""
    n = len(lengths)
    lens = torch.as_tensor(list(lengths), dtype=torch.long)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        order = perm[torch.argsort(lens[perm], stable=True)]
    else:
        order = torch.argsort(lens, stable=True)
    batches, cur, cur_max = [], [], 0
    for i in order.tolist():
        L = int(lens[i])
        new_max = max(cur_max, L)
        if cur and (len(cur) >= max_sentences or (max_tokens and new_max * (len(cur) + 1) > max_tokens)):
            batches.append(cur)
            cur, new_max = [], L
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch + 7)
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
    return batches

