"""The one checked reader of the binary files we load: checkpoints, trained tasks, prompt files, k-means files.

Every load path (s3prl's runner ``-e / -i / -a``, ``speechprompt evaluate`` / ``predict`` / ``train --resume``,
the unit-LM loader, k-means files) reads a torch file through :func:`read_torch`, so one damaged file gets the
same one-line :class:`~s3prl_speechprompt.errors.CheckpointError` wherever it is given: the file, what was
expected, what was found - empty, cut short (a copy or download interrupted half way), not a PyTorch file at all
(a km.bin, a text file), or a PyTorch file of another kind (a runner checkpoint given as a unit LM). Nothing is
written before the check, and no code named by the file runs (``weights_only=True``, or the caller's restricted
unpickler for fairseq checkpoints).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Type

from s3prl_speechprompt.errors import CheckpointError, MissingFileError

# formats of our own torch files, as written in their "format" entry (kept in sync with their writers)
OWN_FORMATS = {"s3prl-speechprompt-engine/1": "a `speechprompt train` checkpoint (checkpoint_last.pt)",
               "s3prl_speechprompt.kmeans": "a k-means file of KMeansQuantizer.save"}


def sniff(path: Path) -> str:
    """What a file looks like from its first bytes (for messages): 'empty', 'zip', 'pickle', 'npy', 'text', 'binary'."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary"


_LOOKS = {"pickle": "a plain pickle (e.g. a joblib km.bin, or a PyTorch file of before torch 1.6)",
          "npy": "a NumPy .npy array", "text": "a text file", "binary": "binary data that is not a PyTorch file",
          "zip": "a zip archive"}


def describe(obj: Any) -> str:
    """What a loaded torch object is, in words (for 'expected X, found Y')."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}"
    keys = set(obj)
    if {"Args", "Config", "Downstream"} <= keys:
        return "an s3prl runner checkpoint"
    if "model" in keys and keys & {"cfg", "args"}:
        return "a fairseq checkpoint (a unit LM)"
    if obj.get("format") in OWN_FORMATS:
        return OWN_FORMATS[obj["format"]]
    if isinstance(obj.get("format"), str):
        return f"a file of format {obj['format']!r}"
    if "state_dict" in keys:
        return "a prompt / model state file (prompt.pt, model.pt)"
    return f"a dict with keys {sorted(map(str, keys))[:6]}"


def read_torch(path, expected: str, *, flag: str = "", is_expected: Optional[Callable[[Any], bool]] = None,
               restricted_pickle: Any = None, mmap: bool = False, error: Type[CheckpointError] = CheckpointError,
               allow: Sequence[type] = ()):
    """``torch.load(path, weights_only=True)`` on CPU, or one clear error (see the module docstring).

    ``expected`` names what the caller wants ("an s3prl runner checkpoint"); ``flag`` the option or key the path
    came from (named in the message). ``is_expected(obj)`` tells the right kind from another. ``restricted_pickle``
    (a pickle module whose Unpickler refuses code) is tried when torch's weights-only reader refuses a class:
    fairseq checkpoints hold argparse / omegaconf objects. ``mmap`` maps a zip file instead of reading it (a check
    of a large file before s3prl reads it itself). ``allow``: classes the file may hold besides torch's weights-only
    set (s3prl's checkpoints keep their ``Args`` as an ``argparse.Namespace``)."""
    import contextlib

    import torch

    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    if not path.is_file():
        raise MissingFileError(f"{where}: no such file (expected {expected})")
    size = path.stat().st_size
    looks = sniff(path)
    if looks == "empty":
        raise error(f"{where}: the file is empty (0 bytes), expected {expected}; a copy or save that was "
                    f"interrupted leaves such files: copy it again")
    if looks not in ("zip", "pickle"):
        raise error(f"{where}: is {_LOOKS[looks]}, not a PyTorch file; expected {expected}")
    if looks == "zip" and not zipfile.is_zipfile(path):
        raise error(f"{where}: the file is cut short ({size:,} bytes: the end of its zip archive is missing), "
                    f"expected {expected}; a copy or download was interrupted: copy it again")
    # torch's safe_globals() context drops its classes on exit even if they were allowed before: enter it only
    # for the ones not allowed already
    extra = [c for c in allow if c not in torch.serialization.get_safe_globals()]
    try:
        with torch.serialization.safe_globals(extra) if extra else contextlib.nullcontext():
            obj = _load(path, looks, mmap, restricted_pickle)

    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError, OSError) as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        reason = reason.splitlines()[0] if reason else type(e).__name__
        if looks == "pickle":
            raise error(f"{where}: is {_LOOKS['pickle']}, expected {expected}") from None
        if isinstance(e, pickle.UnpicklingError) and "truncated" not in reason:
            raise error(f"{where}: holds something other than tensors and plain containers ({reason}); "
                        f"expected {expected}; only those are read, never code from the file") from None
        raise error(f"{where}: the file is damaged or cut short ({size:,} bytes; {type(e).__name__}: {reason}), "
                    f"expected {expected}; copy it again") from None
    if is_expected is not None and not is_expected(obj):
        raise error(f"{where}: is {describe(obj)}, expected {expected}")
    return obj


def read_json(path, expected: str, *, flag: str = "", error: Type[CheckpointError] = CheckpointError):
    """A JSON file we wrote (config.json, trained_task.json, run.json), or one line naming it: missing, empty, cut
    short or not JSON. (Our writers are atomic, so such a file was damaged after it was written.)"""
    import json

    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    if not path.is_file():
        raise MissingFileError(f"{where}: no such file (expected {expected})")
    text = path.read_bytes()
    if not text.strip():
        raise error(f"{where}: the file is empty, expected {expected}; copy it again")
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise error(f"{where}: is not valid JSON ({e}; {len(text):,} bytes: damaged or cut short), expected "
                    f"{expected}; copy it again") from None


def _load(path: Path, looks: str, mmap: bool, restricted_pickle: Any):
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and looks == "zip")
    except pickle.UnpicklingError:
        if restricted_pickle is None:
            raise
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)


def is_runner_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and {"Args", "Config", "Downstream"} <= set(obj)


RUNNER_CHECKPOINT = "an s3prl runner checkpoint (states-<step>.ckpt or dev-best.ckpt)"
