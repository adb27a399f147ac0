"""A damaged file at every load path gets the same one line (readers.read_torch): the file, what was expected,
what was found; exit 2, no traceback, nothing written. Damage kinds: cut short (a copy interrupted half way),
empty, and a file of another kind (a km.bin given as a checkpoint, a runner checkpoint given as a unit LM)."""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

RUNNER = [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream"]
SPEECHPROMPT = [sys.executable, "-m", "s3prl_speechprompt"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_ulm_dir):
    """A whole runner-shaped checkpoint, a GSLM-format km.bin, and the tiny unit LM's checkpoint."""
    import joblib
    from sklearn.cluster import MiniBatchKMeans
    root = tmp_path_factory.mktemp("damage")
    runner = root / "dev-best.ckpt"
    torch.save({"Args": argparse.Namespace(mode="train", upstream="fbank"), "Config": {"runner": {}},
                "Downstream": {"w": torch.zeros(64, 64)}, "Step": 10}, runner)
    km = root / "km.bin"
    joblib.dump(MiniBatchKMeans(n_clusters=4, n_init=1, random_state=0).fit(np.random.default_rng(0).random((40, 3))),
                km)
    return {"root": root, "runner": runner, "km": km, "lm": tiny_ulm_dir / "checkpoint_best.pt"}


def damaged(src, kind, dst):
    """``dst`` holding ``src`` cut short (half its bytes) or empty; for 'other', ``src`` is copied whole."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "other": data}[kind])
    return dst


def one_line_error(out, prog, *must):
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), out.stderr[-3000:]
    for m in must:
        assert m in line, line
    return line


FOUND = {"truncated": "cut short", "empty": "is empty (0 bytes)"}


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_runner_dash_e_reads_the_checkpoint_through_the_checked_reader(files, tmp_path, kind):
    src = files["km"] if kind == "other" else files["runner"]
    ckpt = damaged(src, kind, tmp_path / "exp" / "dev-best.ckpt")
    out = subprocess.run(RUNNER + ["-m", "evaluate", "-e", str(ckpt), "--device", "cpu"], capture_output=True,
                         text=True, timeout=600)
    found = FOUND.get(kind, "is a plain pickle (e.g. a joblib km.bin")
    one_line_error(out, "speechprompt-run-downstream", f"-e {ckpt}", found, "expected an s3prl runner checkpoint")
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["dev-best.ckpt"]     # nothing written


def test_runner_dash_i_and_dash_a_check_the_checkpoint_s3prl_would_load(files, tmp_path):
    init = damaged(files["runner"], "truncated", tmp_path / "init.ckpt")
    out = subprocess.run(RUNNER + ["-m", "train", "-i", str(init), "-u", "fbank", "-d", "speechprompt_ks",
                                   "-p", str(tmp_path / "exp_i"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt-run-downstream", f"-i {init}", "cut short")
    assert not (tmp_path / "exp_i").exists()
    exp = tmp_path / "exp_a"
    shutil.copy(files["runner"], damaged(files["runner"], "other", exp / "states-5.ckpt"))
    newest = damaged(files["runner"], "empty", exp / "states-20.ckpt")      # -a resumes the highest step
    out = subprocess.run(RUNNER + ["-m", "train", "-a", "-u", "fbank", "-d", "speechprompt_ks", "-p", str(exp),
                                   "--device", "cpu"], capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt-run-downstream", f"-a {newest}", "is empty")
    assert sorted(p.name for p in exp.iterdir()) == ["states-20.ckpt", "states-5.ckpt"]
    (tmp_path / "no_states").mkdir()
    out = subprocess.run(RUNNER + ["-m", "evaluate", "-e", str(tmp_path / "no_states"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt-run-downstream", f"-e {tmp_path / 'no_states'}", "holds no states-<step>.ckpt")


def _unit_files(root):
    rng = random.Random(0)
    for name in ("train", "valid"):
        (root / f"{name}.txt").write_text("".join(
            " ".join(str(rng.randrange(20)) for _ in range(8)) + f" <s> {rng.choice('ab')}\n" for _ in range(16)))
    return ["--task", "ks", "--train", root / "train.txt", "--valid", root / "valid.txt", "--threads", "1"]


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_the_unit_lm_loader_refuses_a_damaged_checkpoint(files, tmp_path, tiny_ulm_dir, kind):
    lm = tmp_path / "ulm"
    lm.mkdir()
    shutil.copy(tiny_ulm_dir / "dict.txt", lm / "dict.txt")
    damaged(files["runner"] if kind == "other" else files["lm"], kind, lm / "checkpoint_best.pt")
    out = subprocess.run(SPEECHPROMPT + ["train", *map(str, _unit_files(tmp_path)), "--ulm", str(lm),
                                         "--max-updates", "2", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    found = FOUND.get(kind, "is an s3prl runner checkpoint")
    one_line_error(out, "speechprompt train", str(lm / "checkpoint_best.pt"), found, "expected a fairseq unit-LM")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_train_resume_refuses_a_damaged_checkpoint_last(files, tmp_path, tiny_ulm_dir, kind):
    args = [*map(str, _unit_files(tmp_path)), "--ulm", str(tiny_ulm_dir), "--max-updates", "4", "--out",
            str(tmp_path / "run")]
    assert subprocess.run(SPEECHPROMPT + ["train", *args], capture_output=True, timeout=600).returncode == 0
    last = tmp_path / "run" / "checkpoint_last.pt"
    damaged(files["lm"] if kind == "other" else last, kind, last)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    out = subprocess.run(SPEECHPROMPT + ["train", *args, "--resume"], capture_output=True, text=True, timeout=600)
    found = FOUND.get(kind, "is a fairseq checkpoint (a unit LM)")
    one_line_error(out, "speechprompt train", f"--resume {last}", found, "expected a `speechprompt train` checkpoint")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_a_damaged_kmeans_file_is_one_line(files, tmp_path, kind):
    from s3prl_speechprompt.errors import KMeansFileError
    from s3prl_speechprompt.units.quantizer import KMeansQuantizer
    km = damaged(files["lm"] if kind == "other" else files["km"], kind, tmp_path / "km.bin")
    with pytest.raises(KMeansFileError) as e:
        KMeansQuantizer.load(km)
    msg = str(e.value)
    assert msg.startswith(str(km)) and "\n" not in msg
    assert {"truncated": "could not unpickle", "empty": "is empty (0 bytes)",
            "other": "is a fairseq checkpoint (a unit LM), expected a k-means file"}[kind] in msg


def _copy_run(run, dst):
    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
@pytest.mark.parametrize("target", ["trained_task/trained_task.pt", "trained_task/trained_task.json", "prompt.pt"])
def test_evaluate_and_predict_refuse_a_damaged_trained_task(files, tiny_engine_run, tmp_path, kind, target):
    run = _copy_run(tiny_engine_run[0], tmp_path / "run")
    if target == "prompt.pt":                 # an old engine dir: no trained_task/, rebuilt from prompt.pt
        shutil.rmtree(run / "trained_task")
    path = run / target
    other = files["km"] if target.endswith(".pt") else files["root"] / "text.json"
    if kind == "other" and not target.endswith(".pt"):
        other.write_text('{"format": "something-else/1"}')
    damaged(other if kind == "other" else path, kind, path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    found = {"truncated": "cut short" if target.endswith(".pt") else "is not valid JSON", "empty": "is empty",
             "other": "is a plain pickle" if target.endswith(".pt") else "format 'something-else/1'"}[kind]
    out = subprocess.run(SPEECHPROMPT + ["evaluate", "--exp", str(run), "--split", "valid", str(tiny_engine_run[1]),
                                         "--threads", "1"], capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt evaluate", str(path), found)
    out = subprocess.run(SPEECHPROMPT + ["predict", "--ckpt", str(run), "--units", str(tiny_engine_run[1]), "--out",
                                         str(tmp_path / "p.jsonl")], capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt predict", str(path), found)
    assert not (tmp_path / "p.jsonl").exists()
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("kind", ["truncated", "empty"])
def test_report_refuses_a_damaged_run_record(tiny_engine_run, tmp_path, kind):
    run = _copy_run(tiny_engine_run[0], tmp_path / "run")
    damaged(run / "run.json", kind, run / "run.json")
    out = subprocess.run(SPEECHPROMPT + ["report", str(run)], capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt report", str(run / "run.json"),
                   {"truncated": "is not valid JSON", "empty": "is empty"}[kind])


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_predict_refuses_a_damaged_runner_checkpoint(files, tmp_path, tiny_engine_run, kind):
    ckpt = damaged(files["km"] if kind == "other" else files["runner"], kind, tmp_path / "dev-best.ckpt")
    out = subprocess.run(SPEECHPROMPT + ["predict", "--ckpt", str(ckpt), "--units", str(tiny_engine_run[1])],
                         capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt predict", str(ckpt), FOUND.get(kind, "is a plain pickle"))


@pytest.mark.parametrize("kind", ["truncated", "empty", "other"])
def test_extract_units_refuses_a_damaged_kmeans_file_before_reading_audio(files, tmp_path, kind):
    km = damaged(files["lm"] if kind == "other" else files["km"], kind, tmp_path / "km.bin")
    out = subprocess.run(SPEECHPROMPT + ["extract-units", "-u", "fbank", "--km", str(km), "--corpus-task", "ks",
                                         "--root", str(tmp_path / "no_corpus_needed"), "--out", str(tmp_path / "units")],
                         capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt extract-units", str(km), {"truncated": "could not unpickle", "empty": "is empty",
                                                                "other": "is a fairseq checkpoint (a unit LM)"}[kind])
    assert not (tmp_path / "units").exists()


def test_runner_inference_reads_its_checkpoint_through_the_checked_reader(files, tmp_path):
    ckpt = damaged(files["runner"], "truncated", tmp_path / "exp" / "dev-best.ckpt")
    (tmp_path / "list.txt").write_text("a.wav\n")
    out = subprocess.run(RUNNER + ["-m", "inference", "-e", str(ckpt), "-t", str(tmp_path / "list.txt"),
                                   "--device", "cpu"], capture_output=True, text=True, timeout=600)
    one_line_error(out, "speechprompt-run-downstream", f"-e {ckpt}", "cut short")
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["dev-best.ckpt"]
