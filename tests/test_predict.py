"""Using trained prompts: s3prl's ``-m inference -t FILE`` and ``speechprompt predict`` over two tasks' checkpoints.

One module fixture trains tiny KS and IC prompt-tuning runs through s3prl's runner (same random LM, same
k-means, different prompt lengths) and evaluates each on its test split; the tests compare what the
serving paths print / write with those ``test_predict.txt`` files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import FBANK, N_CLUSTERS, run_runner, train_and_evaluate, write_config

STEPS = 40


def _items(task_name, datarc, split):
    from s3prl_speechprompt.tasks.base import get_task
    return [it for it in get_task(task_name)(**datarc).read_split(split) if it.offset == 0 and it.num_samples is None]


def _predictions(path: Path) -> dict:
    return dict(line.rstrip("\n").split(" ", 1) for line in path.read_text().splitlines())


def _train_and_evaluate(root: Path, name: str, datarc: dict, exp: Path, lr=None, **expert) -> Path:
    """A runner run of ``name`` on the fixture's LM and k-means (``root/ulm``, ``root/km.pt``) with a learnable
    verbalizer, trained for STEPS steps (s3prl's default seed, whatever the seed offset: the outputs are pinned)
    and evaluated once on test (``-m evaluate -e dev-best.ckpt``)."""
    # eval batch 1: s3prl's Featurizer keeps round(samples / hop) frames per utterance of a padded batch, so in a
    # batch a shorter clip gains 1-2 padding frames (units) that it does not have alone; -m inference and
    # predict featurize one file at a time
    cfg = write_config(root / f"{name}.yaml", name, {**datarc, "eval_batch_size": 1}, root / "ulm", root / "cache",
                       STEPS, lr=lr, verbalizer="learnable", km=str(root / "km.pt"), **expert)
    train_and_evaluate(name, cfg, exp, seed=1337)
    return exp


def _write_unit_files(runs, out: Path) -> None:
    """``out/{train,dev,test}.tsv``: the KS corpus through the fixture's k-means (fbank, one file at a time)."""
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import to_units

    featurize = runner_featurizer(FBANK)
    task = get_task("ks")(**runs["datarc"]["ks"])
    for split in ("train", "dev", "test"):
        write_unit_manifest(out / f"{split}.tsv", [
            UnitRecord(it.id, tuple(to_units(runs["quantizer"], featurize(read_item_audio(it)))), it.labels)
            for it in task.read_split(split)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from s3prl_speechprompt import compat
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.synth import make_ic, make_ks
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM
    from s3prl_speechprompt.units.prepare import prepare_units

    compat.apply()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    make_ks(root / "ks", seed=0, per_class=4, progress=False)
    make_ic(root / "ic", seed=0, per_intent=2, progress=False)
    datarc = {"ks": {"speech_commands_root": str(root / "ks" / "speech_commands_v0.01"),
                     "speech_commands_test_root": str(root / "ks" / "speech_commands_test_set_v0.01")},
              "ic": {"file_path": str(root / "ic" / "fluent_speech_commands_dataset")}}
    # one k-means (fit on KS train fbank) and one random unit LM shared by both tasks, as GSLM's would be
    quantizer, _ = prepare_units(get_task("ks")(**datarc["ks"]).read_split("train"), runner_featurizer(FBANK),
                                 read_item_audio, key_parts=upstream_key(FBANK), n_clusters=N_CLUSTERS, seed=0,
                                 cache_dir=root / "cache")
    quantizer.save(root / "km.pt")
    torch.manual_seed(0)
    d = Dictionary([str(k) for k in range(N_CLUSTERS)])
    save_ulm(UnitLM(ULMConfig.from_arch("ulm_tiny", len(d))), d, root / "ulm")
    out = {"root": root, "datarc": datarc, "exp": {}}
    for task, length in (("ks", 4), ("ic", 9)):
        out["exp"][task] = _train_and_evaluate(root, f"speechprompt_{task}", datarc[task], root / f"exp_{task}",
                                               lr=3e-2, prompt={"prompt_length": length})
    out["quantizer"] = quantizer
    return out


@pytest.mark.parametrize("task", ["ks", "ic"])
def test_runner_inference_prints_the_evaluate_prediction(runs, task):
    exp = runs["exp"][task]
    expected = _predictions(exp / "test_predict.txt")
    item = _items(task, runs["datarc"][task], "test")[0]
    stdout = run_runner("-m", "inference", "-t", item.wav_path, "-e", str(exp / "dev-best.ckpt"), "--device", "cpu")
    stem = Path(item.wav_path).stem
    line = f"[speechprompt] inference {stem}: {expected[item.id]}"
    assert line in stdout, (line, stdout[-1500:])
    assert (exp / "inference.ark").read_text() == f"{stem} {expected[item.id]}\n"


def test_inference_audio_hook_names_an_unreadable_file(tmp_path):
    """The runner reads ``-t FILE`` through the expert's ``load_audio`` (both experts inherit it)."""
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import DownstreamExpert as Baseline
    from s3prl_speechprompt.s3prl_plugin.prompt_expert import DownstreamExpert as Prompt

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    for expert in (Prompt, Baseline):
        with pytest.raises(ValueError, match=f"{bad}: unreadable"):
            expert.load_audio(bad)
    with pytest.raises(ValueError, match="missing.wav: file not found"):
        Prompt.load_audio(tmp_path / "missing.wav")


def test_predict_two_tasks_equals_each_runs_evaluate(runs, tmp_path, capsys):
    from s3prl_speechprompt import cli

    ks_items = _items("ks", runs["datarc"]["ks"], "test")
    ic_items = _items("ic", runs["datarc"]["ic"], "test")
    (tmp_path / "wavs.txt").write_text("".join(f"{it.wav_path}\n" for it in ks_items + ic_items))
    ckpts = [str(runs["exp"][t] / "dev-best.ckpt") for t in ("ks", "ic")]
    with pytest.raises(SystemExit) as done:        # in-process: s3prl is already imported by the fixture
        cli.main(["predict", "--ckpt", ckpts[0], "--ckpt", ckpts[1], "--list", str(tmp_path / "wavs.txt"),
                  "--out", str(tmp_path / "p.jsonl"), "--batch-size", "8"])
    assert done.value.code == 0
    stderr = capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (len(ks_items) + len(ic_items))
    assert set(rows[0]) == {"file", "checkpoint", "task", "method", "prediction", "labels", "score", "finished",
                            "units"}
    got = {(r["checkpoint"], r["file"]): r for r in rows}
    for task, items, ckpt in (("ks", ks_items, ckpts[0]), ("ic", ic_items, ckpts[1])):
        expected = _predictions(runs["exp"][task] / "test_predict.txt")
        for it in items:
            r = got[(ckpt, it.wav_path)]
            assert r["task"] == task and r["method"] == "pt"
            assert r["prediction"] == expected[it.id], (task, it.id)
            assert r["score"] <= 0.0
    # one group: the upstream and the LM were loaded once for both checkpoints
    assert stderr.count("[speechprompt predict] upstream fbank") == 1, stderr


def test_predict_bad_audio_and_mismatched_lm(runs, tmp_path):
    from s3prl_speechprompt import cli
    from s3prl_speechprompt.errors import LMMismatchError
    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    ckpt = str(runs["exp"]["ks"] / "dev-best.ckpt")
    good = _items("ks", runs["datarc"]["ks"], "test")[0].wav_path
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(ValueError, match=r"(?s)1 of 2 audio files are unusable:\n  \S*bad.wav: unreadable .*--bad-audio "
                                         r"skip"):
        cli.main(["predict", "--ckpt", ckpt, good, str(bad)])
    with pytest.raises(SystemExit) as done:
        cli.main(["predict", "--ckpt", ckpt, good, str(bad), "--bad-audio", "skip", "--out", str(tmp_path / "p.jsonl")])
    assert done.value.code == 0
    assert [json.loads(x)["file"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == [good]

    torch.manual_seed(1)                  # another LM of the same shape: the prompts were not trained on it
    d = Dictionary([str(k) for k in range(N_CLUSTERS)])
    save_ulm(UnitLM(ULMConfig.from_arch("ulm_tiny", len(d))), d, tmp_path / "other_ulm")
    with pytest.raises(LMMismatchError, match=r"trained on the unit LM with fingerprint \w+, but .*other_ulm "
                                                 r"\(--ulm\) has fingerprint \w+; point --ulm at the LM"):
        cli.main(["predict", "--ckpt", ckpt, "--ulm", str(tmp_path / "other_ulm"), good])


def _same_as_forward(expert, features, labels, expdir):
    """``inference`` returns (and writes) exactly the label strings ``forward`` records for an evaluated split."""
    from collections import defaultdict

    records = defaultdict(list)
    names = [f"utt{i}" for i in range(len(features))]
    with torch.no_grad():
        expert.eval()
        expert("test", features, labels, names, records)
        got = expert.inference(features, names)
    assert got == [expert.task.label_string(h) for h in records["hyp"]]
    assert (expdir / "inference.ark").read_text() == "".join(f"{n} {y}\n" for n, y in zip(names, got))


def test_inference_of_ftlm_linear_and_lstm_experts_matches_their_evaluation(runs, tmp_path):
    """FT-LM (prompt expert, the KS run's k-means and verbalizer via init_ckpt), SUPERB linear (KS) and BLSTM-CTC
    (ASR; its vocabulary needs no corpus) built in inference mode, as the runner builds them for ``-m inference``."""
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import DownstreamExpert as Baseline
    from s3prl_speechprompt.s3prl_plugin.prompt_expert import DownstreamExpert as Prompt

    torch.manual_seed(0)
    feats = [torch.randn(n, 240) for n in (37, 51, 12)]
    ks_labels = [("yes",), ("no",), ("up",)]
    kw = {"mode": "inference", "evaluate_split": str(tmp_path / "any.wav")}
    ftlm = Prompt(240, {"task": "ks", "ulm": str(runs["root"] / "ulm"), "method": "ftlm", "verbalizer": "learnable",
                        "datarc": runs["datarc"]["ks"]}, str(tmp_path / "ftlm"),
                  init_ckpt=str(runs["exp"]["ks"] / "dev-best.ckpt"), **kw)
    _same_as_forward(ftlm, feats, ks_labels, tmp_path / "ftlm")
    linear = Baseline(240, {"task": "ks", "datarc": runs["datarc"]["ks"]}, str(tmp_path / "linear"),
                      downstream="speechprompt_ks_linear", **kw)
    _same_as_forward(linear, feats, ks_labels, tmp_path / "linear")
    lstm = Baseline(240, {"task": "asr", "modelrc": {"project_dim": 16, "RNNs": {"dim": [16, 16]}}},
                    str(tmp_path / "lstm"), downstream="speechprompt_asr_lstm", **kw)
    _same_as_forward(lstm, feats, [tuple("AB|C"), tuple("D"), tuple("EF")], tmp_path / "lstm")


def test_predict_decodes_a_beam_bf16_checkpoint_as_its_evaluation(runs, tmp_path, capsys):
    """``beam_size > 1`` / ``precision: bf16`` in a checkpoint's config: ``predict`` decodes it as its ``-m
    evaluate`` did (the prompt bank decodes greedily in fp32, so it is served alone), not as a greedy fp32 run."""
    from s3prl_speechprompt import cli
    from s3prl_speechprompt.trained import read_runner_checkpoint

    ckpt = read_runner_checkpoint(runs["exp"]["ic"] / "dev-best.ckpt")
    ckpt["Config"]["downstream_expert"].update(beam_size=3, precision="bf16")
    exp = tmp_path / "exp_ic_beam"
    exp.mkdir()
    ckpt["Args"].expdir = str(exp)                       # -m evaluate writes test_predict.txt here
    torch.save(ckpt, exp / "dev-best.ckpt")
    run_runner("-m", "evaluate", "-t", "test", "-e", str(exp / "dev-best.ckpt"), "--device", "cpu")
    expected = _predictions(exp / "test_predict.txt")
    greedy = _predictions(runs["exp"]["ic"] / "test_predict.txt")
    assert expected != greedy, "beam 3 + bf16 decoded every test clip as greedy fp32 did: the test cannot tell them apart"

    items = _items("ic", runs["datarc"]["ic"], "test")
    (tmp_path / "wavs.txt").write_text("".join(f"{it.wav_path}\n" for it in items))
    with pytest.raises(SystemExit) as done:
        cli.main(["predict", "--ckpt", str(exp / "dev-best.ckpt"), "--list", str(tmp_path / "wavs.txt"),
                  "--out", str(tmp_path / "p.jsonl")])
    assert done.value.code == 0
    rows = {r["file"]: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert {it.id: rows[it.wav_path]["prediction"] for it in items} == {it.id: expected[it.id] for it in items}
    assert all(r["score"] <= 0.0 for r in rows.values())
    assert "decoded alone as its evaluation was (beam 3, bf16)" in capsys.readouterr().err


# ---------------------------------------------------------------- the refactor's equivalence pin
PINS = Path(__file__).with_name("data") / "trained_task_outputs.json"
PIN_WRITE = "SPEECHPROMPT_WRITE_PINS"       # set to a path: write the pins there instead of comparing


def _pinned_outputs(runs, tmp_path) -> dict:
    """What every front end produced on fixed fixtures, through the command line only (so the same function ran
    on the code before the trained-task refactor, 5264e39, and wrote ``data/trained_task_outputs.json``): the
    runner's KS / IC PT ``-m evaluate`` predictions, a KS FT-LM run, the IC checkpoint switched to beam 3 + bf16,
    ``predict`` over all of them (labels and log-probabilities), and an engine PT run's ``evaluate``."""
    import os
    import subprocess
    import sys

    from helpers import runner_env
    from s3prl_speechprompt.trained import read_runner_checkpoint

    root, got = runs["root"], {}
    exps = dict(runs["exp"])
    exps["ks_ftlm"] = root / "exp_ks_ftlm"
    if not (exps["ks_ftlm"] / "test_predict.txt").is_file():
        _train_and_evaluate(root, "speechprompt_ks_ftlm", runs["datarc"]["ks"], exps["ks_ftlm"])
    ckpt = read_runner_checkpoint(runs["exp"]["ic"] / "dev-best.ckpt")
    ckpt["Config"]["downstream_expert"].update(beam_size=3, precision="bf16")
    exps["ic_beam_bf16"] = tmp_path / "exp_ic_beam"
    exps["ic_beam_bf16"].mkdir()
    ckpt["Args"].expdir = str(exps["ic_beam_bf16"])
    torch.save(ckpt, exps["ic_beam_bf16"] / "dev-best.ckpt")
    run_runner("-m", "evaluate", "-t", "test", "-e", str(exps["ic_beam_bf16"] / "dev-best.ckpt"), "--device", "cpu")
    for key, exp in exps.items():
        got[f"runner {key} -m evaluate"] = _predictions(exp / "test_predict.txt")

    files = {t: [it.wav_path for it in _items(t, runs["datarc"][t], "test")] for t in ("ks", "ic")}
    # (the code before the refactor could not serve an FT-LM runner checkpoint: its tied output projection was not
    # stored; the FT-LM run's predict is checked against its own -m evaluate in the test instead)
    for key, task in (("ks", "ks"), ("ic", "ic"), ("ic_beam_bf16", "ic")):
        (tmp_path / f"{key}.txt").write_text("".join(f"{f}\n" for f in files[task]))
        out = tmp_path / f"{key}.jsonl"
        subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "predict", "--ckpt",
                        str(exps[key] / "dev-best.ckpt"), "--list", str(tmp_path / f"{key}.txt"), "--out", str(out)],
                       check=True, env=runner_env(), capture_output=True)
        got[f"predict {key}"] = {"/".join(Path(r["file"]).parts[-2:]): [r["prediction"], r["score"], r["finished"]]
                                 for r in map(json.loads, out.read_text().splitlines())}

    # the engine: unit files of the KS corpus through the fixture's k-means, PT on the same random LM
    _write_unit_files(runs, tmp_path)
    exp = tmp_path / "engine_pt"
    env = {**runner_env(), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "train", "--task", "ks", "--method", "pt",
                    "--verbalizer", "learnable", "--train", str(tmp_path / "train.tsv"), "--valid",
                    str(tmp_path / "dev.tsv"), "--ulm", str(root / "ulm"), "--max-updates", "30",
                    "--valid-interval", "10", "--lr", "3e-2", "--threads", "1", "--out", str(exp)],
                   check=True, env=env, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "evaluate", "--exp", str(exp), "--split",
                          "test", str(tmp_path / "test.tsv"), "--threads", "1"],
                         check=True, env=env, capture_output=True, text=True)
    scores = json.loads(res.stdout.strip().splitlines()[-1])
    got["engine pt evaluate"] = {"accuracy": scores["accuracy"], "predictions": {
        r["id"]: r["prediction"] for r in map(json.loads, (exp / "test_predictions.jsonl").read_text().splitlines()[1:])}}
    if os.environ.get(PIN_WRITE):
        Path(os.environ[PIN_WRITE]).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    return got


def test_every_front_end_reproduces_the_pre_refactor_outputs(runs, tmp_path):
    """The trained-task refactor changed the shape, not the results: on fixed fixtures every prediction equals what
    the code before it produced, and every log-probability is within 1e-6 (bf16 decoding: 1e-2, see below)."""
    got = _pinned_outputs(runs, tmp_path)
    pinned = json.loads(PINS.read_text())
    assert sorted(got) == sorted(pinned)
    for key in pinned:
        if key.startswith("predict"):
            assert sorted(got[key]) == sorted(pinned[key]), key
            for f, (label, score, finished) in pinned[key].items():
                assert got[key][f][0] == label and got[key][f][2] == finished, (key, f)
                # fp32: both are rounded to 6 decimals, one step of the 6th decimal is 1e-6 (a hair more in binary).
                # bf16 keeps 8 significant bits and its CPU kernels differ between CPUs (AVX512-BF16 / AMX or not):
                # the pins' machine and another give the same labels, log-probs up to ~3e-3 apart
                tol = 1e-2 if "bf16" in key else 1e-6 + 1e-12
                assert abs(got[key][f][1] - score) <= tol, (key, f, got[key][f][1], score)
        else:
            assert got[key] == pinned[key], key


def test_predict_serves_an_ftlm_runner_checkpoint_as_its_evaluation(runs, tmp_path):
    """FT-LM checkpoints carry their whole LM (the tied output projection included): ``predict`` rebuilds it."""
    import subprocess
    import sys

    from helpers import runner_env

    exp = runs["root"] / "exp_ks_ftlm"
    if not (exp / "dev-best.ckpt").is_file():
        (tmp_path / "pins").mkdir()
        _pinned_outputs(runs, tmp_path / "pins")
    items = _items("ks", runs["datarc"]["ks"], "test")
    (tmp_path / "wavs.txt").write_text("".join(f"{it.wav_path}\n" for it in items))
    subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "predict", "--ckpt", str(exp / "dev-best.ckpt"),
                    "--list", str(tmp_path / "wavs.txt"), "--out", str(tmp_path / "p.jsonl")],
                   check=True, env=runner_env(), capture_output=True)
    rows = {r["file"]: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    expected = _predictions(exp / "test_predict.txt")
    assert {it.id: rows[it.wav_path]["prediction"] for it in items} == expected
    assert all(r["method"] == "ftlm" for r in rows.values())


def test_predict_groups_a_runner_run_and_an_engine_run_on_the_same_lm(runs, tmp_path, capsys):
    """A runner PT run (trained from audio) and a unit-level engine PT run on the same LM directory: ``predict``
    decodes both in one bank pass on unit input, and each run's predictions equal its own evaluation."""
    from s3prl_speechprompt import cli
    from s3prl_speechprompt.engine.evaluate import evaluate
    from s3prl_speechprompt.engine.trainer import TrainConfig, train_prompted
    from s3prl_speechprompt.errors import ConfigError
    from s3prl_speechprompt.trained import TrainedTask

    _write_unit_files(runs, tmp_path)
    engine = tmp_path / "engine_pt"
    train_prompted(tmp_path / "train.tsv", tmp_path / "dev.tsv", runs["root"] / "ulm", engine,
                   TrainConfig(task="ks", method="pt", verbalizer="learnable", max_updates=30, valid_interval=10,
                               lr=3e-2, threads=1), log=lambda *a: None)
    evaluate(engine, "test", tmp_path / "test.tsv", threads=1, log=lambda *a: None)
    runner = runs["exp"]["ks"]
    with pytest.raises(SystemExit) as done:
        cli.main(["predict", "--ckpt", str(runner / "dev-best.ckpt"), "--ckpt", str(engine), "--units",
                  str(tmp_path / "test.tsv"), "--out", str(tmp_path / "p.jsonl")])
    assert done.value.code == 0
    groups = [line for line in capsys.readouterr().err.splitlines() if "unit LM" in line]
    assert len(groups) == 1 and groups[0].startswith("[speechprompt predict] unit input, unit LM "), groups
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    got = {(r["checkpoint"], r["file"]): r["prediction"] for r in rows}
    engine_own = dict(line.split("\t", 1) for line in (engine / "test_predict.txt").read_text().splitlines())
    for ckpt, expected in ((str(runner / "dev-best.ckpt"), _predictions(runner / "test_predict.txt")),
                           (str(engine), engine_own)):
        assert {f: p for (c, f), p in got.items() if c == ckpt} == expected, ckpt
    # the runner wrote its trained task next to dev-best.ckpt; a unit-level run cannot take audio
    written, rebuilt = TrainedTask.find(runner), TrainedTask.from_runner_checkpoint(runner / "dev-best.ckpt")
    assert written.origin == str(runner / "dev-best.ckpt") and written.prompt == rebuilt.prompt
    assert written.state.keys() == rebuilt.state.keys()
    assert all(torch.equal(written.state[k], rebuilt.state[k]) for k in rebuilt.state)
    with pytest.raises(ConfigError, match=r"engine_pt: trained on unit files .* --units FILE"):
        cli.main(["predict", "--ckpt", str(engine), _items("ks", runs["datarc"]["ks"], "test")[0].wav_path])
