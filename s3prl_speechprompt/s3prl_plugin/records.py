"""``log_records`` for s3prl's runner, shared by the prompt and the baseline expert (mixed into both).

Per evaluated split: tensorboard scalars ``<tag>/<split>-<metric|loss>``, a ``log.log`` line
``step N: <split> <metric>: <value>; ...; loss: <value>``, ``<split>_predict.txt`` / ``<split>_truth.txt``
(id + label string, sorted by id; s3prl's convention), ``<split>_predictions.jsonl`` (the per-utterance
format of :mod:`s3prl_speechprompt.predictions`, read by ``speechprompt report``; during training also kept
per step as ``predictions/<split>-step<N>.jsonl`` for the latest and the best-dev step of every split but the
best split), and ``dev-best.ckpt`` whenever the task's primary metric on its ``best_split`` (default ``dev``)
improves. Once per run: ``speechprompt_info.json`` (sizes, and the runner's ``--seed``).

``-m inference -t FILE``: :meth:`RecordLogger.log_inference` prints each prediction and writes
``<expdir>/inference.ark`` (``<file stem> <label string>`` per line), as s3prl's ASR expert writes its own.

The expert provides ``log_tag``, ``log_prefix``, ``size_info() -> dict`` and may override
``extra_metrics(records) -> dict``; it sets ``self._logged_size = False`` and a ``best_score`` buffer.
"""
from __future__ import annotations

import json
import re

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.predictions import predictions_name, write_predictions


class RecordLogger:
    def extra_metrics(self, records) -> dict:
        return {}

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        tag = self.log_tag
        self.expdir.mkdir(parents=True, exist_ok=True)
        if not self._logged_size:
            self._log_size(logger, tag)
        loss = sum(records["loss"]) / max(len(records["loss"]), 1)
        logger.add_scalar(f"{tag}/{split}-loss", loss, global_step=global_step)
        if not records["hyp"]:
            return []
        metrics = {**self.task.score(records["hyp"], records["ref"]), **self.extra_metrics(records)}
        for name, value in metrics.items():
            logger.add_scalar(f"{tag}/{split}-{name}", value, global_step=global_step)
        if split == "train":
            return []
        lines = [f"{split} {name}: {value:.6g}" for name, value in metrics.items()]
        order = sorted(range(len(records["id"])), key=lambda i: records["id"][i])
        for kind, name in (("hyp", "predict"), ("ref", "truth")):
            atomic_write_text(self.expdir / f"{split}_{name}.txt", "".join(
                f"{records['id'][i]} {self.task.label_string(records[kind][i])}\n" for i in order))
        self._write_predictions(split, records, global_step)
        with open(self.expdir / "log.log", "a") as f:
            f.write(f"step {global_step}: " + "; ".join(lines) + f"; loss: {loss:.6g}\n")
        print(f"[{self.log_prefix}] step {global_step}: " + "; ".join(lines))
        score = metrics[self.task.primary_metric] * (1 if self.task.higher_is_better else -1)
        if split == getattr(self.task, "best_split", "dev") and score > float(self.best_score):
            self.best_score.fill_(score)
            self._best_step = global_step
            return ["dev-best.ckpt"]
        return []

    def _write_predictions(self, split: str, records, global_step: int) -> None:
        """``<split>_predictions.jsonl``; in training also ``predictions/<split>-step<N>.jsonl``, pruned to the
        latest and the best-dev step, so the report finds the predictions of the step its test number is from."""
        kwargs = getattr(self, "kwargs", {}) or {}
        mode = "evaluate" if kwargs.get("mode") == "evaluate" else "train"
        meta = dict(task=self.cfg.task, split=split, step=global_step, mode=mode, seed=kwargs.get("seed"),
                    source="s3prl runner")
        args = (records["id"], records["ref"], records["hyp"])
        write_predictions(self.expdir / predictions_name(split), *args, **meta)
        if mode != "train" or split == getattr(self.task, "best_split", "dev"):
            return
        folder = self.expdir / "predictions"
        write_predictions(folder / f"{split}-step{global_step}.jsonl", *args, **meta)
        best = getattr(self, "_best_step", None)
        if best is None:           # unknown until the best split improves in this process: keep everything
            return
        for old in folder.glob(f"{split}-step*.jsonl"):
            m = re.fullmatch(rf"{re.escape(split)}-step(\d+)\.jsonl", old.name)
            if m and int(m.group(1)) not in (global_step, best):
                old.unlink()

    def log_inference(self, filenames, hyps) -> list:
        """Label strings of ``hyps`` (label-token tuples): printed, written to ``<expdir>/inference.ark``, returned."""
        labels = [self.task.label_string(h) for h in hyps]
        self.expdir.mkdir(parents=True, exist_ok=True)
        if filenames:
            atomic_write_text(self.expdir / "inference.ark", "".join(f"{n} {y}\n" for n, y in zip(filenames, labels)))
        for name, y in zip(filenames, labels):
            print(f"[{self.log_prefix}] inference {name}: {y}")
        return labels

    def _log_size(self, logger, tag):
        info = self.size_info()
        info.setdefault("seed", (getattr(self, "kwargs", None) or {}).get("seed"))   # s3prl's --seed (seed groups)
        logger.add_scalar(f"{tag}/trainable_params", info["trainable_params"], global_step=0)
        logger.add_scalar(f"{tag}/checkpoint_bytes", info["checkpoint_bytes"], global_step=0)
        atomic_write_text(self.expdir / "speechprompt_info.json", json.dumps(info, indent=1))
        print(f"[{self.log_prefix}] trainable parameters: {info['trainable_params']:,}; "
              f"stored per task: {info['checkpoint_bytes']:,} bytes")
        self._logged_size = True
