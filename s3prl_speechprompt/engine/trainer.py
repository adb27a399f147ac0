"""Train a task from unit files: prompt tuning (PT) / full LM fine-tuning (FT-LM), and what all of
``speechprompt train``'s methods share (the config, the run through the loop, resume checks).

Every method runs through :func:`~s3prl_speechprompt.engine.loop.fit` (engine.methods picks the trainer for
``--method``; the unit BLSTM's is engine.baseline): length-bucketed batches whose order depends only on
``(seed, epoch)``, gradient clipping, validation on the dev loss every epoch (or every ``valid_interval``
updates), early stopping after ``patience`` validations without improvement (the reference's fairseq rule), the
best state kept in EXP/prompt.pt (EXP/model.pt for the BLSTM) and everything needed to continue bit-for-bit in
EXP/checkpoint_last.pt, all written atomically. Defaults (the paper's, adapted to small LMs) and why: docs/engine.md.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import torch

from s3prl_speechprompt import precision, schedules
from s3prl_speechprompt.atomic import atomic_torch_save, atomic_write_text
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, encode_sources, read_records
from s3prl_speechprompt.engine.loop import FORMAT, Checkpoint, Job, Settings, fit, mean_loss
from s3prl_speechprompt.errors import CheckpointError, ConfigError, InputFileError
from s3prl_speechprompt.lm_ref import weights_fingerprint
from s3prl_speechprompt.prompt.prefix import init_prompts
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM, build_batch
from s3prl_speechprompt.prompt.verbalizer import build_verbalizer
from s3prl_speechprompt.trained import TrainedTask

METHODS = ("pt", "ftlm", "blstm")
LR_SCHEDULES = schedules.SCHEDULES

@dataclass
class TrainConfig:
    task: str = "ks"
    method: str = "pt"
    prompt_length: Optional[int] = None      # None: the task's default (KS 3, IC 6)
    verbalizer: str = "freq"
    lr: Optional[float] = None               # None: per-method default (see module doc)
    warmup: Optional[int] = None             # FT-LM only; None: min(4000, half an epoch)
    lr_schedule: str = "paper"               # paper: PT fixed / FT-LM inverse-sqrt; cosine: decay to 0 at max_updates
    dropout: Optional[float] = None          # LM dropout; None: 0 for PT, 0.1 for FT-LM (BLSTM: 0.2)
    batch_size: int = 32
    max_epochs: int = 300
    patience: int = 5
    max_updates: int = 0                     # 0 = no limit
    valid_interval: int = 0                  # updates between validations; 0 = once per epoch
    clip_norm: float = 1.0
    precision: str = "fp32"                  # fp32 | bf16 | fp16: autocast of the LM forward (s3prl_speechprompt.precision)
    seed: int = 100501
    threads: int = 0
    blstm_hidden: int = 256                  # BLSTM baseline sizes
    blstm_embed: int = 256
    prompt_reparam: int = 0                  # PT: >0 trains the prompts through an MLP of this hidden size (prefix.py)
    prompt_init: str = "normal"              # PT: normal | activations (the frozen LM's k/v inputs, prefix.py)

    # fields that may differ when a run is resumed (they only extend or shorten it)
    RESUMABLE = ("max_epochs", "patience", "max_updates", "threads")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and self.max_updates <= 0:
            raise ConfigError("--lr-schedule cosine decays to 0 at --max-updates; give --max-updates N (N > 0)")
        precision.check(self.precision, "--precision")
        if self.method == "blstm" and self.precision != "fp32":
            raise ConfigError(f"--precision {self.precision} applies to the unit LM (pt, ftlm); the BLSTM baseline "
                             f"runs in fp32: drop --precision")


# ------------------------------------------------------------------------------------------ config files
def write_config(exp: Path, config: dict) -> None:
    atomic_write_text(exp / "config.json", json.dumps(config, indent=1) + "\n")


def lr_schedule(cfg: TrainConfig, lr: float, warmup: int) -> Callable[[int], float]:
    """Learning rate per update (:func:`s3prl_speechprompt.schedules.by_name`). ``paper``: constant without warmup
    (PT, BLSTM; fairseq 'fixed'), else linear warmup then inverse-sqrt (FT-LM). ``cosine``: the same warmup, then
    half a cosine from ``lr`` to 0 at ``cfg.max_updates``."""
    return schedules.by_name(cfg.lr_schedule, lr, warmup, cfg.max_updates)


def fit_engine(job: Job, exp: Path, cfg: TrainConfig, lr_at: Callable[[int], float], resume=False, log=print) -> dict:
    """Run a method of ``speechprompt train`` through the loop, checkpointing in EXP/checkpoint_last.pt (continued
    from there with ``resume``); returns the run's summary."""
    settings = Settings(lr_at, name="train", desc=f"train {cfg.method}", max_updates=cfg.max_updates or None,
                        max_epochs=cfg.max_epochs, patience=cfg.patience, valid_interval=cfg.valid_interval,
                        clip_norm=cfg.clip_norm, precision=cfg.precision)
    write_run_record(exp, resume=resume)            # the run exists from here on; methods.train writes its end
    out = fit(job, settings, Checkpoint(exp / "checkpoint_last.pt"), exp / "tb", resume=resume, log=log)
    return {"updates": out.updates, "epochs": out.epochs, "best_dev_loss": out.best_loss,
            "best_update": out.best_update, "seconds": out.seconds, "cpu_seconds": out.cpu_seconds,
            "stop_reason": out.stop_reason}


def write_run_record(exp: Path, progress: Optional[dict] = None, resume: bool = False) -> None:
    """EXP/run.json from config.json and the loop's progress (EXP/checkpoint_last.pt's when not given); a resumed
    run keeps the evaluations already recorded."""
    from s3prl_speechprompt.record import FILE, RunRecord, engine_progress, engine_record
    if progress is None:      # a fresh run starts at 0, whatever an earlier run left in EXP
        progress = engine_progress(exp, "--resume") if resume else {}
    previous = RunRecord.load(exp) if resume and (exp / FILE).is_file() else None
    engine_record(exp, progress, previous).save(exp)


def check_resume_config(exp: Path, cfg: TrainConfig) -> None:
    """A resumed run must use the settings of the run it continues (except those in RESUMABLE)."""
    path = exp / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())["train_config"]
    was = {f.name: old.get(f.name, f.default) for f in fields(cfg)}    # settings added later: their default
    diff = [k for k, v in was.items() if k not in cfg.RESUMABLE and v != getattr(cfg, k)]
    if diff:
        shown = ", ".join(f"--{k.replace('_', '-')} {was[k]!r} (now {getattr(cfg, k)!r})" for k in diff)
        raise ConfigError(f"{path}: --resume with different settings than the original run: {shown}; "
                         f"use the original settings or a fresh --out")


# ------------------------------------------------------------------------------------------ PT / FT-LM
class PromptJob(Job):
    """PT / FT-LM on ``units <s> label`` sequences: the prompted LM's loss on the label tokens; the trainable
    state in checkpoint_last.pt, the stored (collapsed) one in EXP/prompt.pt."""

    def __init__(self, model: PromptedULM, cfg: TrainConfig, exp: Path, sha: str, train, valid):
        self.model, self.cfg, self.exp, self.sha = model, cfg, exp, sha
        (self.tr_src, self.tr_lab), (self.va_src, self.va_lab) = train, valid
        self.parameters = list(model.trainable_parameters().values())
        self.lengths = [len(s) + len(y) + 2 for s, y in zip(self.tr_src, self.tr_lab)]
        va_lengths = [len(s) + len(y) + 2 for s, y in zip(self.va_src, self.va_lab)]
        self.va_batches = bucketed_batches(va_lengths, max_sentences=128, shuffle=False)

    def batches(self, epoch):
        return bucketed_batches(self.lengths, max_sentences=self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch)

    def _loss(self, src, lab, idx, reduce=True):
        inputs, targets = build_batch([src[i] for i in idx], [lab[i] for i in idx])
        with precision.autocast(self.cfg.precision, inputs.device):
            return self.model.loss(inputs, targets, reduce=reduce)

    def loss(self, batch):
        self.model.train()
        return self._loss(self.tr_src, self.tr_lab, batch)

    def validate(self):
        def summed(idx):
            s, c = self._loss(self.va_src, self.va_lab, idx, reduce=False)
            return s.sum(), c.sum()
        return mean_loss(self.model, self.va_batches, summed)

    def state(self):
        return self.model.trainable_state_dict()

    def load_state(self, state):
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise CheckpointError(f"{self.exp}/checkpoint_last.pt: unexpected keys {unexpected[:5]}")

    def save_best(self, progress):
        atomic_torch_save({"format": FORMAT, "method": self.cfg.method, "ulm_sha256": self.sha,
                           "state_dict": self.model.stored_state_dict()}, self.exp / "prompt.pt")


def train_prompted(train_path, valid_path, ulm_path, exp, cfg: TrainConfig, resume=False, log=print) -> dict:
    from s3prl_speechprompt.tasks.base import Task, get_task
    from s3prl_speechprompt.ulm.checkpoint import load_ulm

    exp = Path(exp)
    torch.set_num_threads(cfg.threads or default_threads())
    try:                              # unregistered names (any classification unit file) get the generic default
        default_L = get_task(cfg.task).default_prompt_length
    except KeyError:
        default_L = Task.default_prompt_length
    L = cfg.prompt_length if cfg.prompt_length is not None else default_L
    lm, dictionary, _ = load_ulm(ulm_path)
    sha = weights_fingerprint(lm.state_dict())
    train_rec, valid_rec = read_records(train_path, "training", dictionary), read_records(valid_path, "dev", dictionary)
    verbalizer = build_verbalizer(cfg.verbalizer, [r.labels for r in train_rec], [r.units for r in train_rec],
                                  dictionary.units, seed=cfg.seed)

    def encode(records, path):
        src = encode_sources(records, dictionary, path)
        try:
            lab = [dictionary.encode(verbalizer.encode(r.labels)) for r in records]
        except ValueError as e:
            raise InputFileError(f"{path}: {e}") from None
        if any(not y for y in lab):
            i = next(i for i, y in enumerate(lab) if not y)
            raise InputFileError(f"{path}: utterance {records[i].id} has no label after '<s>'; training needs labels")
        return src, lab

    tr_src, tr_lab = encode(train_rec, train_path)
    va_src, va_lab = encode(valid_rec, valid_path)
    d = lm.cfg.embed_dim
    pt = cfg.method == "pt"
    pcfg = PromptConfig(method=cfg.method, prompt_length=L if pt else 0, deep=pt, train_separator=pt,
                        lm_dropout=cfg.dropout, reparam=cfg.prompt_reparam if pt else 0,
                        init=cfg.prompt_init if pt else "normal",
                        learnable_classes=len(verbalizer.codes) if cfg.verbalizer == "learnable" else 0)
    torch.manual_seed(cfg.seed)
    model = PromptedULM(lm, pcfg)
    init_prompts(model, tr_src, seed=cfg.seed)      # a resumed run overwrites it with its saved state
    job = PromptJob(model, cfg, exp, sha, (tr_src, tr_lab), (va_src, va_lab))
    n_batches = len(job.batches(0))
    if pt:
        lr = cfg.lr if cfg.lr is not None else 5e-3
        warmup = 0
    else:
        lr = cfg.lr if cfg.lr is not None else 5e-4 * math.sqrt(1024 / d)
        warmup = cfg.warmup if cfg.warmup is not None else max(1, min(4000, n_batches // 2))

    exp.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume_config(exp, cfg)
    shutil.rmtree(exp / "trained_task", ignore_errors=True)   # rewritten at the end; until then prompt.pt is read
    verbalizer.save(exp / "verbal.json")
    config = {
        "format": FORMAT, "task": cfg.task, "method": cfg.method,
        "ulm": str(Path(ulm_path).resolve()), "ulm_sha256": sha, "ulm_arch": lm.cfg.arch,
        "ulm_width": d, "ulm_layers": lm.num_layers,
        "train": str(train_path), "valid": str(valid_path),
        "prompt_config": pcfg.to_dict(), "train_config": asdict(cfg),
        "effective": {"prompt_length": L if pt else 0, "lr": lr, "warmup": warmup,
                      "lm_dropout": model.lm.cfg.dropout},
        "trainable_params": model.num_trainable(),
        "stored_params": model.num_stored(),        # differs with prompt reparam: prompt.pt holds it collapsed
        "max_label_tokens": max(len(r.labels) for r in train_rec),
        "code_length": verbalizer.code_length,
    }
    write_config(exp, config)
    log(f"train: {cfg.method} on {cfg.task}: LM {lm.cfg.arch} d={d} x{lm.num_layers}, "
        f"{model.num_trainable():,} trainable / {model.num_stored():,} stored parameters, "
        f"{len(tr_src)} train / {len(va_src)} dev utterances, "
        f"{n_batches} batches per epoch, lr {lr:g}, {cfg.precision}")

    summary = fit_engine(job, exp, cfg, lr_schedule(cfg, lr, warmup), resume=resume, log=log)
    if not pt:   # the fine-tuned LM, also as a fairseq checkpoint that load_ulm / fairseq read directly
        from s3prl_speechprompt.ulm.checkpoint import save_ulm
        best = torch.load(exp / "prompt.pt", map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(best, strict=False)
        model.lm.set_dropout(0.1, 0.1)
        save_ulm(model.lm, dictionary, exp / "ftlm_ulm")
    TrainedTask.from_engine_dir(exp).save(exp / "trained_task")      # the best-dev state, as prompt.pt
    summary.update(trainable_params=model.num_trainable(), stored_params=model.num_stored(), exp=str(exp))
    return summary

