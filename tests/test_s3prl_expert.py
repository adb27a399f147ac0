"""The SpeechPrompt expert inside s3prl's real runner, on synthetic corpora, on CPU.

One pipeline per task: synthetic corpus -> fbank units (the expert's own cached preparation) -> a
small unit LM pretrained on those units -> PT / FT-LM training through `run_downstream` -> `-m evaluate -e`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from s3prl_speechprompt import compat

from helpers import record_outcome, runner_env, runner_seed_args, seed_offset, thread_count

RUNNER = [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream"]
N_CLUSTERS = 50
FBANK = {"upstream": "fbank", "upstream_feature_selection": "hidden_states", "device": "cpu"}


def run_runner(*args, cwd=None):
    out = subprocess.run(RUNNER + list(args), capture_output=True, text=True, env=runner_env(), cwd=cwd)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out.stdout


def last_metrics(expdir: Path, split: str) -> dict:
    """The metrics of the run's newest evaluation on ``split`` (its run.json)."""
    from s3prl_speechprompt.record import RunRecord
    return RunRecord.load(expdir).latest(split).metrics


def _prepare(task_name, datarc, root: Path, lm_updates=250):
    """Units of the train/dev splits via the expert's own cached preparation (its k-means saved as
    ``root/kmeans.pt``, the ``km`` the expert must use), then a tiny LM pretrained on those units."""
    compat.apply()
    torch.set_num_threads(thread_count())
    from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import prepare_units, to_units

    task = get_task(task_name)(**datarc)
    featurize = runner_featurizer(FBANK)
    quantizer, train = prepare_units(task.read_split("train"), featurize, read_item_audio,
                                     key_parts=upstream_key(FBANK), n_clusters=N_CLUSTERS, seed=seed_offset(),
                                     cache_dir=root / "cache")
    dev = [UnitRecord(it.id, tuple(to_units(quantizer, featurize(read_item_audio(it)))), it.labels)
           for it in task.read_split("dev")]
    # the expert must quantize with this very k-means (``km``): the LM is pretrained on its unit ids, and a k-means
    # refitted inside the runner (its own seed) numbers the clusters differently, which leaves the LM useless
    quantizer.save(root / "kmeans.pt")
    write_unit_manifest(root / "train.tsv", train)
    write_unit_manifest(root / "dev.tsv", dev)
    (root / "dict.txt").write_text("".join(f"{k} 1\n" for k in range(N_CLUSTERS)))
    pretrain_ulm(root / "train.tsv", root / "ulm", valid_path=root / "dev.tsv", dict_path=root / "dict.txt",
                 cfg=PretrainConfig(arch="ulm_tiny", max_updates=lm_updates, max_tokens=2048, warmup_updates=50,
                                    valid_interval=lm_updates, seed=seed_offset(),
                                    threads=thread_count()), log=lambda *a: None)
    return root / "ulm"


def write_config(path: Path, name: str, datarc: dict, ulm: Path, cache: Path, steps: int, lr=None, **expert):
    from s3prl_speechprompt.commands.demo import _packaged_config
    cfg = yaml.safe_load(_packaged_config(name))
    cfg["runner"].update(total_steps=steps, log_step=max(steps // 4, 1), eval_step=steps, save_step=steps,
                         eval_dataloaders=["dev"])
    if lr:
        cfg["optimizer"]["lr"] = lr
    if "scheduler" in cfg:
        cfg["scheduler"]["num_warmup_steps"] = max(steps // 10, 1)
    de = cfg["downstream_expert"]
    de.update({"ulm": str(ulm), "km": None, "n_clusters": N_CLUSTERS, "cache_dir": str(cache), **expert})
    de["datarc"].update(datarc, batch_size=32, eval_batch_size=64, num_workers=0)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    from s3prl_speechprompt.synth import make_ks
    root = tmp_path_factory.mktemp("ks")
    make_ks(root / "corpus", seed=seed_offset(), per_class=24, progress=False)
    datarc = {"speech_commands_root": str(root / "corpus" / "speech_commands_v0.01"),
              "speech_commands_test_root": str(root / "corpus" / "speech_commands_test_set_v0.01")}
    return {"root": root, "datarc": datarc, "ulm": _prepare("ks", datarc, root)}


def _train_and_evaluate(env, name, steps, lr=None, **expert):
    root = env["root"]
    cfg = write_config(root / f"{name}.yaml", name, env["datarc"], env["ulm"], root / "cache", steps, lr,
                       **{"km": str(root / "kmeans.pt"), **expert})
    exp = root / f"exp_{name}"
    run_runner("-m", "train", "-u", "fbank", "-d", name, "-c", str(cfg), "-p", str(exp), "--device", "cpu",
               *runner_seed_args())
    run_runner("-m", "evaluate", "-t", "test", "-e", str(exp / "dev-best.ckpt"), "--device", "cpu")
    return exp, last_metrics(exp, "test")


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
    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    d = Dictionary([str(k) for k in range(N_CLUSTERS)])
    save_ulm(UnitLM(ULMConfig.from_arch("ulm_small", len(d))), d, tmp_path / "ulm_small")
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
    return {"root": root, "datarc": datarc, "ulm": _prepare("ic", datarc, root, lm_updates=600)}


def test_ic_prompt_tuning_through_s3prl_runner(ic):
    exp, test = _train_and_evaluate(ic, "speechprompt_ic", steps=800, lr=3e-2, verbalizer="learnable",
                                    prompt={"prompt_length": 16})
    record_outcome("ic_pt", accuracy=test["accuracy"])
    # 22 intents: chance for all three slots ~0.05. With the LM on another k-means' unit ids, a 250-update LM and
    # 500 steps the spread (docs/testing.md) was 0.197 / 0.091 / 0.167 (seeds 0-2; seed 1 failed); with the LM's own
    # k-means, 600 LM updates and 800 steps: 0.197 / 0.303 / 0.212 (66 test utterances: one is 0.015)
    assert test["accuracy"] >= 0.15
