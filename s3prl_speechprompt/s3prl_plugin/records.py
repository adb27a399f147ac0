"""What the runner experts write about a run: :class:`RunRecorder`, held by the prompt and the baseline expert.

Per evaluated split (``log``): tensorboard ``<tag>/<split>-<metric|loss>``, a ``log.log`` line ``step N: <split>
<metric>: <value>; ...; loss: <value>``, s3prl's ``<split>_predict.txt`` / ``<split>_truth.txt``,
``<split>_predictions.jsonl`` (:mod:`s3prl_speechprompt.predictions`; during training also kept per step as
``predictions/<split>-step<N>.jsonl`` for the latest and the best-dev step of every split but the best split), an
evaluation in ``run.json`` (:mod:`s3prl_speechprompt.record`), and ``dev-best.ckpt`` when the primary metric on
``best_split`` (default ``dev``) improves. Once per run: ``speechprompt_info.json``. ``run.json`` is also written
when the expert is built and at process end. ``-m inference -t FILE``: :meth:`RunRecorder.log_inference` prints each
prediction and writes ``<expdir>/inference.ark`` (``<file stem> <label string>``), as s3prl's ASR expert does.
"""
from __future__ import annotations

import atexit
import json
import re
import time
from pathlib import Path
from typing import Callable, Optional

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.predictions import predictions_name, write_predictions
from s3prl_speechprompt.record import (FILE, Evaluation, OldRunError, RunRecord, now, old_run_message,
                                       runner_checkpoint_facts, runner_config_key)


def _process_start() -> float:
    """When this command started (the wall time of a session counts from there, as s3prl's args tag does)."""
    try:
        import psutil
        return psutil.Process().create_time()
    except Exception:                   # noqa: BLE001 - psutil is optional: then from the recorder's creation
        return time.time()


class RunRecorder:
    """The files an expert's ``log_records`` / ``inference`` write, and the run's ``run.json``.

    ``downstream_expert`` / ``kwargs``: what s3prl's runner passed the expert; ``sizes()``: its
    ``speechprompt_info.json`` dict; ``extra_metrics(records)``: metrics beside the task's (PT: ``unfinished``). Only
    rank 0 writes, and ``-m inference`` writes no record.
    """

    def __init__(self, expdir, task, task_name: str, downstream_expert: dict, kwargs: dict, tag: str, prefix: str,
                 sizes: Callable[[], dict], extra_metrics: Callable[[dict], dict] = lambda records: {},
                 leader: bool = True):
        self.expdir, self.task, self.task_name = Path(expdir), task, task_name
        self.kwargs = {**kwargs, "expdir": str(expdir), "downstream_expert": dict(downstream_expert)}
        self.tag, self.prefix, self.sizes, self.extra_metrics = tag, prefix, sizes, extra_metrics
        self.mode = self.kwargs.get("mode") or "train"
        self.writes = leader and self.mode in ("train", "evaluate")     # -m inference changes no record
        self.best_split = getattr(task, "best_split", "dev")
        self.logged_size = False
        self.started = self.loop_start = time.time()
        self.process_start = min(_process_start(), self.started)
        self.record: Optional[RunRecord] = None
        self.base = {}
        self.checkpoint_step = None
        # a fresh training run starts a new record; -a / -e / -i continue the run's own
        self.fresh = self.mode == "train" and not self.kwargs.get("init_ckpt")
        old = not (self.expdir / FILE).is_file() and (self.expdir / "log.log").is_file()
        if self.writes and old and not self.fresh:       # a run from before run.json: converted, not mixed
            raise OldRunError(old_run_message([self.expdir]))

    # ------------------------------------------------------------------ run.json
    def _open(self, identity: dict) -> RunRecord:
        fresh = self.fresh or not (self.expdir / FILE).is_file()
        rec = RunRecord(front_end="runner", **identity) if fresh else RunRecord.load(self.expdir)
        if self.mode == "train" or fresh:              # what this session runs (a resumed run may extend it)
            config = {k: v for k, v in self.kwargs.items() if isinstance(v, dict)}      # the YAML's sections
            args = {k: v for k, v in self.kwargs.items() if not isinstance(v, dict)}    # the runner's arguments
            for k, v in identity.items():
                setattr(rec, k, v)
            rec.upstream = {"name": args.get("upstream"), "layer": args.get("upstream_layer_selection"),
                            "ckpt": args.get("upstream_ckpt")}
            rec.seed = args.get("seed")
            rec.config = json.loads(json.dumps({"args": args, **config}, default=str))
            rec.config_key = runner_config_key(args, config)
            rec.total_steps = (config.get("runner") or {}).get("total_steps")
        return rec

    def start(self, identity: dict) -> None:
        """The expert is built (``identity``: the record's task, method, units, lm_fingerprint): the training loop
        starts now, and run.json exists from here on."""
        self.loop_start = time.time()
        if not self.writes:
            return
        self.record = self._open(identity)
        self.base = {k: getattr(self.record, k) or 0.0 for k in ("wall_s", "cpu_s", "train_loop_s")}
        if self.mode == "evaluate" and self.kwargs.get("init_ckpt"):      # the step the evaluated state is from
            facts = runner_checkpoint_facts(self.kwargs["init_ckpt"])
            self.checkpoint_step = facts.get("step")
            self.record.featurizer_params = self.record.featurizer_params or facts.get("featurizer_params") or None
        if self.mode == "train":
            info = self.sizes()
            self.record.trainable_params = info.get("trainable_params")
            self.record.stored_params = info.get("stored_params", info.get("trainable_params"))
            self.record.bytes_per_task = info.get("checkpoint_bytes")
            self.save()
            atexit.register(self.finish)

    def save(self, step: Optional[int] = None) -> None:
        if not self.writes:
            return
        rec = self.record
        if self.mode == "train":
            t = time.time()
            rec.wall_s = self.base["wall_s"] + t - self.process_start
            rec.cpu_s = self.base["cpu_s"] + time.process_time()
            rec.train_loop_s = self.base["train_loop_s"] + t - self.loop_start
            if step is not None:
                rec.steps_done = max(step, rec.steps_done or 0)
        rec.trained_task = "trained_task" if (self.expdir / "trained_task").is_dir() else None
        self.expdir.mkdir(parents=True, exist_ok=True)
        rec.save(self.expdir)

    def finish(self) -> None:
        """At the end of a training process: the final times, and the featurizer size from its checkpoints."""
        if not self.expdir.is_dir():
            return
        ckpts = sorted(self.expdir.glob("states-*.ckpt"), key=lambda p: p.stat().st_mtime)
        newest = ([self.expdir / "dev-best.ckpt"] if (self.expdir / "dev-best.ckpt").is_file() else []) + ckpts[-1:]
        if newest and self.record.featurizer_params is None:
            self.record.featurizer_params = runner_checkpoint_facts(newest[0]).get("featurizer_params") or None
        self.save()

    # ------------------------------------------------------------------ log_records
    def log(self, split: str, records, logger, global_step: int, best_score) -> list:
        """s3prl's ``log_records``: everything listed in the module docstring; returns ``["dev-best.ckpt"]`` when
        ``split`` is the best split and its primary metric improved on ``best_score`` (updated in place)."""
        self.expdir.mkdir(parents=True, exist_ok=True)
        if not self.logged_size:
            self._log_size(logger)
        loss = sum(records["loss"]) / max(len(records["loss"]), 1)
        logger.add_scalar(f"{self.tag}/{split}-loss", loss, global_step=global_step)
        if not records["hyp"]:
            if split == "train":
                self.save(global_step)
            return []
        metrics = {**self.task.score(records["hyp"], records["ref"]), **self.extra_metrics(records)}
        for name, value in metrics.items():
            logger.add_scalar(f"{self.tag}/{split}-{name}", value, global_step=global_step)
        if split == "train":
            self.save(global_step)
            return []
        lines = [f"{split} {name}: {value:.6g}" for name, value in metrics.items()]
        order = sorted(range(len(records["id"])), key=lambda i: records["id"][i])
        for kind, name in (("hyp", "predict"), ("ref", "truth")):
            atomic_write_text(self.expdir / f"{split}_{name}.txt", "".join(
                f"{records['id'][i]} {self.task.label_string(records[kind][i])}\n" for i in order))
        with open(self.expdir / "log.log", "a") as f:
            f.write(f"step {global_step}: " + "; ".join(lines) + f"; loss: {loss:.6g}\n")
        print(f"[{self.prefix}] step {global_step}: " + "; ".join(lines))
        score = metrics[self.task.primary_metric] * (1 if self.task.higher_is_better else -1)
        improved = split == self.best_split and score > float(best_score)
        if improved:
            best_score.fill_(score)
            if self.record is not None and self.mode == "train":
                self.record.best = {"split": split, "step": global_step, "metric": self.task.primary_metric}
        predictions = self._write_predictions(split, records, global_step)
        if self.record is not None:
            evaluate = self.mode == "evaluate"
            self.record.add(Evaluation(
                split=split, step=self.checkpoint_step if evaluate else global_step, mode=self.mode,
                metrics={k: float(v) for k, v in metrics.items()}, n=len(records["id"]), predictions=predictions,
                checkpoint=str(self.kwargs.get("init_ckpt")) if evaluate and self.kwargs.get("init_ckpt") else None,
                at=now()))
            self.save(None if evaluate else global_step)
        return ["dev-best.ckpt"] if improved else []

    def _write_predictions(self, split: str, records, global_step: int) -> str:
        """``<split>_predictions.jsonl``; in training also ``predictions/<split>-step<N>.jsonl``, pruned to the
        latest and the best-dev step. Returns the file this evaluation's predictions stay in (relative)."""
        mode = "evaluate" if self.mode == "evaluate" else "train"
        meta = dict(task=self.task_name, split=split, step=global_step, mode=mode, seed=self.kwargs.get("seed"),
                    source="s3prl runner")
        args = (records["id"], records["ref"], records["hyp"])
        write_predictions(self.expdir / predictions_name(split), *args, **meta)
        if mode != "train" or split == self.best_split:
            return predictions_name(split)
        folder = self.expdir / "predictions"
        write_predictions(folder / f"{split}-step{global_step}.jsonl", *args, **meta)
        if self.record is not None:         # the shared file now holds this step's: older entries lose it
            self.record.forget_predictions(predictions_name(split))
        best = (self.record.best or {}).get("step") if self.record is not None else None
        if best is None:           # unknown until the best split improves: keep everything
            return f"predictions/{split}-step{global_step}.jsonl"
        for old in folder.glob(f"{split}-step*.jsonl"):
            m = re.fullmatch(rf"{re.escape(split)}-step(\d+)\.jsonl", old.name)
            if m and int(m.group(1)) not in (global_step, best):
                old.unlink()
                if self.record is not None:
                    self.record.forget_predictions(f"predictions/{old.name}")
        return f"predictions/{split}-step{global_step}.jsonl"

    def _log_size(self, logger) -> None:
        info = self.sizes()
        info.setdefault("seed", self.kwargs.get("seed"))         # s3prl's --seed (seed groups)
        logger.add_scalar(f"{self.tag}/trainable_params", info["trainable_params"], global_step=0)
        logger.add_scalar(f"{self.tag}/checkpoint_bytes", info["checkpoint_bytes"], global_step=0)
        atomic_write_text(self.expdir / "speechprompt_info.json", json.dumps(info, indent=1))
        print(f"[{self.prefix}] trainable parameters: {info['trainable_params']:,}; "
              f"stored per task: {info['checkpoint_bytes']:,} bytes")
        self.logged_size = True

    # ------------------------------------------------------------------ -m inference
    def log_inference(self, filenames, hyps) -> list:
        """Label strings of ``hyps`` (label-token tuples): printed, written to ``<expdir>/inference.ark``, returned."""
        labels = [self.task.label_string(h) for h in hyps]
        self.expdir.mkdir(parents=True, exist_ok=True)
        if filenames:
            atomic_write_text(self.expdir / "inference.ark", "".join(f"{n} {y}\n" for n, y in zip(filenames, labels)))
        for name, y in zip(filenames, labels):
            print(f"[{self.prefix}] inference {name}: {y}")
        return labels
