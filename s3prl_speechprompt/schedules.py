"""Learning-rate schedules: pure functions of the update number (from 1: the first step's lr is ``f(1)``).

Users: ``speechprompt train`` (:func:`constant` for PT / BLSTM, the peak lr times :func:`inverse_sqrt_factor` for
FT-LM, :func:`cosine`; :func:`by_name` picks one), ``speechprompt pretrain-ulm`` (:func:`inverse_sqrt`, fairseq's,
warming up from ``warmup_init_lr``) and s3prl's runner (:func:`register` offers
:func:`get_inverse_sqrt_schedule_with_warmup` as ``scheduler.name: inverse_sqrt_schedule_with_warmup``; s3prl's
``sqrt_decay`` jumps at the end of the warm-up, lacking the sqrt(warmup) factor).

Each caller keeps its numbers to the last bit, hence two warm-up forms that round differently: a factor of the
peak lr, ``lr * (u / warmup)`` (FT-LM; s3prl's LambdaLR multiplies the same way), and an interpolation,
``init + (lr - init) * u / warmup`` (:func:`linear_warmup`: pretraining, cosine). torch is imported lazily.
"""
from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("paper", "cosine")      # speechprompt train --lr-schedule


def constant(update: int, lr: float) -> float:
    return lr


def linear_warmup(update: int, lr: float, warmup: int, init_lr: float = 0.0) -> float:
    """From ``init_lr`` (update 0) to ``lr`` (update ``warmup``) in a straight line."""
    return init_lr + (lr - init_lr) * update / warmup


def inverse_sqrt_factor(update: int, warmup: int) -> float:
    """Multiplier of the peak lr: ``update / warmup`` during the warm-up, then ``sqrt(warmup / update)``."""
    return update / warmup if update < warmup else math.sqrt(warmup / update)


def inverse_sqrt(update: int, lr: float, warmup: int, init_lr: float = 0.0) -> float:
    """fairseq's ``inverse_sqrt``: :func:`linear_warmup` from ``init_lr`` to ``lr``, then
    ``lr * sqrt(warmup / update)``."""
    if update < warmup:
        return linear_warmup(update, lr, warmup, init_lr)
    return lr * math.sqrt(warmup / update)


def cosine(update: int, lr: float, warmup: int, total: int) -> float:
    """:func:`linear_warmup` from 0, then half a cosine from ``lr`` to 0 at update ``total`` (and 0 after), whose
    small last steps settle the weights instead of leaving them to jitter."""
    if update < warmup:
        return linear_warmup(update, lr, warmup)
    frac = min(1.0, (update - warmup) / max(1, total - warmup))
    return lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def by_name(name: str, lr: float, warmup: int = 0, total: int = 0) -> Callable[[int], float]:
    """``speechprompt train``'s schedule: ``paper`` is :func:`constant` without warm-up (PT, BLSTM), else the
    inverse-sqrt factor (FT-LM); ``cosine`` decays to 0 at update ``total`` after the same warm-up."""
    if name not in SCHEDULES:
        raise ValueError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if name == "cosine":
        return lambda u: cosine(u, lr, warmup, total)
    if warmup:
        return lambda u: lr * inverse_sqrt_factor(u, warmup)
    return lambda u: constant(u, lr)


def get_inverse_sqrt_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps=None, last_epoch=-1):
    """s3prl's ``get_<name>(optimizer, num_warmup_steps, num_training_steps)`` for ``inverse_sqrt_schedule_with_
    warmup``. LambdaLR's step counts from 0: the ramp of step ``s`` is that of update ``s + 1`` (1 at the end of
    the warm-up), the decay is indexed by ``s`` itself, one update behind the engine's (kept: runner runs
    reproduce)."""
    from torch.optim.lr_scheduler import LambdaLR

    warmup = max(1, int(num_warmup_steps))

    def factor(step: int) -> float:
        return inverse_sqrt_factor(step + 1 if step < warmup else step, warmup)

    return LambdaLR(optimizer, factor, last_epoch)


def register() -> None:
    """Make :func:`get_inverse_sqrt_schedule_with_warmup` resolvable by s3prl's runner."""
    import s3prl.schedulers as s
    if not hasattr(s, "get_inverse_sqrt_schedule_with_warmup"):
        s.get_inverse_sqrt_schedule_with_warmup = get_inverse_sqrt_schedule_with_warmup
