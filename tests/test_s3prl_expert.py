"""The SpeechPrompt expert inside s3prl's real runner, on synthetic corpora, on CPU.

One pipeline per task: synthetic corpus -> fbank units (the expert's own cached preparation) -> a
small unit LM pretrained on those units -> PT / FT-LM training through `run_downstream` -> `-m evaluate -e`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s3prl_speechprompt import compat

from helpers import (N_CLUSTERS, ks_datarc, prepare_lm, record_outcome, run_runner, save_random_ulm, seed_offset,
                     train_and_evaluate, write_config)


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    from s3prl_speechprompt.synth import make_ks
    root = tmp_path_factory.mktemp("ks")
    make_ks(root / "corpus", seed=seed_offset(), per_class=24, progress=False)
    datarc = ks_datarc(root / "corpus")
    return {"root": root, "datarc": datarc, "ulm": prepare_lm("ks", datarc, root)}


def _train_and_evaluate(env, name, steps, lr=None, **expert):
    """``name`` on the fixture's LM and the k-means it was pretrained with: (expdir, test metrics)."""
    root = env["root"]
    cfg = write_config(root / f"{name}.yaml", name, env["datarc"], env["ulm"], root / "cache", steps, lr,
                       **{"km": str(root / "kmeans.pt"), **expert})
    return root / f"exp_{name}", train_and_evaluate(name, cfg, root / f"exp_{name}")


def test_ks_prompt_tuning_through_s3prl_runner(ks):
    # a 2-layer d=64 LM cannot route class evidence through fixed attention with the freq verbalizer in CI time;
    # SpeechPrompt v2's learnable verbalizer (a linear map over the LM logits) can
    exp, test = _train_and_evaluate(ks, "speechprompt_ks", steps=500, lr=3e-2, verbalizer="learnable",
                                    prompt={"prompt_length": 16})
    info = json.loads((exp / "speechprompt_info.json").read_text())
    record_outcome("ks_pt", accuracy=test["accuracy"])
    assert info["trainable_params"] == 2 * 2 * 16 * 64 + 64 + (N_CLUSTERS + 4) * (12 + 4)
    assert test["accuracy"] >= 0.25          # chance: 1/12 = 0.083
    assert (exp / "test_predict.txt").is_file() and (exp / "test_truth.txt").is_file()
    assert list(exp.glob("events.out.tfevents*"))
    # the frozen LM is not in the checkpoint; k-means, verbalizer and fingerprint are
    state = torch.load(exp / "dev-best.ckpt", map_location="cpu", weights_only=False)["Downstream"]
    assert not [k for k in state if k.startswith("model.lm.")]
    assert {"centroids", "verbalizer", "lm_fingerprint"} <= set(state["_extra_state"])


def test_ks_ftlm_through_s3prl_runner(ks):
    exp, test = _train_and_evaluate(ks, "speechprompt_ks_ftlm", steps=300, lr=2e-3)
    record_outcome("ks_ftlm", accuracy=test["accuracy"])
    assert test["accuracy"] >= 0.4


def test_pt_checkpoint_is_100x_smaller_than_ftlm(ks, tmp_path):
    """Same LM (ulm_small, 3.2M parameters), a few steps of each method; compare the runner's checkpoints."""
    save_random_ulm(tmp_path / "ulm_small", N_CLUSTERS, arch="ulm_small")
    sizes = {}
    for name in ("speechprompt_ks", "speechprompt_ks_ftlm"):
        cfg = write_config(tmp_path / f"{name}.yaml", name, ks["datarc"], tmp_path / "ulm_small",
                           ks["root"] / "cache", steps=2)
        exp = tmp_path / name
        run_runner("-m", "train", "-u", "fbank", "-d", name, "-c", str(cfg), "-p", str(exp), "--device", "cpu")
        sizes[name] = (exp / "states-2.ckpt").stat().st_size
    ratio = sizes["speechprompt_ks_ftlm"] / sizes["speechprompt_ks"]
    print(f"checkpoint bytes {sizes}; FT-LM / PT = {ratio:.0f}x")
    assert ratio >= 100


def test_hubert_local_with_layer_selection(ks, tmp_path):
    """-u hubert_local -k <tiny converted HuBERT> -l 1: the k-means is fitted on that layer's features."""
    ckpt = _tiny_hubert(tmp_path / "tiny_hubert.pt")
    cfg = write_config(tmp_path / "cfg.yaml", "speechprompt_ks", ks["datarc"], ks["ulm"], tmp_path / "cache", steps=4,
                       fit_max_frames=2000)
    exp = tmp_path / "exp"
    run_runner("-m", "train", "-u", "hubert_local", "-k", str(ckpt), "-l", "1", "-d", "speechprompt_ks",
               "-c", str(cfg), "-p", str(exp), "--device", "cpu")
    state = torch.load(exp / "states-4.ckpt", map_location="cpu", weights_only=False)
    assert state["Args"].upstream_layer_selection == 1
    assert state["Downstream"]["_extra_state"]["centroids"].shape == (N_CLUSTERS, 32)
    assert "Featurizer" in state


def _tiny_hubert(path: Path) -> Path:
    """A 2-layer random HuBERT in s3prl's converted checkpoint format (no download)."""
    compat.apply()
    from benchmarks.measure import random_hubert
    return random_hubert(path, "tiny")


# ---------------------------------------------------------------------------------------------
# IC: Fluent Speech Commands (three slots) through the same pipeline
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ic(tmp_path_factory):
    from s3prl_speechprompt.synth import make_ic
    root = tmp_path_factory.mktemp("ic")
    make_ic(root / "corpus", seed=seed_offset(), progress=False)
    datarc = {"file_path": str(root / "corpus" / "fluent_speech_commands_dataset")}
    return {"root": root, "datarc": datarc, "ulm": prepare_lm("ic", datarc, root, lm_updates=600)}


def test_ic_prompt_tuning_through_s3prl_runner(ic):
    exp, test = _train_and_evaluate(ic, "speechprompt_ic", steps=800, lr=3e-2, verbalizer="learnable",
                                    prompt={"prompt_length": 16})
    record_outcome("ic_pt", accuracy=test["accuracy"])
    # 22 intents: chance for all three slots ~0.05. With the LM on another k-means' unit ids, a 250-update LM and
    # 500 steps the spread (docs/testing.md) was 0.197 / 0.091 / 0.167 (seeds 0-2; seed 1 failed); with the LM's own
    # k-means, 600 LM updates and 800 steps: 0.197 / 0.303 / 0.212 (66 test utterances: one is 0.015)
    assert test["accuracy"] >= 0.15
