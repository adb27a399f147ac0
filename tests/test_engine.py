"""Unit-level engine through the real `speechprompt` CLI: pretrain-ulm (fairseq parity, resume),
train/evaluate round trip on a slice of the released KS units, bitwise resume after a kill, the
mismatched-LM error, and the unit BLSTM baseline."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from helpers import fairseq_env, peer_dir, require_fairseq

TOKENS = [[2, 5, 6, 7, 8, 9, 10, 0, 11, 12], [2, 14, 6, 7, 9, 4, 1, 1, 1, 1]]


def cli(*args, check=True):
    args = [*args, "--threads", 1] if args[0] in ("pretrain-ulm", "train", "evaluate") else args   # tiny models
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", *map(str, args)], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def last_json(out) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


def _slice(src, dst, n, stride):
    lines = src.read_text().splitlines()[::stride][:n]
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    """400 train / 100 dev / 100 test lines of the released HuBERT-100 KS units, every class present."""
    src = peer_dir("speechprompt-hubert100") / "ks"
    root = tmp_path_factory.mktemp("ks")
    return {"train": _slice(src / "train.txt", root / "train.txt", 400, 127),
            "valid": _slice(src / "valid.txt", root / "valid.txt", 100, 67),
            "test": _slice(src / "test.txt", root / "test.txt", 100, 30),
            "dict": src.parent / "dict.txt", "root": root}


@pytest.fixture(scope="module")
def tiny_lm(ks):
    out = ks["root"] / "ulm"
    res = last_json(cli("pretrain-ulm", "--train", ks["train"], "--valid", ks["valid"], "--dict", ks["dict"],
                        "--arch", "ulm_tiny", "--max-updates", 12, "--max-tokens", 1024, "--valid-interval", 6,
                        "--out", out))
    assert res["updates"] == 12 and res["arch"] == "ulm_tiny"
    return out


def test_pretrained_lm_loads_in_fairseq_with_identical_logprobs(tiny_lm, tmp_path):
    require_fairseq()
    from s3prl_speechprompt.ulm.checkpoint import load_container, load_ulm
    ours, dictionary, info = load_ulm(tiny_lm)
    assert info["num_updates"] == 12 and len(dictionary) == 104
    state = load_container(tiny_lm / "checkpoint_last.pt")
    assert state["last_optimizer_state"]["state"] and state["extra_state"]["engine"]["progress"]["updates"] == 12
    with torch.no_grad():
        got = ours(torch.tensor(TOKENS)).log_softmax(-1)
    script = textwrap.dedent(f"""
        import sys, types, numpy as np, torch
        np.compat = types.SimpleNamespace(long=np.int64)
        from fairseq import checkpoint_utils
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([{str(tiny_lm / 'checkpoint_best.pt')!r}],
                                                                     arg_overrides={{"data": {str(tiny_lm)!r}}})
        with torch.no_grad():
            torch.save(models[0].eval()(torch.tensor({TOKENS}))[0].log_softmax(-1), {str(tmp_path / 'ref.pt')!r})
    """)
    out = subprocess.run([sys.executable, "-c", script], env=fairseq_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = torch.load(tmp_path / "ref.pt")
    assert (got - ref)[torch.tensor(TOKENS).ne(1)].abs().max().item() <= 1e-5


def test_pretrain_resume_continues_bitwise(ks, tmp_path):
    from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
    from s3prl_speechprompt.ulm.checkpoint import load_container
    kw = dict(arch="ulm_tiny", max_tokens=1024, valid_interval=3, threads=1)
    quiet = lambda m: None                                       # noqa: E731
    threads = torch.get_num_threads()                             # pretrain_ulm sets it for the process
    pretrain_ulm(ks["train"], tmp_path / "a", ks["valid"], ks["dict"], PretrainConfig(max_updates=6, **kw), log=quiet)
    pretrain_ulm(ks["train"], tmp_path / "b", ks["valid"], ks["dict"], PretrainConfig(max_updates=3, **kw), log=quiet)
    pretrain_ulm(ks["train"], tmp_path / "b", ks["valid"], ks["dict"], PretrainConfig(max_updates=6, **kw),
                 resume=True, log=quiet)
    torch.set_num_threads(threads)
    a, b = (load_container(tmp_path / d / "checkpoint_last.pt")["model"] for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def pt_exp(ks, tiny_lm):
    exp = ks["root"] / "exp_pt"
    res = last_json(cli("train", "--task", "ks", "--train", ks["train"], "--valid", ks["valid"], "--ulm", tiny_lm,
                        "--method", "pt", "--max-updates", 40, "--valid-interval", 5, "--out", exp))
    return exp, res


def test_train_evaluate_round_trip(ks, pt_exp):
    exp, res = pt_exp
    assert res["updates"] == 40 and res["trainable_params"] == 2 * 2 * 3 * 64 + 64     # layers*2*L*d + separator
    config = json.loads((exp / "config.json").read_text())
    assert len(config["ulm_sha256"]) == 64 and config["effective"]["prompt_length"] == 3
    verbal = json.loads((exp / "verbal.json").read_text())
    assert verbal["method"] == "freq" and len(verbal["codes"]) == 12
    out = cli("evaluate", "--exp", exp, "--split", "test", ks["test"])
    ev = last_json(out)
    assert ev["split"] == "test" and ev["n"] == 100 and 0.0 <= ev["accuracy"] <= 1.0
    assert ev["trainable_params"] == res["trainable_params"] and ev["prompt_bytes"] == (exp / "prompt.pt").stat().st_size
    saved = torch.load(exp / "prompt.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("lm.") for k in saved)                                  # prompts only
    truth = (exp / "test_truth.txt").read_text().splitlines()
    first = ks["test"].read_text().splitlines()[0].split()
    assert len(truth) == 100 and truth[0].split("\t")[1] == first[-1]
    assert len((exp / "test_predict.txt").read_text().splitlines()) == 100


def test_resume_after_kill_is_bitwise_identical(ks, tiny_lm, pt_exp):
    exp, _ = pt_exp
    killed = ks["root"] / "exp_killed"
    cmd = [sys.executable, "-m", "s3prl_speechprompt", "train", "--task", "ks", "--train", ks["train"], "--valid",
           ks["valid"], "--ulm", tiny_lm, "--method", "pt", "--max-updates", 40, "--valid-interval", 5, "--out", killed,
           "--threads", 1]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / "checkpoint_last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    partial = torch.load(killed / "checkpoint_last.pt", weights_only=True)["progress"]["updates"]
    res = last_json(cli(*cmd[3:], "--resume"))
    assert res["updates"] == 40
    a = torch.load(exp / "prompt.pt", weights_only=True)["state_dict"]
    b = torch.load(killed / "prompt.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed at update {partial}"
    # a resume with different settings is refused
    from s3prl_speechprompt.engine.trainer import TrainConfig, check_resume_config
    with pytest.raises(ValueError, match=r"--resume with different settings .*--lr None \(now 0.1\)"):
        check_resume_config(killed, TrainConfig(task="ks", method="pt", lr=0.1, max_updates=40, valid_interval=5))


def test_mismatched_lm_is_a_clear_error(ks, pt_exp, tmp_path):
    exp, _ = pt_exp
    from s3prl_speechprompt.ulm.checkpoint import load_ulm, save_ulm
    lm, dictionary, _ = load_ulm(json.loads((exp / "config.json").read_text())["ulm"])
    with torch.no_grad():
        lm.decoder.layers[0].fc1.bias.add_(1e-3)                  # a slightly different LM, same shape
    other = tmp_path / "other_lm"
    save_ulm(lm, dictionary, other)
    out = cli("evaluate", "--exp", exp, "--split", "test", ks["test"], "--ulm", other, check=False)
    assert out.returncode == 2
    assert "the prompts were trained on the unit LM" in out.stderr and str(other) in out.stderr


CLASSES = "yes no up down left right on off stop go _unknown_ _silence_".split()


def _as_tsv(src, dst):
    """SpeechPrompt lines -> our TSV manifest with class names: the generic (csv-style) classification path."""
    from s3prl_speechprompt.units.manifest import UnitRecord, read_unit_file, write_unit_manifest
    write_unit_manifest(dst, [UnitRecord(r.id, r.units, (CLASSES[int(r.labels[0])],)) for r in read_unit_file(src)])
    return dst


def test_blstm_baseline_on_a_generic_tsv_task(ks, tmp_path):
    train, valid, test = (_as_tsv(ks[k], tmp_path / f"{k}.tsv") for k in ("train", "valid", "test"))
    exp = tmp_path / "exp_blstm"
    res = last_json(cli("train", "--task", "my_csv_task", "--train", train, "--valid", valid, "--method", "blstm",
                        "--blstm-hidden", 32, "--max-updates", 15, "--valid-interval", 5, "--out", exp))
    assert res["updates"] == 15
    ev = last_json(cli("evaluate", "--exp", exp, "--split", "test", test))
    assert ev["n"] == 100 and ev["unfinished"] == 0 and 0.0 <= ev["accuracy"] <= 1.0
    assert ev["trainable_params"] == res["trainable_params"] and ev["task"] == "my_csv_task"
    predicted = {line.split("\t")[1] for line in (exp / "test_predict.txt").read_text().splitlines()}
    assert predicted <= set(CLASSES)


def test_cosine_schedule_warms_up_then_decays_to_zero_at_max_updates(ks, tiny_lm, tmp_path):
    from s3prl_speechprompt.engine.trainer import TrainConfig, lr_schedule
    lr_at = lr_schedule(TrainConfig(lr_schedule="cosine", max_updates=110), 1e-2, 10)
    assert lr_at(5) == pytest.approx(5e-3) and lr_at(10) == pytest.approx(1e-2)
    assert lr_at(60) == pytest.approx(5e-3) and lr_at(110) == pytest.approx(0.0) and lr_at(500) == pytest.approx(0.0)
    assert all(lr_at(u) >= lr_at(u + 1) for u in range(10, 120))
    out = cli("train", "--task", "ks", "--train", ks["train"], "--valid", ks["valid"], "--ulm", tiny_lm,
              "--lr-schedule", "cosine", "--out", tmp_path / "no_budget", check=False)
    assert out.returncode == 2 and "--lr-schedule cosine" in out.stderr and "--max-updates" in out.stderr
    res = last_json(cli("train", "--task", "ks", "--train", ks["train"], "--valid", ks["valid"], "--ulm", tiny_lm,
                        "--lr-schedule", "cosine", "--max-updates", 8, "--out", tmp_path / "cos"))
    assert res["updates"] == 8
    assert json.loads((tmp_path / "cos" / "config.json").read_text())["train_config"]["lr_schedule"] == "cosine"


def test_report_pairs_engine_runs_by_line_ids_and_groups_seeds(ks, tiny_lm, pt_exp, tmp_path):
    """`speechprompt evaluate` leaves what `speechprompt report --compare --group-seeds` needs: per-utterance
    predictions with ids (line numbers for SpeechPrompt's id-less unit files) and the seed of `train --seed`."""
    from s3prl_speechprompt.predictions import read_predictions
    exp0, _ = pt_exp
    exp1, blstm = tmp_path / "pt_seed1", tmp_path / "blstm"
    common = ["--task", "ks", "--train", ks["train"], "--valid", ks["valid"], "--valid-interval", 5]
    cli("train", *common, "--ulm", tiny_lm, "--method", "pt", "--max-updates", 40, "--seed", 1, "--out", exp1)
    cli("train", *common, "--method", "blstm", "--blstm-hidden", 32, "--max-updates", 15, "--out", blstm)
    for exp in (exp0, exp1, blstm):
        cli("evaluate", "--exp", exp, "--split", "test", ks["test"])
    pred = read_predictions(exp1 / "test_predictions.jsonl")
    assert sorted(pred.ids) == sorted(f"test-{i}" for i in range(1, 101)) and pred.header["seed"] == 1
    assert json.loads((exp1 / "test_scores.json").read_text())["seed"] == 1
    data = json.loads(cli("report", exp0, exp1, blstm, "--compare", "--group-seeds", "--format", "json",
                          "--references", "none").stdout)
    runs = {r["expdir"]: r for r in data["rows"] if r["source"] == "run"}
    assert {runs[str(exp0)]["seed"], runs[str(exp1)]["seed"]} == {100501, 1}
    assert all(r["intervals"]["accuracy"][0] <= r["metrics"]["accuracy"] <= r["intervals"]["accuracy"][1]
               for r in runs.values())
    groups = [r for r in data["rows"] if r["source"] == "seeds"]
    assert len(groups) == 1 and sorted(groups[0]["seeds"]) == [1, 100501] and len(groups[0]["members"]) == 2
    assert len(data["comparisons"]) == 3 and all(c["n"] == 100 and c["test"] == "exact McNemar"
                                                 for c in data["comparisons"])
