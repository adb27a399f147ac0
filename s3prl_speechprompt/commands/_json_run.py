"""What ``train``, ``evaluate`` and ``pretrain-ulm`` share: a ``--threads`` flag, and one way to end: the run's
summary as the last stdout line (one JSON object, what scripts parse). Errors are not handled here: a user error
raised by the work reaches ``speechprompt``'s one reporter (:mod:`s3prl_speechprompt.errors`) and ends as one
line ``speechprompt <command>: error: ...`` with exit status 2; a bug keeps its traceback."""
import json
import sys


def log_to_stderr(message: str) -> None:
    """Progress lines go to stderr, so stdout holds only the JSON summary."""
    print(message, file=sys.stderr)


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = all cores this process may use)")


def run_json(work) -> int:
    """``work()`` -> its summary dict printed as JSON on stdout (exit 0); exceptions propagate."""
    print(json.dumps(work()))
    return 0
