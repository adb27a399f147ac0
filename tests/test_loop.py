"""engine/loop.py, the one training loop: bitwise resume, early stopping, validation cadence, the Progress record
against checkpoints of the former dict format, and the numbers PT / FT-LM / BLSTM / LM pretraining gave before the
loop was shared (5264e39; /tmp harness of issue 22: identical to the last bit on the machine that wrote them)."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s3prl_speechprompt.engine.data import bucketed_batches
from s3prl_speechprompt.engine.loop import Checkpoint, Job, Progress, Settings, fit, mean_loss

quiet = lambda *a: None                      # noqa: E731


class Interrupted(Exception):
    pass


class Toy(Job):
    """A small regression with dropout (so the RNG state matters), 40 rows in 5 batches per epoch."""

    def __init__(self, dev_losses=None, fail_at=None):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(40, 4, generator=g), torch.randn(40, 1, generator=g)
        torch.manual_seed(1)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
        self.parameters = list(self.model.parameters())
        self.dev_losses, self.fail_at, self.calls, self.best = dev_losses, fail_at, 0, []

    def batches(self, epoch):
        return bucketed_batches([1] * 40, max_sentences=8, seed=3, epoch=epoch)

    def loss(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted()
        self.model.train()
        return F.mse_loss(self.model(self.x[batch]), self.y[batch])

    def validate(self):
        if self.dev_losses is not None:
            return self.dev_losses.pop(0)
        return mean_loss(self.model, [list(range(40))],
                         lambda idx: (F.mse_loss(self.model(self.x[idx]), self.y[idx], reduction="sum"), len(idx)))

    def state(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state(self, state):
        self.model.load_state_dict(state)

    def save_best(self, progress):
        self.best.append(progress.updates)


def run(tmp_path, job, resume=False, **kw):
    kw = {"max_updates": 23, "valid_interval": 4, **kw}
    return fit(job, Settings(lambda u: 1e-2 * min(1.0, u / 3), **kw), Checkpoint(tmp_path / "checkpoint_last.pt"),
               tmp_path / "tb", resume=resume, log=quiet)


def saved(tmp_path):
    return torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_an_interruption_is_bitwise(tmp_path):
    full = Toy()
    done = run(tmp_path / "full", full)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", Toy(fail_at=12))                   # last checkpoint: the validation at update 10
    cut = saved(tmp_path / "cut")["progress"]
    assert cut["updates"] == 10
    again = Toy()
    resumed = run(tmp_path / "cut", again, resume=True)
    a, b = saved(tmp_path / "full"), saved(tmp_path / "cut")
    assert same(full.state(), again.state()) and same(a["state"], b["state"])
    assert all(same(a["optimizer"]["state"][i], b["optimizer"]["state"][i]) for i in a["optimizer"]["state"])
    assert a["progress"]["history"] == b["progress"]["history"] and torch.equal(a["rng"], b["rng"])
    assert (resumed.updates, resumed.best_loss, resumed.best_update, resumed.last_loss, resumed.stop_reason) == \
        (done.updates, done.best_loss, done.best_update, done.last_loss, done.stop_reason)
    assert done.updates == 23 and done.stop_reason == "reached --max-updates 23"
    # wall and CPU seconds continue from those saved at update 10
    assert b["progress"]["cpu_seconds"] > cut["cpu_seconds"] > 0 and b["progress"]["seconds"] > cut["seconds"]
    assert b["progress"]["done"] is True


@pytest.mark.parametrize("settings,updates,reason", [
    # speechprompt train: every epoch (5 batches), every valid_interval, and at max_updates
    ({"max_updates": 12, "valid_interval": 4}, [4, 5, 8, 10, 12], "reached --max-updates 12"),
    ({"max_updates": None, "valid_interval": 0, "max_epochs": 2}, [5, 10], "reached --max-epochs 2"),
    # pretrain-ulm: every valid_interval and once at the end
    ({"max_updates": 12, "valid_interval": 5, "validate_every_epoch": False}, [5, 10, 12], "reached --max-updates 12"),
    ({"max_updates": 10, "valid_interval": 5, "validate_every_epoch": False}, [5, 10], "reached --max-updates 10"),
    ({"max_updates": 0, "valid_interval": 5, "validate_every_epoch": False}, [0], "reached --max-updates 0"),
])
def test_validation_cadence(tmp_path, settings, updates, reason):
    out = run(tmp_path, Toy(), **settings)
    history = saved(tmp_path)["progress"]["history"]
    assert [h["updates"] for h in history] == updates and out.stop_reason == reason
    assert out.updates == updates[-1]


def test_early_stopping_after_patience_validations_without_improvement(tmp_path):
    job = Toy(dev_losses=[3.0, 2.0, 2.5, 1.5, 1.6, 1.5, 1.7, 9.0, 9.0])
    out = run(tmp_path, job, max_updates=100, valid_interval=2, validate_every_epoch=False, patience=3)
    assert out.stop_reason == "early stop: dev loss did not improve for 3 validations"
    assert (out.updates, out.best_loss, out.best_update, out.last_loss) == (14, 1.5, 8, 1.7) and job.best == [2, 4, 8]
    # no early stopping (pretrain-ulm): the same losses run to the limit
    job = Toy(dev_losses=[3.0, 2.0, 2.5, 1.5, 1.6, 1.5, 1.7, 9.0, 9.0])
    out = run(tmp_path / "never", job, max_updates=18, valid_interval=2, validate_every_epoch=False)
    assert out.updates == 18 and out.stop_reason == "reached --max-updates 18"
    # no validation set: every validation keeps the model
    job = Toy(dev_losses=[None] * 3)
    out = run(tmp_path / "none", job, max_updates=6, valid_interval=2, validate_every_epoch=False, patience=1)
    assert job.best == [2, 4, 6] and out.best_loss is None and out.stop_reason == "reached --max-updates 6"


def test_progress_round_trips_and_old_checkpoints_resume(tmp_path):
    p = Progress(epoch=2, batch=3, updates=13, best_loss=0.5, best_update=10, bad=1, seconds=4.0, cpu_seconds=3.0,
                 last_valid=0.7, history=[{"updates": 10, "epoch": 2, "dev_loss": 0.5}])
    assert Progress.from_dict(p.to_dict()) == p
    full = Toy()
    run(tmp_path / "full", full, max_updates=15)
    # speechprompt train's dict at 5264e39 (no cpu_seconds, no last_valid), written at update 8
    run(tmp_path / "old", Toy(), max_updates=8)
    ck = saved(tmp_path / "old")
    keys = ("epoch", "batch", "updates", "best_loss", "best_update", "bad", "done", "seconds", "history")
    ck["progress"] = {k: ck["progress"][k] for k in keys}
    del ck["scaler"]
    torch.save(ck, tmp_path / "old" / "checkpoint_last.pt")
    job = Toy()
    run(tmp_path / "old", job, resume=True, max_updates=15)
    assert same(job.state(), full.state())
    assert saved(tmp_path / "old")["progress"]["history"] == saved(tmp_path / "full")["progress"]["history"]
    # pretrain-ulm's dict at 5264e39, written at the end of epoch 0 before it rolled over (epoch 0, batch 5)
    run(tmp_path / "pre", Toy(), max_updates=5)
    ck = saved(tmp_path / "pre")
    ck["progress"] = {"updates": 5, "epoch": 0, "batch": 5, "best_loss": ck["progress"]["best_loss"],
                      "last_valid": ck["progress"]["last_valid"], "seconds": 1.0}
    torch.save(ck, tmp_path / "pre" / "checkpoint_last.pt")
    job = Toy()
    run(tmp_path / "pre", job, resume=True, max_updates=15)
    assert same(job.state(), full.state()) and saved(tmp_path / "pre")["progress"]["epoch"] == 3


def test_a_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "checkpoint_last.pt")
    with pytest.raises(ValueError, match="is a file of format 'something else', expected a `speechprompt train` checkpoint"):
        run(tmp_path, Toy(), resume=True)


# ------------------------------------------------------------------------------ the numbers of 5264e39
def _data(root):
    def units(path, n, seed):
        rng = random.Random(seed)
        path.write_text("".join(" ".join(str(rng.randrange(20)) for _ in range(rng.randint(5, 30))) + " <s> 0\n"
                                for _ in range(n)))

    def labelled(path, n, seed):
        rng, lines = random.Random(seed), []
        for _ in range(n):
            c = rng.randrange(3)
            lines.append(" ".join(str(rng.randrange(c * 5, c * 5 + 8)) for _ in range(rng.randint(4, 14))) + f" <s> {c}")
        path.write_text("\n".join(lines) + "\n")
    units(root / "lm_train.txt", 160, 0)
    units(root / "lm_valid.txt", 30, 1)
    labelled(root / "train.txt", 100, 2)
    labelled(root / "valid.txt", 30, 3)
    return root


def _dev_curve(exp):
    return [(h["updates"], h["dev_loss"]) for h in saved(exp)["progress"]["history"]]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_pretraining_gives_the_numbers_of_before(tmp_path, one_thread):
    from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
    from s3prl_speechprompt.ulm.checkpoint import load_container
    d = _data(tmp_path)
    cfg = PretrainConfig(arch="ulm_tiny", max_tokens=512, valid_interval=25, threads=1, warmup_updates=10,
                         max_updates=60)
    res = pretrain_ulm(d / "lm_train.txt", tmp_path / "lm", d / "lm_valid.txt", cfg=cfg, log=quiet)
    assert (res["updates"], res["epochs"]) == (60, 8.571) and res["cpu_seconds"] >= 0
    assert res["valid_loss"] == res["best_valid_loss"] == pytest.approx(3.0520963373872423, rel=1e-6)
    progress = load_container(tmp_path / "lm" / "checkpoint_last.pt")["extra_state"]["engine"]["progress"]
    got = [(h["updates"], h["dev_loss"]) for h in progress["history"]]
    assert [u for u, _ in got] == [25, 50, 60]
    assert [v for _, v in got] == pytest.approx([3.0667075245650772, 3.0547821359536083, 3.0520963373872423],
                                                rel=1e-6)


@pytest.mark.parametrize("method,kw,updates,best,best_update,reason,first", [
    ("pt", {"lr": 0.5, "max_updates": 200, "valid_interval": 3, "patience": 2}, 72, 0.7025406731499566, 69,
     "early stop: dev loss did not improve for 2 validations", [(3, 3.6442152235243057), (6, 1.9079913669162327),
                                                                (7, 1.5883946736653647)]),
    ("ftlm", {"warmup": 10, "max_updates": 40, "valid_interval": 0, "patience": 3}, 40, 0.3248840543958876, 40,
     "reached --max-updates 40", [(7, 2.820473225911458), (14, 1.5838802761501736), (21, 1.1789644877115886)]),
    ("blstm", {"lr": 0.03, "max_updates": 300, "valid_interval": 4, "patience": 2, "blstm_hidden": 16,
               "blstm_embed": 16}, 20, 0.019589716196060182, 14,
     "early stop: dev loss did not improve for 2 validations", [(4, 0.5258219401041667), (7, 0.22412899335225422),
                                                                (8, 0.15580264727274576)]),
])
def test_engine_methods_give_the_numbers_of_before(tmp_path, tiny_ulm_dir, one_thread, method, kw, updates, best,
                                                   best_update, reason, first):
    from s3prl_speechprompt.engine.methods import train
    from s3prl_speechprompt.engine.trainer import TrainConfig
    d = _data(tmp_path)
    cfg = TrainConfig(task="ks", method=method, batch_size=16, seed=7, threads=1, **kw)
    res = train(d / "train.txt", d / "valid.txt", tiny_ulm_dir, tmp_path / "exp", cfg, log=quiet)
    assert (res["updates"], res["best_update"], res["stop_reason"]) == (updates, best_update, reason)
    assert res["best_dev_loss"] == pytest.approx(best, rel=1e-6) and res["cpu_seconds"] >= 0
    curve = _dev_curve(tmp_path / "exp")
    assert [u for u, _ in curve[:3]] == [u for u, _ in first]
    assert [v for _, v in curve[:3]] == pytest.approx([v for _, v in first], rel=1e-6)
