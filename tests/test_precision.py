"""Mixed precision (s3prl_speechprompt/precision.py) on CPU: bf16 loss close to fp32, trainable tensors and
optimizer state stay fp32, greedy outputs of a trained tiny model unchanged, the fp16 grad-scaler wiring,
and the --precision / downstream_expert.precision plumbing of both front ends."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from s3prl_speechprompt import precision
from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM, build_batch
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

N_UNITS, V = 20, 24                      # tiny LM: 20 units + 4 specials
BF16_LOSS_RTOL = 0.02                    # bf16 keeps 8 mantissa bits (~0.4% per rounding); measured <= 0.8%


def tiny_model(method: str, seed: int = 0, **prompt) -> PromptedULM:
    torch.manual_seed(seed)
    lm = UnitLM(ULMConfig.from_arch("ulm_tiny", V))
    return PromptedULM(lm, PromptConfig(method=method, prompt_length=3, **prompt))


def task_batch(n: int, seed: int):
    """Sources of random units; the label is one unit decided by the first source unit (a learnable rule)."""
    g = random.Random(seed)
    src = [[g.randrange(4, V) for _ in range(g.randint(4, 12))] for _ in range(n)]
    lab = [[4 + (s[0] % 4)] for s in src]
    return src, lab


@pytest.mark.parametrize("method", ["pt", "ftlm"])
def test_bf16_loss_close_to_fp32_on_a_fixed_batch(method):
    model = tiny_model(method).eval()
    src, lab = task_batch(16, seed=1)
    inputs, targets = build_batch(src, lab)
    with torch.no_grad():
        ref = model.loss(inputs, targets)
        with precision.autocast("bf16", "cpu"):
            got = model.loss(inputs, targets)
    assert got.dtype == torch.float32                     # the loss is taken on fp32 logits
    assert abs(got.item() - ref.item()) <= BF16_LOSS_RTOL * ref.item(), (got.item(), ref.item())
    assert got.item() != ref.item()                       # autocast really ran in bf16


@pytest.mark.parametrize("method,prec", [("pt", "bf16"), ("ftlm", "bf16"), ("pt", "fp16"), ("ftlm", "fp16")])
def test_trainable_tensors_and_optimizer_state_stay_fp32(method, prec):
    model = tiny_model(method, learnable_classes=4 if method == "pt" else 0)
    params = list(model.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=1e-3)
    scaler = precision.grad_scaler(prec, "cpu")
    src, lab = task_batch(8, seed=2)
    inputs, targets = build_batch(src, [[4] for _ in lab])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with precision.autocast(prec, "cpu"):
        loss = model.loss(inputs, targets)
    precision.optimizer_step(loss, opt, params, scaler, clip_norm=1.0)
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name
        if p.grad is not None:
            assert p.grad.dtype == torch.float32, name
    for state in opt.state.values():
        for k, v in state.items():
            assert v.dtype == torch.float32, k
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    if method == "pt":       # prompts, separator and the verbalizer head moved, the frozen LM did not
        assert moved and all(not n.startswith("lm.") for n in moved), moved
        assert "verbalizer_head.weight" in moved and "separator" in moved
    else:                    # FT-LM: the LM's fp32 master weights are what Adam updates
        assert any(n.startswith("lm.") for n in moved)


def test_greedy_outputs_of_a_trained_tiny_model_equal_fp32():
    torch.manual_seed(0)
    model = tiny_model("ftlm", lm_dropout=0.0)
    params = list(model.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=3e-3)
    scaler = precision.grad_scaler("fp32")
    for step in range(150):
        src, lab = task_batch(32, seed=100 + step)
        inputs, targets = build_batch(src, lab)
        opt.zero_grad(set_to_none=True)
        precision.optimizer_step(model.loss(inputs, targets), opt, params, scaler, clip_norm=1.0)
    src, lab = task_batch(64, seed=7)
    ref = decode(model.logits_fn(), src, max_new_tokens=3).tokens
    got = decode(model.logits_fn(), src, max_new_tokens=3, precision="bf16").tokens
    accuracy = sum(r[:1] == y for r, y in zip(ref, lab)) / len(lab)
    assert accuracy >= 0.9, accuracy                      # trained: clear margins, not a coin flip
    assert got == ref


class _RecordingScaler:
    """Stands in for torch.amp.GradScaler and records the order of the calls."""

    def __init__(self):
        self.calls = []

    def scale(self, loss):
        self.calls.append("scale")
        return loss * 8.0

    def unscale_(self, opt):
        self.calls.append("unscale_")
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad /= 8.0

    def step(self, opt):
        self.calls.append("step")
        opt.step()

    def update(self):
        self.calls.append("update")


def test_fp16_scaler_wiring_order_and_unscaled_clipping():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    scaler = _RecordingScaler()
    norm = precision.optimizer_step((w * w).sum() / 2, opt, [w], scaler, clip_norm=100.0)
    assert scaler.calls == ["scale", "unscale_", "step", "update"]
    assert norm.item() == pytest.approx(5.0)              # clipping saw the true (unscaled) gradient
    assert w.tolist() == [0.0, 0.0]                       # w - 1.0 * grad, grad = w


def test_fp16_grad_scaler_skips_an_overflowing_step_and_lowers_the_scale():
    scaler = precision.grad_scaler("fp16", "cpu")
    assert scaler.is_enabled() and not precision.grad_scaler("bf16", "cpu").is_enabled()
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    scale = scaler.get_scale()
    precision.optimizer_step((w * float("inf")).sum(), opt, [w], scaler, clip_norm=1.0)
    assert w.tolist() == [1.0, 2.0] and scaler.get_scale() == scale / 2      # skipped, scale halved
    opt.zero_grad()
    precision.optimizer_step((w * w).sum() / 2, opt, [w], scaler, clip_norm=0.0)
    assert w.tolist() == pytest.approx([0.5, 1.0])                          # a normal step, unscaled


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, fp16, got 'fp8'"):
        precision.check("fp8", "--precision")
    from s3prl_speechprompt.engine.trainer import TrainConfig
    with pytest.raises(ValueError, match="BLSTM"):
        TrainConfig(method="blstm", precision="bf16")


def test_expert_fp16_needs_the_runners_scaler_on_cuda():
    from s3prl_speechprompt.s3prl_plugin.prompt_expert import ExpertConfig, check_runner_precision
    with pytest.raises(ValueError, match="downstream_expert.precision must be one of"):
        ExpertConfig.from_dict({"task": "ks", "ulm": "x", "precision": "half"})
    with pytest.raises(ValueError, match="needs CUDA.*use precision: bf16"):
        check_runner_precision("fp16", {"fp16": True}, "cpu")
    with pytest.raises(ValueError, match="runner.fp16=True"):
        check_runner_precision("fp16", {}, "cuda")
    check_runner_precision("fp16", {"fp16": True}, "cuda")
    check_runner_precision("bf16", {}, "cpu")


def _unit_file(path, n, seed):
    src, lab = task_batch(n, seed)
    path.write_text("".join(" ".join(str(t - 4) for t in s) + f" <s> {'abcd'[y[0] - 4]}\n"
                            for s, y in zip(src, lab)))
    return path


def test_engine_train_fp16_and_evaluate_bf16(tiny_ulm_dir, tmp_path):
    train, valid = _unit_file(tmp_path / "train.txt", 64, 1), _unit_file(tmp_path / "valid.txt", 16, 2)
    exp = tmp_path / "exp"

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", *map(str, args), "--threads", "1"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cli("train", "--task", "toy", "--train", train, "--valid", valid, "--ulm", tiny_ulm_dir, "--method", "pt",
        "--precision", "fp16", "--max-updates", 4, "--batch-size", 16, "--out", exp)
    config = json.loads((exp / "config.json").read_text())
    assert config["train_config"]["precision"] == "fp16"
    ck = torch.load(exp / "checkpoint_last.pt", weights_only=True)
    assert ck["scaler"]["scale"] > 0                       # fp16: the scaler's state is checkpointed for --resume
    assert all(v.dtype == torch.float32 for v in ck["state"].values())
    result = cli("evaluate", "--exp", exp, "--split", "test", valid, "--precision", "bf16")
    assert result["precision"] == "bf16" and result["n"] == 16
