"""User-facing errors and how the command-line entry points report them.

Rule (the same for ``speechprompt`` and ``speechprompt-run-downstream``): an error that is the user's to fix
(a missing corpus, a bad config value, a file that fails a check, a failed download, no GPU) ends the
command with **one line** ``<prog>: error: <message>`` on stderr and **exit code 2**; anything else is a bug
and keeps its full traceback (exit code 1). "The user's to fix" means:

- an instance of :class:`UserError` (raised by our own checks: downloads, devices, unit files, k-means files), or
- a ``ValueError`` / ``OSError`` (``FileNotFoundError``, ``NotADirectoryError``, ...) raised by code of this
  package (the innermost traceback frame is a file of ``s3prl_speechprompt``): our config and corpus checks
  raise these with messages that name the file or field and the fix; or
- a YAML file that does not parse (yaml's own error names the file, line and column).

A ``ValueError`` from inside torch, numpy or s3prl, and every other exception type (``TypeError``,
``RuntimeError``, ...), is not ours to explain and is shown with its traceback. ``--verbose`` or the environment
variable ``SPEECHPROMPT_TRACEBACK=1`` shows the traceback for user errors too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

EXIT_USER_ERROR = 2          # bad input / config / environment (also argparse's usage-error code)
TRACEBACK_ENV = "SPEECHPROMPT_TRACEBACK"
_PACKAGE_DIR = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem the user fixes (input, config, environment), reported as one line with exit code 2."""


class DownloadError(UserError, RuntimeError):
    """A published artefact could not be downloaded; the message names the URL and where to place the file."""


class DeviceError(UserError, RuntimeError):
    """The requested device (e.g. ``--device cuda``) is not available."""


class UnitFileError(UserError, ValueError):
    """A unit file has lines the LM cannot read (the message lists them as ``file:line: what``)."""


class KMeansFileError(UserError, ValueError):
    """A k-means file cannot be read safely (unreadable, or it names code we do not run)."""


def _raised_in_package(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def is_user_error(exc: BaseException) -> bool:
    """True if ``exc`` is reported as one line (see the module docstring for the rule)."""
    if isinstance(exc, UserError):
        return True
    if type(exc).__module__.startswith("yaml") and type(exc).__name__.endswith("Error"):
        return True                    # a YAML file that does not parse; yaml's message names file, line, column
    return isinstance(exc, (ValueError, OSError)) and _raised_in_package(exc)


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

