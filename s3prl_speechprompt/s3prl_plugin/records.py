"""``log_records`` for s3prl's runner, shared by the prompt and the baseline expert (mixed into both).

Per evaluated split: tensorboard scalars ``<tag>/<split>-<metric|loss>``, a ``log.log`` line
``step N: <split> <metric>: <value>; ...; loss: <value>``, ``<split>_predict.txt`` / ``<split>_truth.txt``
(id + label string, sorted by id), and ``dev-best.ckpt`` whenever the task's primary metric on its
``best_split`` (default ``dev``) improves. Once per run: ``speechprompt_info.json`` (sizes).

``-m inference -t FILE``: :meth:`RecordLogger.log_inference` prints each prediction and writes
``<expdir>/inference.ark`` (``<file stem> <label string>`` per line), as s3prl's ASR expert writes its own.

The expert provides ``log_tag``, ``log_prefix``, ``size_info() -> dict`` and may override
``extra_metrics(records) -> dict``; it sets ``self._logged_size = False`` and a ``best_score`` buffer.
"""
from __future__ import annotations

import json

from s3prl_speechprompt.atomic import atomic_write_text


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
        with open(self.expdir / "log.log", "a") as f:
            f.write(f"step {global_step}: " + "; ".join(lines) + f"; loss: {loss:.6g}\n")
        print(f"[{self.log_prefix}] step {global_step}: " + "; ".join(lines))
        score = metrics[self.task.primary_metric] * (1 if self.task.higher_is_better else -1)
        if split == getattr(self.task, "best_split", "dev") and score > float(self.best_score):
            self.best_score.fill_(score)
            return ["dev-best.ckpt"]
        return []

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
        logger.add_scalar(f"{tag}/trainable_params", info["trainable_params"], global_step=0)
        logger.add_scalar(f"{tag}/checkpoint_bytes", info["checkpoint_bytes"], global_step=0)
        atomic_write_text(self.expdir / "speechprompt_info.json", json.dumps(info, indent=1))
        print(f"[{self.log_prefix}] trainable parameters: {info['trainable_params']:,}; "
              f"stored per task: {info['checkpoint_bytes']:,} bytes")
        self._logged_size = True
