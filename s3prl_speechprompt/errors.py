"""User-facing errors and how the command-line entry points report them.

Rule (the same for ``speechprompt`` and ``speechprompt-run-downstream``): an error that is the user's to fix
(a missing corpus, a bad config value, a file that fails a check, a failed download, no GPU) ends the
command with **one line** ``<prog>: error: <message>`` on stderr and **exit code 2**; anything else is a bug
and keeps its full traceback (exit code 1). ``<prog>`` is what argparse calls the command in its own usage
errors: ``speechprompt <command>`` (e.g. ``speechprompt train``) and ``speechprompt-run-downstream``.
Each entry point reports in one place, :func:`run_reporting_errors`; commands only raise.

"The user's to fix" is decided by the exception's type, never by where it was raised (:func:`is_user_error`):

- a :class:`UserError`: our checks raise one of the subclasses below on purpose, with a message that names the
  file, flag or config key and the fix;
- a YAML file that does not parse (yaml's own error names the file, line and column);
- the operating system refusing a path the user gave: ``FileNotFoundError``, ``FileExistsError``,
  ``IsADirectoryError``, ``NotADirectoryError`` or ``PermissionError`` with its ``filename`` set
  (``[Errno 13] Permission denied: 'out/preds.jsonl'``): e.g. an ``--out`` in a read-only folder, or a path
  from a config that s3prl opens itself.

Everything else - a ``ValueError`` from torch, numpy, s3prl or from our own internal checks, a ``TypeError``,
a ``RuntimeError`` - is a bug and is shown with its traceback. ``--verbose`` or the environment variable
``SPEECHPROMPT_TRACEBACK=1`` shows the traceback for user errors too.

Each subclass below also subclasses the builtin exception such a check raised before (``ValueError``,
``FileNotFoundError``, ``KeyError``, ``RuntimeError``, ``OSError``), so code and tests that catch those keep working.
Elsewhere: ``synth.tts.EspeakUnavailable`` (RuntimeError, no TTS library) and
``report.compare.TestSetMismatch`` (ValueError, runs scored on different test sets) are UserErrors too, and
``record.OldRunError`` (a CheckpointError: a run directory from before run.json, naming its converter).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional

EXIT_USER_ERROR = 2          # bad input / config / environment (also argparse's usage-error code)
TRACEBACK_ENV = "SPEECHPROMPT_TRACEBACK"


class UserError(Exception):
    """A problem the user fixes (input, config, environment), reported as one line with exit code 2."""


class ConfigError(UserError, ValueError):
    """A config value, command-line flag or environment variable we cannot use; the message names it."""


class InputFileError(UserError, ValueError):
    """A file the user gave fails a check; the message starts with the file (``file:line`` where it helps)."""


class UnitFileError(InputFileError):
    """A unit file has lines the LM cannot read (the message lists them as ``file:line: what``)."""


class KMeansFileError(InputFileError):
    """A k-means file cannot be read safely (unreadable, or it names code we do not run)."""


class CheckpointError(InputFileError):
    """A unit-LM checkpoint, runner checkpoint or trained run that cannot be used as is; names file and fix."""


class LMMismatchError(UserError, ValueError):
    """The unit LM given is not the one the prompts / the run were trained on (the weights' fingerprints differ)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory named by a flag or config key does not exist; the message names it and the key."""


class OutputExistsError(UserError, FileExistsError):
    """An output path is in the way (a non-empty directory, a file where a directory goes); names the override."""


class UnknownNameError(UserError, KeyError):
    """An unknown name (task, downstream) and the known ones. Printed as given, not quoted as ``KeyError`` is."""

    __str__ = Exception.__str__


class DownloadError(UserError, RuntimeError):
    """A published artefact could not be downloaded; the message names the URL and where to place the file."""


class DeviceError(UserError, RuntimeError):
    """The requested device (e.g. ``--device cuda``) is not available."""


class DiskFullError(UserError, OSError):
    """The disk filled up while a file was written (atomic.py): the previous version of that file is intact.
    Raised as ``DiskFullError(errno, message, path)``; printed as the message alone (it names the path)."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror is not None else Exception.__str__(self)


class DirectoryLockedError(UserError, RuntimeError):
    """Another running job holds the output directory (runlock.py); the message names the holder."""


_PATH_REFUSALS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_user_error(exc: BaseException) -> bool:
    """True if ``exc`` is reported as one line (see the module docstring for the rule)."""
    if isinstance(exc, UserError):
        return True
    if type(exc).__module__.startswith("yaml") and type(exc).__name__.endswith("Error"):
        return True                    # a YAML file that does not parse; yaml's message names file, line, column
    return isinstance(exc, _PATH_REFUSALS) and getattr(exc, "filename", None) is not None


def show_traceback(verbose: bool = False) -> bool:
    return verbose or os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(exc: BaseException) -> str:
    """The message as raised (a message listing several bad files keeps its own lines)."""
    return str(exc).strip() or type(exc).__name__


def run_reporting_errors(prog: str, fn: Callable[[], Optional[int]], verbose: bool = False) -> int:
    """Call ``fn``; a user error becomes ``<prog>: error: <message>`` on stderr and exit code 2.

    Other exceptions propagate unchanged (full traceback, exit code 1), as does everything with ``verbose``
    or ``SPEECHPROMPT_TRACEBACK=1``.
    """
    try:
        return fn() or 0
    except Exception as exc:
        if show_traceback(verbose) or not is_user_error(exc):
            raise
        sys.stdout.flush()
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
