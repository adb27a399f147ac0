"""What ``train``, ``evaluate`` and ``pretrain-ulm`` share: a ``--threads`` flag, and one way to end: the run's
summary as the last stdout line (one JSON object, what scripts parse), or, for a problem with the user's input,
one line ``speechprompt <command>: error: ...`` on stderr and exit status 2 (no traceback)."""
import json
import sys

INPUT_ERRORS = (ValueError, OSError, KeyError)


def log_to_stderr(message: str) -> None:
    """Progress lines go to stderr, so stdout holds only the JSON summary."""
    print(message, file=sys.stderr)


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = all cores this process may use)")


def run_json(name: str, work, errors=INPUT_ERRORS) -> int:
    """``work()`` -> its summary dict printed as JSON (exit 0), or the input error as one line (exit 2)."""
    try:
        summary = work()
    except errors as e:
        print(f"speechprompt {name}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
