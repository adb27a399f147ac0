"""Prompt parameterisation and initialisation (``prompt.reparam``, ``prompt.init``; prompt/prefix.py).

Reparameterised prefixes collapse to plain prefixes with the same outputs, and only the collapsed tensors
are stored; activation-initialised prompts project to the frozen LM's own keys at the sampled positions;
both options survive evaluation from the stored files and resuming, in the unit-level engine
(`speechprompt train` / `evaluate`, --resume) and in s3prl's runner (-e, -a).
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prefix import ReparamPrefix, activation_prefixes, init_prompts
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM, build_batch

SOURCES = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 4, 5], [7, 7, 8, 19, 3, 4, 5, 6, 9], [10, 11]]
LABELS = [[4], [5], [4], [6]]


def tiny_lm(seed=0):
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM
    torch.manual_seed(seed)
    return UnitLM(ULMConfig.from_arch("ulm_tiny", 20))


def test_reparam_collapses_to_plain_prefixes_with_identical_outputs():
    cfg = dict(prompt_length=5, learnable_classes=3)
    model = PromptedULM(tiny_lm(), PromptConfig(reparam=16, **cfg))
    assert isinstance(model.deep_prompt, ReparamPrefix)
    with torch.no_grad():                    # a trained MLP: move its zero-initialised output layer
        model.deep_prompt.mlp[2].weight.normal_(0, 0.3)
        model.deep_prompt.mlp[2].bias.normal_(0, 0.3)
    stored = model.stored_state_dict()
    assert set(stored) == {"deep_prompt.key", "deep_prompt.value", "separator", "verbalizer_head.weight"}
    plain = PromptedULM(tiny_lm(), PromptConfig(reparam=0, **cfg))
    plain.load_state_dict(stored, strict=False)
    assert plain.num_trainable() == model.num_stored() < model.num_trainable()
    inputs, targets = build_batch(SOURCES, LABELS)
    model.eval(), plain.eval()
    with torch.no_grad():
        a, b = model.logits(inputs), plain.logits(inputs)
        assert torch.allclose(model.loss(inputs, targets), plain.loss(inputs, targets), atol=1e-6)
    assert (a - b).abs().max() <= 1e-6
    assert decode(model.logits_fn(), SOURCES, 3).tokens == decode(plain.logits_fn(), SOURCES, 3).tokens
    # a fresh reparameterised prefix starts exactly at its initial prompts (zero MLP output)
    fresh = PromptedULM(tiny_lm(), PromptConfig(reparam=16, **cfg))
    key, value = fresh.deep_prompt.collapse()
    assert torch.equal(key, fresh.deep_prompt.start[0]) and torch.equal(value, fresh.deep_prompt.start[1])


@pytest.mark.parametrize("reparam", [0, 8])
def test_activation_init_projects_to_the_lms_own_keys(reparam):
    lm = tiny_lm()
    model = PromptedULM(lm, PromptConfig(prompt_length=6, init="activations", reparam=reparam))
    picks = init_prompts(model, SOURCES, seed=3)
    assert len(picks) == 6 and all(1 <= p <= len(SOURCES[i]) for i, p in picks)
    keys, values = [], []                    # the frozen LM's own keys / values over </s> + each source
    hooks = [m.self_attn.k_proj.register_forward_hook(lambda m, a, o: keys.append(o)) for m in lm.decoder.layers]
    hooks += [m.self_attn.v_proj.register_forward_hook(lambda m, a, o: values.append(o)) for m in lm.decoder.layers]
    with torch.no_grad():
        for i, p in picks:
            lm(torch.tensor([[2, *SOURCES[i]]]))
    for h in hooks:
        h.remove()
    prefix = [(k.detach(), v.detach()) for k, v in model.eval().deep_prompt()]
    n = lm.num_layers
    for slot, (i, p) in enumerate(picks):
        for layer in range(n):
            attn = lm.decoder.layers[layer].self_attn
            want_k, want_v = keys[slot * n + layer][0, p], values[slot * n + layer][0, p]
            with torch.no_grad():
                assert torch.allclose(attn.k_proj(prefix[layer][0][slot]), want_k, atol=1e-5)
                assert torch.allclose(attn.v_proj(prefix[layer][1][slot]), want_v, atol=1e-5)
    # deterministic for a seed, and different positions for another
    assert activation_prefixes(lm, SOURCES, 6, seed=3)[2] == picks != activation_prefixes(lm, SOURCES, 6, seed=4)[2]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"prompt\.reparam must be false/0 .* or the MLP hidden size"):
        PromptConfig(reparam=True)
    with pytest.raises(ValueError, match=r"prompt\.init must be one of normal, activations"):
        PromptConfig(init="zeros")
    model = PromptedULM(tiny_lm(), PromptConfig(init="activations"))
    with pytest.raises(ValueError, match="needs the training utterances' units"):
        init_prompts(model, [])


# ------------------------------------------------------------------------------------ unit-level engine
@pytest.fixture(scope="module")
def engine_data(tmp_path_factory, tiny_ulm_dir):
    import random
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("recipe_engine")
    for name, n in (("train", 48), ("valid", 12)):
        lines = []
        for _ in range(n):
            c = rng.randrange(3)
            units = [rng.randrange(c * 5, c * 5 + 8) for _ in range(rng.randint(4, 12))]
            lines.append(" ".join(map(str, units)) + f" <s> {c}")
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root, tiny_ulm_dir


def _train(root, ulm, out, updates, resume=False):
    from s3prl_speechprompt.engine.methods import train
    from s3prl_speechprompt.engine.trainer import TrainConfig
    cfg = TrainConfig(task="ks", method="pt", prompt_length=4, verbalizer="learnable", max_updates=updates,
                      valid_interval=4, batch_size=8, seed=7, threads=1, prompt_reparam=12,
                      prompt_init="activations")
    return train(root / "train.txt", root / "valid.txt", ulm, out, cfg, resume=resume, log=lambda *a: None)


def test_engine_stores_collapsed_prompts_evaluates_and_resumes(engine_data, tmp_path):
    from s3prl_speechprompt.engine.evaluate import evaluate
    from s3prl_speechprompt.trained import TrainedTask
    root, ulm = engine_data
    full = _train(root, ulm, tmp_path / "full", 16)
    assert full["stored_params"] == 2 * 2 * 4 * 64 + 64 + 24 * 7 < full["trainable_params"]
    saved = torch.load(tmp_path / "full" / "prompt.pt", weights_only=True)["state_dict"]
    assert {k for k in saved if k.startswith("deep_prompt.")} == {"deep_prompt.key", "deep_prompt.value"}
    assert saved["deep_prompt.key"].shape == (2, 4, 64)
    last = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=True)["state"]
    assert {"deep_prompt.embedding", "deep_prompt.start"} <= set(last)          # resuming needs the MLP
    # evaluation from prompt.pt = the trained reparameterised model itself
    ev = evaluate(tmp_path / "full", "valid", root / "valid.txt", threads=1, log=lambda *a: None)
    assert ev["stored_params"] == full["stored_params"] and ev["n"] == 12
    plain = TrainedTask.find(tmp_path / "full").build().model
    assert plain.deep_prompt.key.shape == (2, 4, 64) and not hasattr(plain.deep_prompt, "mlp")
    # --resume: 8 updates, then continued to 16, equals 16 straight
    _train(root, ulm, tmp_path / "cut", 8)
    res = _train(root, ulm, tmp_path / "cut", 16, resume=True)
    assert res["updates"] == 16
    a = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=True)["state"]
    b = torch.load(tmp_path / "cut" / "checkpoint_last.pt", weights_only=True)["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    p, q = (torch.load(d / "prompt.pt", weights_only=True)["state_dict"] for d in (tmp_path / "full", tmp_path / "cut"))
    assert all(torch.equal(p[k], q[k]) for k in p)


def test_train_cli_has_the_prompt_flags():
    import argparse

    from s3prl_speechprompt.commands import train as train_cmd
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--task", "ks", "--train", "a", "--valid", "b", "--out", "c",
                              "--prompt-reparam", "64", "--prompt-init", "activations"])
    assert args.prompt_reparam == 64 and args.prompt_init == "activations"
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["prompt_reparam"] and helps["prompt_init"]


# ------------------------------------------------------------------------------------ s3prl runner
def test_runner_eval_and_auto_resume_with_reparam_and_activation_init(tmp_path, tiny_ulm_dir):
    """-e re-scores dev exactly as training did (the start buffer and MLP come back from the checkpoint), and
    -a continuing a 2-step run to 4 steps gives the 4-step run's prompts bitwise."""
    from s3prl_speechprompt import compat

    from helpers import make_csv_corpus, run_inprocess, write_csv_config
    compat.apply()
    torch.set_num_threads(1)
    csv = make_csv_corpus(tmp_path / "corpus")
    prompt = {"prompt_length": 2, "prompt_dropout": 0.0, "reparam": 8, "init": "activations"}

    def run(name, steps):
        cfg = write_csv_config(tmp_path / f"{name}.yaml", tiny_ulm_dir, tmp_path / "cache", {"csv": str(csv)},
                               steps=steps, prompt=prompt)
        data = yaml.safe_load(cfg.read_text())
        data["runner"].update(save_step=2, eval_step=2, max_keep=2)
        cfg.write_text(yaml.safe_dump(data))
        exp = tmp_path / name
        run_inprocess("-m", "train", "-u", "fbank", "-d", "speechprompt_csv", "-c", cfg, "-p", exp, "--device", "cpu")
        return exp

    full = run("full", 4)
    info = json.loads((full / "speechprompt_info.json").read_text())
    assert info["stored_params"] == 2 * 2 * 2 * 64 + 64 + 24 * 7 < info["trainable_params"]
    state = torch.load(full / "states-4.ckpt", map_location="cpu", weights_only=False)["Downstream"]
    assert "model.deep_prompt.start" in state and not [k for k in state if k.startswith("model.lm.")]
    dev_lines = lambda exp: [ln for ln in (exp / "log.log").read_text().splitlines() if " dev " in ln]
    trained = dev_lines(full)
    run_inprocess("-m", "evaluate", "-t", "dev", "-e", full / "states-4.ckpt", "--device", "cpu")
    rescored = dev_lines(full)
    assert len(rescored) == len(trained) + 1 and rescored[-1].split(": ", 1)[1] == trained[-1].split(": ", 1)[1]

    cut = run("cut", 2)
    run_inprocess("-m", "train", "-a", "-p", cut, "--device", "cpu", "-o", "config.runner.total_steps=4")
    a = torch.load(full / "states-4.ckpt", map_location="cpu", weights_only=False)["Downstream"]
    b = torch.load(cut / "states-4.ckpt", map_location="cpu", weights_only=False)["Downstream"]
    keys = [k for k in a if k.startswith("model.")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
