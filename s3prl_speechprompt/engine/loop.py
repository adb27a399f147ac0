"""The training loop of the unit-level engine: PT, FT-LM, the unit BLSTM and LM pretraining all run through :func:`fit`.

What is trained is a :class:`Job` (parameters, batches, loss of a batch, validation, state to checkpoint, what to
keep as the best), how the run goes :class:`Settings`, where it is checkpointed a :class:`Checkpoint`
(``checkpoint_last.pt``, or ``pretrain-ulm``'s fairseq container). The loop owns the rest: Adam(0.9, 0.98, eps
1e-8), the lr of every update, :func:`~s3prl_speechprompt.precision.optimizer_step`, tqdm, tensorboard
(``train/loss``, ``train/lr`` every 10 updates, ``<valid_name>/loss``), validation when an epoch ends
(``validate_every_epoch``), every ``valid_interval`` updates and at ``max_updates`` (a run ends on a validated
state), early stopping, checkpoint + bitwise resume (batch order depends only on ``(seed, epoch)``, the RNG state
is checkpointed), wall / CPU seconds accumulated across resumes.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from s3prl_speechprompt import precision
from s3prl_speechprompt.atomic import atomic_torch_save
from s3prl_speechprompt.readers import read_torch

FORMAT = "s3prl-speechprompt-engine/1"


@dataclass
class Progress:
    """Where a run is; saved in its checkpoint (as a dict with these keys: older checkpoints lack some, which
    then take their defaults)."""

    epoch: int = 0                       # epochs completed
    batch: int = 0                       # batches of the current epoch done
    updates: int = 0
    best_loss: Optional[float] = None
    best_update: int = 0
    bad: int = 0                         # validations since the best
    done: bool = False
    seconds: float = 0.0                 # wall time, all sessions of the run
    cpu_seconds: float = 0.0             # CPU time of this process (time.process_time), all sessions
    last_valid: Optional[float] = None
    history: List[dict] = field(default_factory=list)     # {"updates", "epoch", "dev_loss"} per validation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Settings:
    lr_at: Callable[[int], float]        # lr of update u (1-based), e.g. from s3prl_speechprompt.schedules
    name: str = "train"                  # log prefix
    desc: str = ""                       # tqdm description; "": the name
    max_updates: Optional[int] = None    # None: no limit
    max_epochs: Optional[int] = None
    patience: Optional[int] = None       # validations without improvement before stopping; None: never stop early
    valid_interval: int = 0              # updates between validations; 0: none besides the others
    validate_every_epoch: bool = True
    clip_norm: float = 1.0
    precision: str = "fp32"
    valid_name: str = "dev"              # tensorboard tag <valid_name>/loss, and the messages


class Job(ABC):
    """What the loop trains."""

    parameters: List[torch.nn.Parameter]

    @abstractmethod
    def batches(self, epoch: int) -> Sequence[Sequence[int]]:
        """The epoch's batches (indices into the training set), a function of the epoch only."""

    @abstractmethod
    def loss(self, batch: Sequence[int]) -> torch.Tensor:
        """The training loss of one batch (the model in training mode)."""

    @abstractmethod
    def validate(self) -> Optional[float]:
        """The validation loss (None: nothing to validate on; every validation then keeps the model)."""

    @abstractmethod
    def state(self) -> Dict[str, torch.Tensor]:
        """The trained tensors, to checkpoint."""

    @abstractmethod
    def load_state(self, state: Dict[str, torch.Tensor]) -> None:
        ...

    @abstractmethod
    def save_best(self, progress: Progress) -> None:
        """Keep the current model as the best so far."""


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches, summed: Callable[[Sequence[int]], tuple]) -> float:
    """Validation helper: sum of ``summed(batch)[0]`` over sum of ``summed(batch)[1]`` (loss sum, token or label
    count) over ``batches``, ``model`` in eval mode (then back in training mode)."""
    model.eval()
    total, n = 0.0, 0
    for idx in batches:
        s, c = summed(idx)
        total, n = total + float(s), n + int(c)
    model.train()
    return total / max(n, 1)


@dataclass
class Saved:
    """What a checkpoint holds for resuming."""

    state: Dict[str, torch.Tensor]
    optimizer: dict
    scaler: Optional[dict]
    progress: Progress
    rng: torch.Tensor


class Checkpoint:
    """The engine's ``checkpoint_last.pt`` (FORMAT): state, optimizer, scaler, progress, RNG; written atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, job: Job, optimizer, scaler, progress: Progress) -> None:
        atomic_torch_save({"format": FORMAT, "state": job.state(), "optimizer": optimizer.state_dict(),
                           "scaler": scaler.state_dict(), "progress": progress.to_dict(),
                           "rng": torch.get_rng_state()}, self.path)

    def read(self) -> Optional[Saved]:
        if not self.path.is_file():
            return None
        ck = read_torch(self.path, "a `speechprompt train` checkpoint (checkpoint_last.pt; or use a fresh --out)",
                        flag="--resume", is_expected=lambda c: isinstance(c, dict) and c.get("format") == FORMAT)
        return Saved(ck["state"], ck["optimizer"], ck.get("scaler"), Progress.from_dict(ck["progress"]), ck["rng"])


@dataclass
class Outcome:
    updates: int
    epochs: float                        # epochs completed, fractional
    best_loss: Optional[float]
    best_update: int
    last_loss: Optional[float]
    seconds: float
    cpu_seconds: float
    stop_reason: Optional[str]


def stop_reason(p: Progress, s: Settings) -> Optional[str]:
    if s.patience is not None and p.bad >= s.patience:
        return f"early stop: {s.valid_name} loss did not improve for {s.patience} validations"
    if s.max_updates is not None and p.updates >= s.max_updates:
        return f"reached --max-updates {s.max_updates}"
    if s.max_epochs is not None and p.epoch >= s.max_epochs:
        return f"reached --max-epochs {s.max_epochs}"
    return None


def fit(job: Job, s: Settings, checkpoint: Checkpoint, tb_dir: Path, resume: bool = False, log=print) -> Outcome:
    """Train ``job`` until a limit or early stopping; with ``resume``, continue from ``checkpoint`` if it exists."""
    from tensorboardX import SummaryWriter

    params = job.parameters
    opt = torch.optim.Adam(params, lr=s.lr_at(1), betas=(0.9, 0.98), eps=1e-8)
    scaler = precision.grad_scaler(s.precision, params[0].device if params else "cpu")     # enabled for fp16 only
    p = Progress()
    saved = checkpoint.read() if resume else None
    if saved is not None:
        job.load_state(saved.state)
        opt.load_state_dict(saved.optimizer)
        if saved.scaler:
            scaler.load_state_dict(saved.scaler)
        p = saved.progress
        p.done = False                   # re-decided under the new limits
        torch.set_rng_state(saved.rng)
        log(f"{s.name}: resumed from {checkpoint.path} at update {p.updates} (epoch {p.epoch})")

    writer = SummaryWriter(str(tb_dir))
    bar = tqdm(total=s.max_updates, initial=p.updates, desc=s.desc or s.name, unit="upd", mininterval=5)
    shown: Dict[str, str] = {}
    t0, c0 = time.time() - p.seconds, time.process_time() - p.cpu_seconds

    def clock():
        p.seconds, p.cpu_seconds = time.time() - t0, time.process_time() - c0

    def validate():
        loss = job.validate()
        clock()
        p.last_valid = loss
        p.history.append({"updates": p.updates, "epoch": p.epoch, "dev_loss": loss})
        if loss is not None:
            writer.add_scalar(f"{s.valid_name}/loss", loss, p.updates)
        if loss is None or p.best_loss is None or loss < p.best_loss:
            p.best_loss = loss if loss is not None else p.best_loss
            p.best_update, p.bad = p.updates, 0
            job.save_best(p)
        else:
            p.bad += 1
        if loss is not None:
            shown.update(dev=f"{loss:.4f}", best=f"{p.best_loss:.4f}")
            bar.set_postfix(shown)
        checkpoint.write(job, opt, scaler, p)

    reason = None
    try:                                 # the bar ends before an error is reported: one clean line
        while not p.done:
            batches = job.batches(p.epoch)
            if p.batch >= len(batches):     # a pretrain-ulm checkpoint of before the loop, written at an epoch's end
                p.epoch, p.batch = p.epoch + 1, 0
                continue
            reason = stop_reason(p, s)       # e.g. resumed with a limit already reached
            while not reason:
                lr = s.lr_at(p.updates + 1)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss = job.loss(batches[p.batch])
                opt.zero_grad(set_to_none=True)
                precision.optimizer_step(loss, opt, params, scaler, s.clip_norm)
                p.updates += 1
                p.batch += 1
                bar.update(1)
                if p.updates % 10 == 0:
                    writer.add_scalar("train/loss", loss.item(), p.updates)
                    writer.add_scalar("train/lr", lr, p.updates)
                    shown["loss"] = f"{loss.item():.3f}"
                    bar.set_postfix(shown)
                epoch_end = p.batch >= len(batches)
                if epoch_end:
                    p.epoch, p.batch = p.epoch + 1, 0
                if (epoch_end and s.validate_every_epoch) or (s.valid_interval and p.updates % s.valid_interval == 0) \
                        or (s.max_updates is not None and p.updates >= s.max_updates):
                    validate()
                reason = stop_reason(p, s)
                if epoch_end:
                    break
            if reason:
                if not p.history or p.history[-1]["updates"] != p.updates:
                    validate()               # a run ends validated (e.g. pretrain-ulm --max-updates 0)
                p.done = True
                clock()
                checkpoint.write(job, opt, scaler, p)
    finally:
        bar.close()
        writer.close()
    best = (f"best {s.valid_name} loss {p.best_loss:.4f} at update {p.best_update}" if p.best_loss is not None
            else f"no {s.valid_name} loss")
    log(f"{s.name}: {reason or 'already finished'}; {best} ({p.updates} updates, {p.seconds:.0f} s)")
    n = max(len(job.batches(p.epoch)), 1)
    return Outcome(p.updates, p.epoch + p.batch / n, p.best_loss, p.best_update, p.last_valid,
                   round(p.seconds, 1), round(p.cpu_seconds, 1), reason)
