"""The s3prl front end: compat patches, downstream registration, and s3prl's real runner end to end.

The end-to-end tests run ``python -m s3prl_speechprompt.s3prl_plugin.run_downstream`` in subprocesses
(s3prl's ``main()`` patches ``builtins.isinstance`` globally, so it must not run inside pytest) on a
throwaway downstream written into a temporary folder and registered through the developer hook
``SPEECHPROMPT_EXTRA_DOWNSTREAMS``.
"""
import importlib
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_speechprompt import compat
from s3prl_speechprompt.s3prl_plugin import registry, run_downstream

from helpers import run_in_group

REPO = Path(__file__).resolve().parents[1]
TOY_MODULE = "s3prl_plugin_toy_expert"
TOY_NAME = "speechprompt_toy"

TOY_EXPERT = '''
"""A throwaway s3prl downstream: 2-class classification of random noise by loudness."""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class RandomWavs(Dataset):
    def __init__(self, size, seed):
        self.size, self.seed = size, seed

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        rng = np.random.default_rng(self.seed * 1000 + index)
        label = index % 2
        wav = rng.standard_normal(1600 + 160 * index).astype(np.float32) * (0.1 + label)
        return wav, label


def collate(batch):
    wavs, labels = zip(*batch)
    return list(wavs), torch.tensor(labels)


class DownstreamExpert(nn.Module):
    def __init__(self, upstream_dim, upstream_rate, downstream_expert, expdir, **kwargs):
        super().__init__()
        self.datarc = downstream_expert["datarc"]
        self.expdir = expdir
        self.linear = nn.Linear(upstream_dim, 2)
        self.register_buffer("best_score", torch.full((1,), -1.0))

    def get_dataloader(self, split, epoch=0):
        workers = self.datarc.get("num_workers", 0)
        dataset = RandomWavs(8, seed={"train": 1, "dev": 2, "test": 3}[split])
        return DataLoader(dataset, batch_size=self.datarc["batch_size"], shuffle=split == "train",
                          num_workers=workers, collate_fn=collate,
                          multiprocessing_context=self.datarc.get("mp_context") if workers else None)

    def forward(self, split, features, labels, records, **kwargs):
        pooled = torch.stack([f.mean(dim=0) for f in features])
        logits = self.linear(pooled)
        labels = labels.to(logits.device)
        loss = nn.functional.cross_entropy(logits, labels)
        records["loss"].append(loss.item())
        records["acc"] += (logits.argmax(-1) == labels).float().tolist()
        return loss

    def log_records(self, split, records, logger, global_step, **kwargs):
        acc = float(np.mean(records["acc"]))
        logger.add_scalar(f"toy/{split}-acc", acc, global_step=global_step)
        if split == "dev" and acc > self.best_score.item():
            self.best_score.fill_(acc)
            return ["dev-best.ckpt"]
        return []
'''

TOY_CONFIG = """\
runner:
  total_steps: 4
  gradient_clipping: 1
  gradient_accumulate_steps: 1
  log_step: 2
  eval_step: 4
  save_step: 4
  max_keep: 1
  eval_dataloaders: [dev]
optimizer:
  name: TorchOptim
  torch_optim_name: Adam
  lr: 1.0e-3
downstream_expert:
  datarc:
    batch_size: 4
    num_workers: 0
"""


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy_downstream")
    (folder / f"{TOY_MODULE}.py").write_text(textwrap.dedent(TOY_EXPERT))
    (folder / "cfg.yaml").write_text(TOY_CONFIG)
    return folder


def _env(toy_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(toy_dir), str(REPO), env.get("PYTHONPATH")]))
    env[registry.ENV_EXTRA] = f"{TOY_NAME}={TOY_MODULE}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd, cwd, env, timeout=150):
    rc, out, _ = run_in_group(cmd, cwd=cwd, env=env, timeout=timeout, merge_stderr=True)
    return rc, out


def _runner(*args):
    return [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream", *args]


# ---------------------------------------------------------------------------------------------
# (a) compat
# ---------------------------------------------------------------------------------------------

def test_compat_makes_s3prl_importable_and_is_idempotent():
    first = compat.apply()
    assert compat.apply() == first
    import torchaudio

    for name in ("set_audio_backend", "get_audio_backend", "list_audio_backends", "sox_effects"):
        assert hasattr(torchaudio, name)
    torchaudio.set_audio_backend("sox_io")  # what s3prl calls; must not raise
    from torchaudio.sox_effects import apply_effects_tensor

    if compat.is_marked(apply_effects_tensor):
        with pytest.raises(NotImplementedError, match="speech_commands"):
            apply_effects_tensor(torch.zeros(1, 10), 16000, [["gain", "-3"]])
    import s3prl.hub  # noqa: F401
    import s3prl.run_downstream  # noqa: F401

    import argparse

    if hasattr(torch.serialization, "get_safe_globals"):
        assert argparse.Namespace in torch.serialization.get_safe_globals()


@pytest.mark.parametrize("fmt,channels", [("WAV", 2), ("FLAC", 1)])
def test_torchaudio_load_through_soundfile(tmp_path, fmt, channels):
    import soundfile as sf
    import torchaudio

    compat.apply()
    sr, frames = 16000, 4000
    data = (np.random.default_rng(0).uniform(-0.5, 0.5, (frames, channels))).astype(np.float32)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, data, sr, subtype="PCM_16", format=fmt)

    wav, rate = torchaudio.load(str(path))
    assert rate == sr
    assert wav.dtype == torch.float32 and tuple(wav.shape) == (channels, frames)
    np.testing.assert_allclose(wav.numpy(), data.T, atol=1e-4)
    part, _ = torchaudio.load(path, frame_offset=100, num_frames=50)
    assert tuple(part.shape) == (channels, 50)

    info = torchaudio.info(str(path))
    assert (info.sample_rate, info.num_frames, info.num_channels) == (sr, frames, channels)

    mono, rate = compat.read_audio(path)
    assert rate == sr and mono.dtype == np.float32 and mono.shape == (frames,)
    np.testing.assert_allclose(mono, data.mean(axis=1), atol=1e-4)

    out = tmp_path / f"b.{fmt.lower()}"
    torchaudio.save(str(out), wav, sr)
    again, rate = torchaudio.load(str(out))
    assert rate == sr and again.shape == wav.shape
    np.testing.assert_allclose(again.numpy(), wav.numpy(), atol=1e-4)


def test_read_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        compat.read_audio(missing)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(RuntimeError, match="junk.wav"):
        compat.read_audio(junk)


# ---------------------------------------------------------------------------------------------
# registry + argv handling (unit level)
# ---------------------------------------------------------------------------------------------

def test_expert_module_mapping(monkeypatch):
    monkeypatch.delenv(registry.ENV_EXTRA, raising=False)
    assert registry.expert_module_for("speechprompt_ks_linear") == registry.BASELINE_EXPERT
    assert registry.expert_module_for("speechprompt_asr_lstm") == registry.BASELINE_EXPERT
    assert registry.expert_module_for("speechprompt_ks") == registry.PROMPT_EXPERT
    assert registry.expert_module_for("speechprompt_ks", {"speechprompt_ks": "x.y"}) == "x.y"
    monkeypatch.setitem(registry.EXPERT_MODULES, "speechprompt_sf", "a.b")
    assert registry.expert_module_for("speechprompt_sf") == "a.b"
    monkeypatch.setenv(registry.ENV_EXTRA, "mine=pkg.mod, other = pkg.other")
    assert registry.extra_downstreams() == {"mine": "pkg.mod", "other": "pkg.other"}
    assert registry.expert_module_for("mine") == "pkg.mod"
    with pytest.raises(KeyError):
        registry.expert_module_for("speech_commands")
    monkeypatch.setenv(registry.ENV_EXTRA, "broken")
    with pytest.raises(ValueError, match=registry.ENV_EXTRA):
        registry.extra_downstreams()


def test_packaged_configs_are_found(monkeypatch):
    monkeypatch.delenv(registry.ENV_EXTRA, raising=False)
    yamls = sorted(p.stem for p in (REPO / "downstream_configs").glob("*.yaml") if not p.name.startswith("_"))
    assert registry.packaged_downstreams() == yamls
    for name in yamls:
        path = registry.default_config_path(name)
        assert path is not None and Path(path).is_file() and Path(path).name == f"{name}.yaml"
    assert registry.default_config_path("speechprompt_no_such_task") is None


def test_register_does_not_import_missing_expert_modules(monkeypatch):
    monkeypatch.delenv(registry.ENV_EXTRA, raising=False)
    names = registry.register(["speechprompt_ghost"], overrides={"speechprompt_ghost": "no_such_module_xyz"})
    try:
        assert names == ["speechprompt_ghost"]
        assert registry.register(["speechprompt_ghost"], overrides={"speechprompt_ghost": "no_such_module_xyz"}) == names
        assert "s3prl.downstream.speechprompt_ghost" in sys.modules
        with pytest.raises(ModuleNotFoundError, match="no_such_module_xyz"):
            importlib.import_module("s3prl.downstream.speechprompt_ghost.expert")
    finally:
        registry.unregister("speechprompt_ghost")
    assert "s3prl.downstream.speechprompt_ghost" not in sys.modules


def test_config_injection():
    cfg = {"speechprompt_x": "/pkg/speechprompt_x.yaml"}.get
    inject = lambda argv: run_downstream.inject_default_config(argv, config_for=cfg)  # noqa: E731
    base = ["-m", "train", "-u", "fbank", "-n", "exp"]
    added = ["-c", "/pkg/speechprompt_x.yaml"]
    for form in (["-d", "speechprompt_x"], ["-dspeechprompt_x"], ["--downstream", "speechprompt_x"],
                 ["--downstream=speechprompt_x"]):
        assert inject(base + form) == base + form + added, form
    argv = base + ["-d", "speechprompt_x", "-o", "config.runner.total_steps=4", "-l", "-1"]
    assert inject(argv) == argv + added
    for given in (["-c", "mine.yaml"], ["-cmine.yaml"], ["--config=mine.yaml"], ["--config", "m.yaml"],
                  ["-e", "exp/states-4.ckpt"], ["--past_exp", "exp"], ["--past", "exp"], ["--conf", "m.yaml"], ["-h"]):
        argv = base + ["-d", "speechprompt_x"] + given
        assert inject(argv) == argv, given
    # argparse rejects "--downs" as ambiguous (--downstream, --downstream_variant): no injection either
    for argv in (base + ["-d", "speech_commands"], base, ["-m", "evaluate", "-e", "x.ckpt"],
                 base + ["--downs", "speechprompt_x"]):
        assert inject(argv) == argv


def test_distributed_args():
    env = {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    argv = ["-m", "train", "-d", "x", "--device", "cpu"]
    assert run_downstream.distributed_args(argv, env) == argv + ["--local_rank", "1", "--backend", "gloo"]
    assert run_downstream.distributed_args(argv + ["--backend", "mpi"], env) == \
        argv + ["--backend", "mpi", "--local_rank", "1"]
    assert run_downstream.distributed_args(["-m", "train", "--local-rank=0"], {}) == ["-m", "train", "--local_rank=0"]
    assert run_downstream.distributed_args(["--local_rank", "0", "-m", "train"], env) == ["--local_rank", "0", "-m", "train"]
    assert run_downstream.distributed_args(argv, {}) == argv


# ---------------------------------------------------------------------------------------------
# (c) spawn DataLoader workers from the aliased expert
# ---------------------------------------------------------------------------------------------

def test_spawn_workers_from_aliased_expert(toy_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_dir))
    registry.register([TOY_NAME], overrides={TOY_NAME: TOY_MODULE})
    try:
        alias = importlib.import_module(f"s3prl.downstream.{TOY_NAME}.expert")
        assert alias is sys.modules[TOY_MODULE]
        assert alias.__spec__.name == TOY_MODULE
        assert alias.DownstreamExpert.__module__ == TOY_MODULE
        expert = alias.DownstreamExpert(
            upstream_dim=3, upstream_rate=160, expdir=str(tmp_path),
            downstream_expert={"datarc": {"batch_size": 4, "num_workers": 1, "mp_context": "spawn"}})
        batches = list(expert.get_dataloader("dev"))
        assert len(batches) == 2
        wavs, labels = batches[0]
        assert len(wavs) == 4 and labels.tolist() == [0, 1, 0, 1]
    finally:
        registry.unregister(TOY_NAME)


# ---------------------------------------------------------------------------------------------
# (b) s3prl's real runner: train, then evaluate from the checkpoint
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_runner_train_and_evaluate(toy_dir, tmp_path):
    env = _env(toy_dir)
    exp = tmp_path / "EXP"
    rc, out = _run(_runner("-m", "train", "-u", "fbank", "-d", TOY_NAME, "-c", str(toy_dir / "cfg.yaml"),
                           "-p", str(exp), "--device", "cpu"), cwd=tmp_path, env=env)
    assert rc == 0, out[-4000:]
    assert (exp / "states-4.ckpt").is_file() and (exp / "dev-best.ckpt").is_file()
    ckpt = torch.load(exp / "states-4.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["Step"] == 4 and ckpt["Args"].downstream == TOY_NAME
    assert set(ckpt["Downstream"]) == {"linear.weight", "linear.bias", "best_score"}

    rc, out = _run(_runner("-m", "evaluate", "-t", "dev", "-e", str(exp / "states-4.ckpt"), "--device", "cpu"),
                   cwd=tmp_path, env=env)
    assert rc == 0, out[-4000:]
    assert "Loading Downstream weights" in out


@pytest.mark.slow
def test_shell_script_help(toy_dir, tmp_path):
    env = _env(toy_dir)
    env["PYTHON"] = sys.executable
    rc, out = _run(["bash", str(REPO / "run_downstream.sh"), "--help"], cwd=tmp_path, env=env)
    assert rc == 0, out[-4000:]
    assert TOY_NAME in out and "--upstream" in out and "--past_exp" in out


# ---------------------------------------------------------------------------------------------
# (e) torchrun DDP smoke test: 2 CPU processes, gloo
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_ddp_cpu(toy_dir, tmp_path):
    env = _env(toy_dir)
    exp = tmp_path / "DDP"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream",
           "-m", "train", "-u", "fbank", "-d", TOY_NAME, "-c", str(toy_dir / "cfg.yaml"),
           "-p", str(exp), "--device", "cpu", "--backend", "gloo"]
    rc, out = _run(cmd, cwd=tmp_path, env=env)
    # the process group came up on both ranks and rank 0 trained to the end and saved
    assert (exp / "states-4.ckpt").is_file(), out[-4000:]
    ckpt = torch.load(exp / "states-4.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["WorldSize"] == 2 and ckpt["Step"] == 4
    assert ckpt["Args"].local_rank == 0 and ckpt["Args"].backend == "gloo"
    # s3prl 0.4.18's runner never advanced non-leader ranks' step counter (they trained until rank 0 exited);
    # runner_patches.fix_runner_ddp makes every rank stop at total_steps, so torchrun exits cleanly
    assert rc == 0, out[-4000:]
