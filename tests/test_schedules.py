"""s3prl_speechprompt.schedules: every caller gets, to the last bit, the learning rates it had before the schedules
were gathered in one module (the formulas below are the callers' former code, kept here as the reference)."""
from __future__ import annotations

import math

import pytest
import torch

from s3prl_speechprompt import schedules
from s3prl_speechprompt.engine.pretrain import PretrainConfig
from s3prl_speechprompt.engine.trainer import TrainConfig, lr_schedule

UPDATES = list(range(1, 400)) + [997, 4000, 4001, 10**5]


def former_engine(kind, lr, warmup, total):          # engine/trainer.py lr_schedule at 5264e39
    if kind == "cosine":
        def lr_at(u):
            if u < warmup:
                return lr * u / warmup
            frac = min(1.0, (u - warmup) / max(1, total - warmup))
            return lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return lr_at
    if warmup:
        return lambda u: lr * min(u / warmup, math.sqrt(warmup / u))
    return lambda u: lr


def former_pretrain(cfg, update):                    # PretrainConfig.lr_at at 5264e39
    w = max(cfg.warmup_updates, 1)
    if update < w:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / w
    return cfg.lr * math.sqrt(w / update)


def former_runner_factor(warmup, step):              # s3prl_plugin/schedulers.py at 5264e39
    warmup = max(1, int(warmup))
    return (step + 1) / warmup if step < warmup else math.sqrt(warmup / max(step, 1))


@pytest.mark.parametrize("kind,lr,warmup,total", [
    ("paper", 5e-3, 0, 0), ("paper", 5e-4 * math.sqrt(1024 / 64), 3, 0), ("paper", 3.3e-4, 37, 0),
    ("paper", 5e-4, 4000, 0), ("cosine", 1e-2, 10, 110), ("cosine", 7.7e-3, 0, 50), ("cosine", 5e-4, 13, 300)])
def test_engine_schedules_are_bitwise_the_former_ones(kind, lr, warmup, total):
    new = lr_schedule(TrainConfig(lr_schedule=kind, max_updates=total), lr, warmup)
    old = former_engine(kind, lr, warmup, total)
    assert [new(u) for u in UPDATES] == [old(u) for u in UPDATES]


@pytest.mark.parametrize("kw", [{}, {"lr": 3e-3, "warmup_updates": 7}, {"warmup_updates": 0},
                                {"warmup_init_lr": 0.0, "lr": 1.1e-3, "warmup_updates": 33}])
def test_pretraining_schedule_is_bitwise_the_former_one(kw):
    cfg = PretrainConfig(**kw)
    assert [cfg.lr_at(u) for u in UPDATES] == [former_pretrain(cfg, u) for u in UPDATES]


def test_the_two_warmup_ramps_are_kept_apart():
    """The engine's FT-LM ramp is a factor of the peak lr, pretraining's an interpolation: they round differently,
    and each caller keeps its own."""
    lr, w, u = 2e-3, 10, 3
    assert lr * (u / w) == 0.0006 != lr * u / w == 0.0006000000000000001
    assert lr_schedule(TrainConfig(), lr, w)(u) == lr * (u / w)
    assert schedules.inverse_sqrt(u, lr, w) == schedules.linear_warmup(u, lr, w) == lr * u / w
    assert schedules.cosine(u, lr, w, 100) == lr * u / w


@pytest.mark.parametrize("warmup", [1, 3, 10, 4000.0])
def test_runner_schedule_is_bitwise_the_former_one_with_its_step_offset(warmup):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-4)
    sched = schedules.get_inverse_sqrt_schedule_with_warmup(opt, warmup, 1000)
    got = []
    for _ in range(60):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == [2e-4 * former_runner_factor(warmup, s) for s in range(60)]
    w = max(1, int(warmup))
    engine = lr_schedule(TrainConfig(), 2e-4, w)
    # the runner's step s: the ramp of update s + 1, the decay of update s (one behind the engine after warm-up)
    assert all(got[s] == engine(s + 1) for s in range(min(w, 60)))
    assert all(got[s] == engine(s) for s in range(w, 60))


def test_register_adds_the_runner_schedule_by_name():
    s3prl_schedulers = pytest.importorskip("s3prl.schedulers")
    schedules.register()
    assert s3prl_schedulers.get_inverse_sqrt_schedule_with_warmup is schedules.get_inverse_sqrt_schedule_with_warmup


def test_values():
    assert schedules.cosine(5, 1e-2, 10, 110) == pytest.approx(5e-3)
    assert schedules.cosine(60, 1e-2, 10, 110) == pytest.approx(5e-3) and schedules.cosine(500, 1e-2, 10, 110) == 0.0
    assert schedules.inverse_sqrt(400, 2e-3, 100, 1e-7) == 1e-3
    assert schedules.inverse_sqrt(0, 2e-3, 100, 1e-7) == 1e-7
    with pytest.raises(ValueError, match="--lr-schedule must be one of paper, cosine"):
        schedules.by_name("linear", 1e-3)
