"""The SpeechPrompt downstream expert for s3prl's runner (``-d speechprompt_<task>``)::

    features (selected upstream layer) -> k-means -> dedup -> GSLM tokens -> prompted unit LM

One class serves every task (``downstream_expert.task``: reader and scorer; ``.method``: ``pt`` or ``ftlm``).
Checkpoints hold what training changed (prompts, separator, verbalizer head; the whole LM for FT-LM), the k-means
centroids, the verbalizer and the LM's weights fingerprint - never the frozen LM. With every ``dev-best.ckpt`` the
trained task is written to ``<expdir>/trained_task/`` (runner_patches.py), which ``speechprompt predict`` serves;
the prompt config and decoding budget are trained.py's.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from s3prl_speechprompt import precision
from s3prl_speechprompt.errors import ConfigError, LMMismatchError
from s3prl_speechprompt.lm_ref import LMCache, fingerprint_matches
from s3prl_speechprompt.prompt.prefix import init_prompts
from s3prl_speechprompt.prompt.decode import Decoded, decode
from s3prl_speechprompt.prompt.prompted import PromptedULM, build_batch
from s3prl_speechprompt.prompt.verbalizer import Verbalizer, build_verbalizer
from s3prl_speechprompt.s3prl_plugin.config import from_expert_dict
from s3prl_speechprompt.s3prl_plugin.data import SplitData, saved_extra_state
from s3prl_speechprompt.s3prl_plugin.records import RunRecorder
from s3prl_speechprompt.tasks.base import read_item_audio
from s3prl_speechprompt.trained import decoding_budget, runner_prompt_config
from s3prl_speechprompt.ulm.pretrained import resolve_kmeans
from s3prl_speechprompt.units.prepare import prepare_units, to_units
from s3prl_speechprompt.units.quantizer import KMeansQuantizer

log = logging.getLogger(__name__)


@dataclass
class ExpertConfig:
    """``downstream_expert`` of the YAML, validated once."""

    task: str
    ulm: str                                   # unit-LM dir/file, or a GSLM name (hubert100, cpc100)
    datarc: dict = field(default_factory=dict)  # the task's SUPERB keys + batch_size, eval_batch_size, num_workers
    method: str = "pt"                         # pt | ftlm
    km: Optional[str] = None                   # km.bin / our k-means file / GSLM name; None = fit on train
    n_clusters: int = 100
    fit_max_frames: int = 200_000
    verbalizer: str = "freq"
    prompt: dict = field(default_factory=dict)  # PromptConfig fields; prompt_length defaults to the task's
    max_new_tokens: Optional[int] = None       # decoding budget; default from the task's label length
    beam_size: int = 1                         # 1 = greedy decoding; >1 = beam search (prompt/decode.py)
    balanced_sampling: bool = True             # class-balanced training batches (SUPERB KS)
    bad_audio: str = "error"                   # unusable audio files: error (name them all) | skip (count, list)
    precision: str = "fp32"                    # fp32 | bf16 | fp16: autocast of the LM forward and decoding
    cache_dir: Optional[str] = None

    @classmethod
    def from_dict(cls, d: dict) -> "ExpertConfig":
        cfg = from_expert_dict(cls, d, required=("task", "ulm"))
        precision.check(cfg.precision, "downstream_expert.precision")
        return cfg


def check_runner_precision(prec: str, runner: dict, device: str) -> None:
    """fp16 needs loss scaling, and s3prl's runner owns backward and the optimizer step: its ``runner.fp16`` GradScaler
    is the scaler, so ``precision: fp16`` requires ``runner.fp16: true`` on CUDA (which also autocasts the upstream;
    the LM's precision stays ``downstream_expert.precision``). s3prl does not checkpoint its scaler: a resumed run
    restarts from the initial scale, which costs at most a few skipped steps.
    """
    if prec != "fp16":
        return
    if not str(device).startswith("cuda"):
        raise ConfigError(f"downstream_expert.precision: fp16 needs CUDA (s3prl's fp16 loss scaler is CUDA-only; "
                         f"device is {device!r}); use precision: bf16 on CPU")
    if not runner.get("fp16"):
        raise ConfigError("downstream_expert.precision: fp16 needs loss scaling, which s3prl's runner applies only "
                         "with runner.fp16: true; add -o config.runner.fp16=True (or use precision: bf16, no scaler)")


class DownstreamExpert(nn.Module):
    load_audio = staticmethod(SplitData.load_audio)     # s3prl's -m inference -t FILE reads audio through this

    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__()
        self.cfg = ExpertConfig.from_dict(dict(downstream_expert))
        check_runner_precision(self.cfg.precision, kwargs.get("runner") or {}, kwargs.get("device", "cuda"))
        self.data = SplitData(self.cfg.task, self.cfg.datarc, expdir, kwargs, self.cfg.balanced_sampling,
                              self.cfg.bad_audio)
        self.task = self.data.task
        self.recorder = RunRecorder(expdir, self.task, self.cfg.task, downstream_expert, kwargs,
                                    tag=f"speechprompt_{self.cfg.task}",
                                    prefix="speechprompt", sizes=self.size_info, extra_metrics=self.extra_metrics,
                                    leader=self.data.leader)

        lm, self.dictionary, self.lm_fingerprint = LMCache.fresh(self.cfg.ulm)     # FT-LM trains it: not shared
        saved = saved_extra_state(kwargs.get("init_ckpt"), "centroids")
        train_units = None
        if saved is not None:       # -e / -i / resume: reuse the run's own k-means and verbalizer
            self.quantizer = KMeansQuantizer(saved["centroids"])
            self.verbalizer = Verbalizer.from_dict(saved["verbalizer"])
        else:
            self.quantizer, self.verbalizer, train_units = self._prepare(kwargs, upstream_dim)
        if self.quantizer.dim != upstream_dim:
            raise ConfigError(f"k-means dimension {self.quantizer.dim} != upstream feature dimension {upstream_dim}; "
                             f"the k-means ({self.cfg.km or 'fitted'}) belongs to another upstream/layer")
        missing = [str(k) for k in range(self.quantizer.n_clusters) if str(k) not in self.dictionary.indices]
        if missing:
            raise ConfigError(f"unit LM {self.cfg.ulm}: dict.txt lacks units {missing[:10]} of the "
                             f"{self.quantizer.n_clusters}-cluster k-means; LM and k-means must share a unit set")

        self.model = PromptedULM(lm, runner_prompt_config(self.cfg.method, self.cfg.prompt, self.task,
                                                          self.verbalizer))
        if train_units is not None:   # a fresh run: prompt.init from the training units (a checkpoint overrides it)
            init_prompts(self.model, [self.dictionary.encode(u) for u in train_units])
        self.register_buffer("best_score", torch.tensor(float("-inf")))
        self.register_buffer("train_progress", torch.zeros(2, dtype=torch.long))   # (epoch, batches consumed)
        self.unfinished = defaultdict(int)
        log.info("speechprompt %s/%s: %d trainable parameters", self.cfg.task, self.cfg.method,
                 self.model.num_trainable())
        lm_cfg = self.model.lm.cfg
        self.recorder.start({"task": self.cfg.task, "method": self.cfg.method, "lm_fingerprint": self.lm_fingerprint,
                             "units": {"k": self.quantizer.n_clusters, "lm": str(self.cfg.ulm), "km": self.cfg.km,
                                       "file": None, "lm_arch": lm_cfg.arch, "lm_width": lm_cfg.embed_dim,
                                       "lm_layers": self.model.lm.num_layers}})
        self.data.check_run_splits(self.known_label_tokens())

    def known_label_tokens(self):
        return set(self.verbalizer.codes)

    # ----------------------------------------------------------------- preparation
    def _prepare(self, kwargs, upstream_dim: int):
        from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key

        km = str(resolve_kmeans(self.cfg.km)) if self.cfg.km else None
        train = self.data.split("train")
        featurize = runner_featurizer(kwargs)
        quantizer, records = prepare_units(
            train, featurize, read_item_audio, km=km, n_clusters=self.cfg.n_clusters,
            fit_max_frames=self.cfg.fit_max_frames, key_parts=upstream_key(kwargs), feature_dim=upstream_dim,
            cache_dir=Path(self.cfg.cache_dir) if self.cfg.cache_dir else None)
        verbalizer = build_verbalizer(self.cfg.verbalizer, [r.labels for r in records], [r.units for r in records],
                                      self.dictionary.units)
        return quantizer, verbalizer, [r.units for r in records]

    # ----------------------------------------------------------------- state
    def get_extra_state(self):
        return {"centroids": self.quantizer.centroids.cpu(), "verbalizer": self.verbalizer.to_dict(),
                "lm_fingerprint": self.lm_fingerprint, "method": self.cfg.method, "task": self.cfg.task,
                "rng": SplitData.rng_state()}

    def set_extra_state(self, state):
        if not fingerprint_matches(self.model.lm, self.lm_fingerprint, state.get("lm_fingerprint")):
            raise LMMismatchError(f"this checkpoint was trained on a different unit LM (fingerprint "
                             f"{state.get('lm_fingerprint')}, loaded {self.cfg.ulm} is {self.lm_fingerprint})")
        self.quantizer = KMeansQuantizer(state["centroids"]).to(self.best_score.device)
        self.verbalizer = Verbalizer.from_dict(state["verbalizer"])
        SplitData.restore_rng(state.get("rng"))

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        keep = {f"{prefix}model.{n}" for n in self.model.trainable_state_names()}
        for k in [k for k in full if k.startswith(f"{prefix}model.") and k not in keep]:
            del full[k]        # the frozen LM is not ours to store (PT); FT-LM keeps every LM weight
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        merged = {f"model.{k}": v for k, v in self.model.state_dict().items() if f"model.{k}" not in state_dict}
        merged.update(state_dict)
        return super().load_state_dict(merged, strict=strict, assign=assign)

    # ----------------------------------------------------------------- s3prl's runner interface
    def get_dataloader(self, split: str, epoch: int = 0):
        return self.data.get_dataloader(split, self.train_progress, epoch)

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        return self.recorder.log(split, records, logger, global_step, self.best_score)

    # ----------------------------------------------------------------- forward
    def forward(self, split: str, features: List[torch.Tensor], labels, ids, records, **kwargs):
        device = self.best_score.device
        self.quantizer.to(device)
        sources = [self.dictionary.encode(to_units(self.quantizer, f.detach())) for f in features]
        codes = [self.dictionary.encode(self.verbalizer.encode(y)) for y in labels]
        inputs, targets = build_batch(sources, codes, device)
        with precision.autocast(self.cfg.precision, device):
            loss = self.model.loss(inputs, targets)
        records["loss"].append(loss.item())
        if split == "train":
            self.train_progress[1] += 1
        if split != "train":
            decoded = self._decode(sources)
            records["unfinished"].append(decoded.unfinished)
            for uid, y, gen in zip(ids, labels, decoded.tokens):
                records["id"].append(uid)
                records["ref"].append(tuple(y))
                records["hyp"].append(tuple(self.verbalizer.decode(self.dictionary.decode(gen))))
        return loss

    @torch.no_grad()
    def inference(self, features: List[torch.Tensor], filenames: List[str]) -> List[str]:
        """s3prl's ``-m inference -t FILE``: decode with the checkpoint's own k-means and verbalizer, print
        the label strings and write ``<expdir>/inference.ark`` (RunRecorder.log_inference)."""
        device = self.best_score.device
        self.quantizer.to(device)
        sources = [self.dictionary.encode(to_units(self.quantizer, f.detach())) for f in features]
        out = self._decode(sources).tokens
        labels = [tuple(self.verbalizer.decode(self.dictionary.decode(g))) for g in out]
        return self.recorder.log_inference(filenames, labels)

    def _decode(self, sources) -> Decoded:
        """Generated unit ids per source, as evaluation, inference and ``speechprompt predict`` all decode:
        the config's budget, greedy or beam search, under the config's precision."""
        budget = decoding_budget(self.cfg.max_new_tokens, self.verbalizer, self.task)
        return decode(self.model.logits_fn(), sources, budget, beam_size=self.cfg.beam_size,
                      precision=self.cfg.precision)

    # ----------------------------------------------------------------- recording (RunRecorder)
    def extra_metrics(self, records) -> dict:
        return {"unfinished": sum(records["unfinished"])}     # generations cut by the budget, no </s>

    def size_info(self) -> dict:
        return {"task": self.cfg.task, "method": self.cfg.method, "ulm": str(self.cfg.ulm),
                "trainable_params": self.model.num_trainable(), "stored_params": self.model.num_stored(),
                "checkpoint_bytes": SplitData.stored_bytes(self),
                "verbalizer": self.verbalizer.method, "code_length": self.verbalizer.code_length,
                "k": self.quantizer.n_clusters, "prompt": self.model.cfg.to_dict(), "precision": self.cfg.precision}
