"""Atomic file writes: a temp file in the target directory, fsync, then rename.

A run killed at any moment leaves either the old file or the new one, never half of one. A full disk
(``ENOSPC``, or a quota: ``EDQUOT``) while writing is the same case: the temp file goes, the previous version
of the file stays whole, and the error says so in one line (:class:`~s3prl_speechprompt.errors.DiskFullError`),
so a training run stopped that way resumes from its last complete checkpoint once there is room.
"""
from __future__ import annotations

import errno
import io
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
