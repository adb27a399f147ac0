"""Atomic file writes: a temp file in the target directory, fsync, then rename.

A run killed at any moment leaves either the old file or the new one, never half of one. A full disk
(``ENOSPC``, or a quota: ``EDQUOT``) while writing is the same case: the temp file goes, the previous version
of the file stays whole, and the error says so in one line (:class:`~s3prl_speechprompt.errors.DiskFullError`),
so a training run stopped that way resumes from its last complete checkpoint once there is room.
:class:`PartialLines` does the same for an output written record by record (``speechprompt predict --out``).
"""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from s3prl_speechprompt.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _FULL:
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise DiskFullError(e.errno, f"{path}: no space left on the device while writing it ({len(data):,} "
                                         f"bytes); {kept}. Free some space (or point the output elsewhere) and run "
                                         f"again; a training run continues from its last checkpoint with --resume "
                                         f"/ -a", str(path)) from e
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class PartialLines:
    """A line-per-record output that a killed job leaves resumable instead of half-written.

    Lines go to ``<path>.partial`` (flushed and fsynced per :meth:`write`), with the job's identity in
    ``<path>.partial.json``; :meth:`finish` renames the partial file to ``path``, so ``path`` only ever holds a
    complete output. A rerun of the same job (same identity) keeps the complete records of the partial file -
    whole groups of ``group`` lines, a torn last line dropped - and continues after them, so the finished file has
    every record once; a partial file of another job is discarded.
    """

    def __init__(self, path, identity: dict, group: int = 1):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.meta = self.path.with_name(self.path.name + ".partial.json")
        self.identity, self.group = json.loads(json.dumps(identity)), max(int(group), 1)
        self._f = None

    def open(self) -> int:
        """Start or continue; returns how many complete groups the partial file already holds."""
        kept = 0
        if self.partial.is_file() and self.meta.is_file():
            try:
                same = json.loads(self.meta.read_text(encoding="utf-8")) == self.identity
            except (OSError, ValueError):
                same = False
            if same:
                lines = self.partial.read_bytes().split(b"\n")[:-1]          # the last element is torn or empty
                kept = len(lines) // self.group
                with open(self.partial, "r+b") as f:
                    f.truncate(sum(len(line) + 1 for line in lines[:kept * self.group]))
        if not kept:
            self.partial.unlink(missing_ok=True)
            atomic_write_text(self.meta, json.dumps(self.identity))
        self._f = open(self.partial, "ab")
        return kept

    def write(self, lines) -> None:
        self._f.write("".join(line + "\n" for line in lines).encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def finish(self) -> None:
        self.close()
        os.replace(self.partial, self.path)
        self.meta.unlink(missing_ok=True)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
