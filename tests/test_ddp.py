"""torchrun DDP through s3prl's runner: `speechprompt_ks` on 2 CPU processes (gloo) equals one process.

No dropout anywhere (prompt_dropout 0, `freq` verbalizer: the learnable head has dropout, whose masks
depend on the batch split). With the per-rank batch half of the single-process batch, every optimizer step sees the same
utterances (EpochSampler: every rank draws the same class-balanced order and keeps its stride), DDP
averages the two half-batch gradients and so the prompts must match the single-process run up to
float summation order. Only rank 0 writes logs, predictions and checkpoints.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

from helpers import runner_env

K = 20
STEPS = 4


def _config(path: Path, root: Path, ulm: Path, batch_size: int) -> Path:
    cfg = {
        "runner": {"total_steps": STEPS, "gradient_clipping": 1.0, "gradient_accumulate_steps": 1, "log_step": 2,
                   "eval_step": STEPS, "save_step": STEPS, "max_keep": 1, "eval_dataloaders": ["dev"]},
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-2, "betas": [0.9, 0.98]},
        "downstream_expert": {
            "task": "ks", "method": "pt", "ulm": str(ulm), "km": None, "n_clusters": K, "verbalizer": "freq",
            "cache_dir": str(root / "cache"), "balanced_sampling": True,
            "prompt": {"prompt_length": 2, "prompt_dropout": 0.0},
            "datarc": {"speech_commands_root": str(root / "corpus" / "speech_commands_v0.01"),
                       "speech_commands_test_root": str(root / "corpus" / "speech_commands_test_set_v0.01"),
                       "batch_size": batch_size, "eval_batch_size": 16, "num_workers": 0}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_torchrun_two_cpu_ranks_equal_one_process(tmp_path, tiny_ulm_dir):
    from s3prl_speechprompt.synth import make_ks
    make_ks(tmp_path / "corpus", seed=0, per_class=6, noise_seconds=4, progress=False, workers=1)
    runner = ["-m", "s3prl_speechprompt.s3prl_plugin.run_downstream", "-m", "train", "-u", "fbank",
              "-d", "speechprompt_ks", "--device", "cpu"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    out = subprocess.run([sys.executable, *runner, "-c", str(_config(tmp_path / "one.yaml", tmp_path, tiny_ulm_dir, 8)),
                          "-p", str(single)], env=runner_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *runner, "-c", str(_config(tmp_path / "two.yaml", tmp_path, tiny_ulm_dir, 4)),
                          "-p", str(ddp), "--backend", "gloo"], env=runner_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    load = lambda p: torch.load(p / f"states-{STEPS}.ckpt", map_location="cpu", weights_only=False)
    a, b = load(single), load(ddp)
    assert b["WorldSize"] == 2 and b["Step"] == STEPS
    keys = [k for k in a["Downstream"] if k.startswith("model.")]
    assert keys
    for k in keys:
        torch.testing.assert_close(b["Downstream"][k], a["Downstream"][k], rtol=1e-4, atol=1e-5, msg=k)
    # only rank 0 wrote: one tensorboard file, one log line per evaluation, one set of predictions
    assert len(list(ddp.glob("events.out.tfevents.*"))) == 1
    assert (ddp / "log.log").read_text().count(f"step {STEPS}:") == 1
    assert sorted(p.name for p in ddp.glob("*.ckpt")) == sorted(p.name for p in single.glob("*.ckpt"))
    # same dev predictions as the single process (evaluation ran on rank 0 over the whole dev split)
    assert (ddp / "dev_predict.txt").read_text() == (single / "dev_predict.txt").read_text()
