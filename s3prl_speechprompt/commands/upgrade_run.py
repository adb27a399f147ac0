"""Write run.json for run directories from before it, so `speechprompt report` can read them.

RUNDIR is what s3prl's runner wrote with our downstreams (args_*.yaml, config_*.yaml, log.log,
speechprompt_info.json, tensorboard events, *.ckpt, predictions) or a `speechprompt train` directory
(config.json, checkpoint_last.pt, <split>_scores.json, predictions). A folder holding several run directories
expands to them. Nothing but run.json is written; a directory that already has one is left as it is (--overwrite
to convert it again). The old files stay, and nothing reads them afterwards.

Example: speechprompt upgrade-run result/downstream/
"""
from __future__ import annotations

NAME = "upgrade-run"
HELP = "convert run directories from before run.json (log.log, tensorboard, args yaml) into run.json"


def add_arguments(parser) -> None:
    parser.add_argument("rundirs", nargs="+", metavar="RUNDIR", help="run directories (or folders of them)")
    parser.add_argument("--overwrite", action="store_true", help="convert again where run.json exists")


def run(args) -> int:
    from s3prl_speechprompt.report.runs import expand_dirs
    from s3prl_speechprompt.report.upgrade import upgrade_run

    for d in expand_dirs(args.rundirs):
        rec, written = upgrade_run(d, overwrite=args.overwrite)
        test, _ = rec.test_evaluation()
        what = f"{len(rec.evaluations)} evaluation(s)" + (f", test {test.metrics}" if test else ", no test result")
        print(f"{d}/run.json: {'written' if written else 'kept (exists; --overwrite to convert again)'}: "
              f"{rec.front_end} {rec.task} {rec.method}, {what}")
    return 0
