"""The ``speechprompt`` command: one subcommand per module in ``s3prl_speechprompt.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily by name so ``speechprompt --help`` stays fast and one broken
optional dependency cannot take down unrelated subcommands.

Errors: commands raise, :func:`main` reports, in one place (rule: :mod:`s3prl_speechprompt.errors`): one line
``speechprompt <command>: error: ...`` (argparse's prefix for that command) and exit 2 for a user error.
"""
import argparse
import importlib
import sys

from s3prl_speechprompt.errors import TRACEBACK_ENV, run_reporting_errors

# subcommand names, in --help order; each is the module commands.<name with _ for ->
COMMANDS = {name: name.replace("-", "_") for name in (
    "ulm-info", "verbalize", "synth", "demo", "extract-units", "pretrain-ulm", "train", "evaluate", "analyze-length",
    "report", "upgrade-run", "predict")}


def _load(name):
    return importlib.import_module(f"s3prl_speechprompt.commands.{COMMANDS[name]}")


def build_parser(argv=None):
    parser = argparse.ArgumentParser(
        prog="speechprompt",
        description="SpeechPrompt for s3prl: prompt tuning a frozen GSLM unit LM (see README.md).",
        epilog="Exit codes: 0 success, 2 user error (one line 'speechprompt COMMAND: error: ...': bad input, "
               "config, missing file, failed download), 1 unexpected error (with traceback).",
    )
    parser.add_argument("--verbose", action="store_true",
                        help=f"show the traceback of every error, also of user errors (same as {TRACEBACK_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        if wanted in COMMANDS and name != wanted:
            # only the requested command's module is imported; others get a stub entry for --help
            sub.add_parser(name)
            continue
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None, *, report_errors=None):
    """The ``speechprompt`` command. As a command (``argv`` None, or ``report_errors=True``) user errors become
    one line and exit code 2; called from Python with ``argv``, exceptions propagate to the caller."""
    if report_errors is None:
        report_errors = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if not report_errors:
        sys.exit(args._run(args) or 0)
    sys.exit(run_reporting_errors(f"speechprompt {args.command}", lambda: args._run(args), verbose=args.verbose))
