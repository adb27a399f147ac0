"""``speechprompt train --method``: which trainer serves which method.

The one module that knows both trainers, so neither imports the other: :mod:`.trainer` holds PT / FT-LM and
what the methods share (``fit_engine``: the run through :mod:`.loop`), :mod:`.baseline` the unit BLSTM.
"""
from __future__ import annotations

from pathlib import Path

from s3prl_speechprompt.engine.baseline import train_blstm
from s3prl_speechprompt.engine.trainer import TrainConfig, train_prompted, write_run_record
from s3prl_speechprompt.errors import ConfigError


def train(train_path, valid_path, ulm_path, exp, cfg: TrainConfig, resume=False, log=print) -> dict:
    """Train ``cfg.method`` (pt | ftlm | blstm) from unit files into ``exp``; returns the run's summary (and
    records it in EXP/run.json, after everything the run writes)."""
    if cfg.method == "blstm":
        summary = train_blstm(train_path, valid_path, exp, cfg, resume=resume, log=log)
    elif not ulm_path:
        raise ConfigError(f"--ulm is required for --method {cfg.method} (a unit-LM directory with "
                         f"checkpoint_best.pt and dict.txt, e.g. from `speechprompt pretrain-ulm`)")
    else:
        summary = train_prompted(train_path, valid_path, ulm_path, exp, cfg, resume=resume, log=log)
    write_run_record(Path(exp), summary, resume=True)
    return summary
