"""Train a task from unit files: the training loop, and prompt tuning (PT) / full LM fine-tuning (FT-LM) on it.

One loop (:class:`Fitter`) serves all three methods (the unit BLSTM's trainer, engine.baseline, uses it too;
engine.methods picks the trainer for ``--method``): length-bucketed batches whose order depends only on
``(seed, epoch)``, gradient clipping, validation on the dev loss every epoch (or every
``valid_interval`` updates), early stopping after ``patience`` validations without improvement (the
reference's fairseq rule), the best state kept in EXP/prompt.pt (EXP/model.pt for the BLSTM) and
everything needed to continue bit-for-bit in EXP/checkpoint_last.pt. All files are written atomically.

Defaults are the paper's, adapted to small LMs:
- PT: Adam(0.9, 0.98, eps 1e-8), lr 5e-3 constant, batch 32, clip 1.0, LM dropout 0. The prompts live
  in the LayerNorm-output space (unit scale per element at any width) and Adam's step is per element,
  so the same lr and the same L (task default, KS 3 / IC 6) are used at every width.
- FT-LM: lr 5e-4 * sqrt(1024 / d) (narrower models tolerate larger steps), inverse-sqrt schedule with
  warmup min(4000, half an epoch) updates (GSLM-width runs had 4000 updates of warmup over hundreds of
  epochs; ours run a few), dropout 0.1.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from tqdm import tqdm

from s3prl_speechprompt import precision
from s3prl_speechprompt.atomic import atomic_torch_save, atomic_write_text
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, encode_sources, fingerprint, read_records
from s3prl_speechprompt.prompt.prefix import init_prompts
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM, build_batch
from s3prl_speechprompt.prompt.verbalizer import build_verbalizer

METHODS = ("pt", "ftlm", "blstm")
LR_SCHEDULES = ("paper", "cosine")
FORMAT = "s3prl-speechprompt-engine/1"


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
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and self.max_updates <= 0:
            raise ValueError("--lr-schedule cosine decays to 0 at --max-updates; give --max-updates N (N > 0)")
        precision.check(self.precision, "--precision")
        if self.method == "blstm" and self.precision != "fp32":
            raise ValueError(f"--precision {self.precision} applies to the unit LM (pt, ftlm); the BLSTM baseline "
                             f"runs in fp32: drop --precision")


def task_defaults(task: str):
    """(prompt length, max label tokens, scorer class) of a registered task, or generic defaults."""
    from s3prl_speechprompt.tasks.base import Task, get_task
    try:
        cls = get_task(task)
    except KeyError:
        cls = Task
    return cls.default_prompt_length, cls


# ------------------------------------------------------------------------------------------ the loop
class Fitter:
    """Optimiser, schedule, validation, early stopping and checkpoints, independent of the model."""

    def __init__(self, exp: Path, cfg: TrainConfig, params: List[torch.nn.Parameter],
                 lr_at: Callable[[int], float], log=print):
        self.exp, self.cfg, self.params, self.lr_at, self.log = exp, cfg, params, lr_at, log
        self.opt = torch.optim.Adam(params, lr=lr_at(1), betas=(0.9, 0.98), eps=1e-8)
        self.scaler = precision.grad_scaler(cfg.precision, params[0].device if params else "cpu")  # fp16 only
        self.prog = {"epoch": 0, "batch": 0, "updates": 0, "best_loss": None, "best_update": 0,
                     "bad": 0, "done": False, "seconds": 0.0, "history": []}

    def checkpoint(self, state: Dict[str, torch.Tensor]) -> None:
        atomic_torch_save({"format": FORMAT, "state": state, "optimizer": self.opt.state_dict(),
                           "scaler": self.scaler.state_dict(), "progress": self.prog, "rng": torch.get_rng_state()},
                          self.exp / "checkpoint_last.pt")

    def restore(self, load_state: Callable[[dict], None]) -> bool:
        path = self.exp / "checkpoint_last.pt"
        if not path.is_file():
            return False
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("format") != FORMAT:
            raise ValueError(f"{path}: not a checkpoint of `speechprompt train` ({ck.get('format')!r}); "
                             f"use a fresh --out")
        load_state(ck["state"])
        self.opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.prog = ck["progress"]
        self.prog["done"] = False             # re-decided by should_stop() under the new limits
        torch.set_rng_state(ck["rng"])
        self.log(f"train: resumed from {path} at update {self.prog['updates']} (epoch {self.prog['epoch']})")
        return True

    def should_stop(self) -> Optional[str]:
        c, p = self.cfg, self.prog
        if p["bad"] >= c.patience:
            return f"early stop: dev loss did not improve for {c.patience} validations"
        if c.max_updates and p["updates"] >= c.max_updates:
            return f"reached --max-updates {c.max_updates}"
        if p["epoch"] >= c.max_epochs:
            return f"reached --max-epochs {c.max_epochs}"
        return None

    def run(self, lengths, batch_loss, valid_loss, state_fn, save_best) -> dict:
        from tensorboardX import SummaryWriter
        c, p = self.cfg, self.prog
        writer = SummaryWriter(str(self.exp / "tb"))
        t0 = time.time() - p["seconds"]
        total = c.max_updates or None
        bar = tqdm(total=total, initial=p["updates"], desc=f"train {c.method}", unit="upd", mininterval=5)
        reason = None

        def validate():
            loss = valid_loss()
            p["seconds"] = time.time() - t0
            p["history"].append({"updates": p["updates"], "epoch": p["epoch"], "dev_loss": loss})
            writer.add_scalar("dev/loss", loss, p["updates"])
            if p["best_loss"] is None or loss < p["best_loss"]:
                p["best_loss"], p["best_update"], p["bad"] = loss, p["updates"], 0
                save_best()
            else:
                p["bad"] += 1
            bar.set_postfix(dev=f"{loss:.4f}", best=f"{p['best_loss']:.4f}")
            self.checkpoint(state_fn())

        while not p["done"]:
            batches = bucketed_batches(lengths, max_sentences=c.batch_size, seed=c.seed, epoch=p["epoch"])
            stop = self.should_stop()          # e.g. resumed with a --max-updates already reached
            while not stop and p["batch"] < len(batches):
                lr = self.lr_at(p["updates"] + 1)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                loss = batch_loss(batches[p["batch"]])
                self.opt.zero_grad(set_to_none=True)
                precision.optimizer_step(loss, self.opt, self.params, self.scaler, c.clip_norm)
                p["updates"] += 1
                p["batch"] += 1
                bar.update(1)
                if p["updates"] % 10 == 0:
                    writer.add_scalar("train/loss", loss.item(), p["updates"])
                    writer.add_scalar("train/lr", lr, p["updates"])
                if p["batch"] >= len(batches):
                    p["epoch"], p["batch"] = p["epoch"] + 1, 0
                    validate()
                    break
                if (c.valid_interval and p["updates"] % c.valid_interval == 0) or \
                        (c.max_updates and p["updates"] >= c.max_updates):
                    validate()
                stop = self.should_stop()
                if stop:
                    break
            stop = stop or self.should_stop()
            if stop:
                p["done"], reason = True, stop
                p["seconds"] = time.time() - t0
                self.checkpoint(state_fn())
        bar.close()
        writer.close()
        self.log(f"train: {reason or 'already finished'}; best dev loss {p['best_loss']:.4f} at update "
                 f"{p['best_update']} ({p['updates']} updates, {p['seconds']:.0f} s)")
        return {"updates": p["updates"], "epochs": p["epoch"] + p["batch"] / max(len(bucketed_batches(
            lengths, max_sentences=c.batch_size, seed=c.seed, epoch=p["epoch"])), 1),
                "best_dev_loss": p["best_loss"], "best_update": p["best_update"], "seconds": round(p["seconds"], 1),
                "stop_reason": reason}


# ------------------------------------------------------------------------------------------ config files
def write_config(exp: Path, config: dict) -> None:
    atomic_write_text(exp / "config.json", json.dumps(config, indent=1) + "\n")


def lr_schedule(cfg: TrainConfig, lr: float, warmup: int) -> Callable[[int], float]:
    """Learning rate per update. ``paper``: constant without warmup (PT, BLSTM; fairseq 'fixed'), else linear
    warmup then inverse-sqrt (FT-LM). ``cosine``: the same warmup, then half a cosine from ``lr`` to 0 at
    ``cfg.max_updates``, whose small last steps settle the weights instead of leaving them to jitter."""
    if cfg.lr_schedule == "cosine":
        total = cfg.max_updates

        def lr_at(u: int) -> float:
            if u < warmup:
                return lr * u / warmup
            frac = min(1.0, (u - warmup) / max(1, total - warmup))
            return lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return lr_at
    if warmup:
        return lambda u: lr * min(u / warmup, math.sqrt(warmup / u))
    return lambda u: lr


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
        raise ValueError(f"{path}: --resume with different settings than the original run: {shown}; "
                         f"use the original settings or a fresh --out")


# ------------------------------------------------------------------------------------------ PT / FT-LM
def train_prompted(train_path, valid_path, ulm_path, exp, cfg: TrainConfig, resume=False, log=print) -> dict:
    from s3prl_speechprompt.ulm.checkpoint import load_ulm

    exp = Path(exp)
    torch.set_num_threads(cfg.threads or default_threads())
    default_L, _ = task_defaults(cfg.task)
    L = cfg.prompt_length if cfg.prompt_length is not None else default_L
    lm, dictionary, _ = load_ulm(ulm_path)
    sha = fingerprint(lm.state_dict())
    train_rec, valid_rec = read_records(train_path, "training", dictionary), read_records(valid_path, "dev", dictionary)
    verbalizer = build_verbalizer(cfg.verbalizer, [r.labels for r in train_rec], [r.units for r in train_rec],
                                  dictionary.units, seed=cfg.seed)

    def encode(records, path):
        src = encode_sources(records, dictionary, path)
        try:
            lab = [dictionary.encode(verbalizer.encode(r.labels)) for r in records]
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if any(not y for y in lab):
            i = next(i for i, y in enumerate(lab) if not y)
            raise ValueError(f"{path}: utterance {records[i].id} has no label after '<s>'; training needs labels")
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
    lengths = [len(s) + len(y) + 2 for s, y in zip(tr_src, tr_lab)]
    n_batches = len(bucketed_batches(lengths, max_sentences=cfg.batch_size, seed=cfg.seed))
    if pt:
        lr = cfg.lr if cfg.lr is not None else 5e-3
        warmup = 0
    else:
        lr = cfg.lr if cfg.lr is not None else 5e-4 * math.sqrt(1024 / d)
        warmup = cfg.warmup if cfg.warmup is not None else max(1, min(4000, n_batches // 2))

    exp.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume_config(exp, cfg)
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

    params = list(model.trainable_parameters().values())
    fitter = Fitter(exp, cfg, params, lr_schedule(cfg, lr, warmup), log)

    def state_fn():
        return model.trainable_state_dict()

    def load_state(sd):
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected:
            raise ValueError(f"{exp}/checkpoint_last.pt: unexpected keys {unexpected[:5]}")

    def save_best():
        atomic_torch_save({"format": FORMAT, "method": cfg.method, "ulm_sha256": sha,
                           "state_dict": model.stored_state_dict()}, exp / "prompt.pt")

    def batch_loss(idx):
        model.train()
        inputs, targets = build_batch([tr_src[i] for i in idx], [tr_lab[i] for i in idx])
        with precision.autocast(cfg.precision, inputs.device):
            return model.loss(inputs, targets)

    va_lengths = [len(s) + len(y) + 2 for s, y in zip(va_src, va_lab)]
    va_batches = bucketed_batches(va_lengths, max_sentences=128, shuffle=False)

    @torch.no_grad()
    def valid_loss():
        model.eval()
        total, n = 0.0, 0
        for idx in va_batches:
            inputs, targets = build_batch([va_src[i] for i in idx], [va_lab[i] for i in idx])
            with precision.autocast(cfg.precision, inputs.device):
                s, c = model.loss(inputs, targets, reduce=False)
            total, n = total + float(s.sum()), n + int(c.sum())
        model.train()
        return total / max(n, 1)

    if resume:
        fitter.restore(load_state)
    summary = fitter.run(lengths, batch_loss, valid_loss, state_fn, save_best)
    if not pt:   # the fine-tuned LM, also as a fairseq checkpoint that load_ulm / fairseq read directly
        from s3prl_speechprompt.ulm.checkpoint import save_ulm
        best = torch.load(exp / "prompt.pt", map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(best, strict=False)
        model.lm.set_dropout(0.1, 0.1)
        save_ulm(model.lm, dictionary, exp / "ftlm_ulm")
    summary.update(trainable_params=model.num_trainable(), stored_params=model.num_stored(), exp=str(exp))
    return summary

