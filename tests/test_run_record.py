"""The run record (``run.json``, :mod:`s3prl_speechprompt.record`): what the report reads, and the converter of
run directories from before it (``speechprompt upgrade-run``).

* old-format directories (hand-made here, as the runner / ``speechprompt train`` + ``evaluate`` left them before
  run.json, with tensorboard events at fixed times) get one line naming the converter; converted, they report
  what the old collector reported: ``tests/data/old_run_report.json`` was written by the old collector (the
  report at commit f275468) on these very directories;
* the record itself: format, atomic save / load, the report's choice of the test evaluation;
* real runs: a runner PT run and an engine PT run on the same test utterances, reported side by side with the
  paired test, give the same table after their ``log.log`` and tensorboard events are deleted.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ks_datarc, runner_env, save_random_ulm
from s3prl_speechprompt.predictions import write_predictions

PIN = Path(__file__).parent / "data" / "old_run_report.json"
TAG = "2026-01-01-00-00-0{}"          # s3prl's args_/config_ time tags (local time)


# ------------------------------------------------------------------------------------------------
# old-format run directories, as the code before run.json wrote them
# ------------------------------------------------------------------------------------------------

def _tag_time(i: int) -> float:
    return datetime.strptime(TAG.format(i), "%Y-%m-%d-%H-%M-%S").timestamp()


def _events(path: Path, events) -> None:
    """A tensorboard event file of ``(wall_time, step, {tag: value})`` (TFRecord framing; checksums not read)."""
    from tensorboardX.proto.event_pb2 import Event

    out = b""
    for wall, step, values in events:
        ev = Event(wall_time=wall, step=step)
        for tag, value in values.items():
            ev.summary.value.add(tag=tag, simple_value=value)
        data = ev.SerializeToString()
        out += struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
    path.write_bytes(out)


def _ks_predictions(path: Path, n_right: int, n: int = 40, **header) -> None:
    labels = [("yes",) if i % 2 else ("no",) for i in range(n)]
    hyps = [y if i < n_right else (("no",) if y == ("yes",) else ("yes",)) for i, y in enumerate(labels)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(path, [f"utt{i:03d}" for i in range(n)], labels, hyps, task="ks", split="test", **header)


def _runner_dir(expdir: Path, log: str = "", info: dict = None, mode_args=(), downstream="speechprompt_ic_linear",
                task="ic", expert=None, total_steps=100, upstream="fbank", layer=None, seed=1337) -> Path:
    expdir.mkdir(parents=True)
    for i, (mode, extra) in enumerate(mode_args or [("train", {})]):
        args = {"mode": mode, "downstream": downstream, "upstream": upstream, "upstream_layer_selection": layer,
                "evaluate_split": "test", "init_ckpt": None, "seed": seed, **extra}
        (expdir / f"args_{TAG.format(i)}.yaml").write_text(yaml.safe_dump(args))
    (expdir / f"config_{TAG.format(0)}.yaml").write_text(yaml.safe_dump(
        {"runner": {"total_steps": total_steps}, "optimizer": {"lr": 1.0e-3},
         "downstream_expert": {"task": task, **(expert or {"head": "linear"})}}))
    if log:
        (expdir / "log.log").write_text(log)
    if info is not None:
        (expdir / "speechprompt_info.json").write_text(json.dumps(info))
    return expdir


def _runner_ckpt(path: Path, step: int, featurizer: int = 0) -> None:
    feat = {"weights": torch.zeros(featurizer)} if featurizer else {}
    torch.save({"Step": step, "Featurizer": feat, "Downstream": {}}, path)


def make_old_runs(root: Path) -> list:
    """Old-format run directories covering what the old collector read (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = []
    # PT on KS, train only: test at the best dev step, featurizer weights, two training sessions (resumed)
    info = {"task": "ks", "method": "pt", "ulm": "/x/ulm_tiny", "k": 20, "trainable_params": 1234,
            "stored_params": 1234, "checkpoint_bytes": 9876, "seed": 7}
    pt = _runner_dir(root / "ks_pt", "step 50: dev accuracy: 0.5; unfinished: 0; loss: 1\n"
                     "step 50: test accuracy: 0.525; unfinished: 1; loss: 1\n"
                     "step 100: dev accuracy: 0.45; unfinished: 0; loss: 1\n"
                     "step 100: test accuracy: 0.6; unfinished: 0; loss: 1\n", info,
                     mode_args=[("train", {}), ("train", {})], downstream="speechprompt_ks", task="ks",
                     expert={"ulm": "/x/ulm_tiny", "km": None, "cache_dir": "/x/cache"}, layer=3, seed=7)
    _runner_ckpt(pt / "dev-best.ckpt", 50, featurizer=13)
    _runner_ckpt(pt / "states-100.ckpt", 100, featurizer=13)
    _ks_predictions(pt / "predictions" / "test-step50.jsonl", 21, step=50, mode="train", seed=7)
    _ks_predictions(pt / "test_predictions.jsonl", 24, step=100, mode="train", seed=7)
    t0, t1 = _tag_time(0), _tag_time(1)
    _events(pt / "events.out.tfevents.1.host", [(t0 + 5, 0, {}), (t0 + 20, 50, {"speechprompt_ks/dev-accuracy": 0.5}),
                                                (t0 + 31, 60, {"speechprompt_ks/train-loss": 1.0})])
    _events(pt / "events.out.tfevents.2.host", [(t1 + 2, 60, {}), (t1 + 40, 100, {"speechprompt_ks/dev-loss": 1.0})])
    dirs.append(pt)

    # SUPERB linear on KS with -m evaluate -e dev-best.ckpt (the step read from the checkpoint)
    info = {"task": "ks", "method": "linear", "head": "linear", "upstream": "fbank", "trainable_params": 64780,
            "checkpoint_bytes": 260000, "seed": 1337}
    lin = root / "ks_linear"
    lin = _runner_dir(lin, "step 30: dev accuracy: 0.4; loss: 2\nstep 60: dev accuracy: 0.55; loss: 2\n"
                      "step 0: test accuracy: 0.575; loss: 2\n", info, downstream="speechprompt_ks_linear", task="ks",
                      mode_args=[("train", {}), ("evaluate", {"init_ckpt": str(lin / "dev-best.ckpt")})],
                      total_steps=60)
    _runner_ckpt(lin / "dev-best.ckpt", 60)
    _runner_ckpt(lin / "states-60.ckpt", 60)
    _ks_predictions(lin / "test_predictions.jsonl", 23, step=0, mode="evaluate", seed=1337)
    _events(lin / "events.out.tfevents.1.host", [(_tag_time(0) + 3, 0, {}), (_tag_time(0) + 9, 60, {})])
    dirs.append(lin)

    # FT-LM on KS whose log.log was lost: metrics from the tensorboard scalars
    info = {"task": "ks", "method": "ftlm", "ulm": "/x/ulm_tiny", "k": 20, "trainable_params": 50000,
            "checkpoint_bytes": 200000}
    ft = _runner_dir(root / "ks_ftlm", "", info, downstream="speechprompt_ks_ftlm", task="ks",
                     expert={"ulm": "/x/ulm_tiny", "km": "/x/km.bin", "method": "ftlm"}, total_steps=40)
    _runner_ckpt(ft / "dev-best.ckpt", 40)
    t0 = _tag_time(0)
    _events(ft / "events.out.tfevents.1.host", [
        (t0 + 1, 0, {}), (t0 + 4, 20, {"speechprompt_ks/dev-accuracy": 0.3, "speechprompt_ks/test-accuracy": 0.35}),
        (t0 + 8, 40, {"speechprompt_ks/dev-accuracy": 0.6, "speechprompt_ks/test-accuracy": 0.625,
                      "speechprompt_ks/dev-loss": 0.5, "speechprompt_ks/train-accuracy": 0.9})])
    dirs.append(ft)

    # partial results (IC linear), as test_baselines_report's
    info = {"task": "ic", "method": "linear", "trainable_params": 1000, "checkpoint_bytes": 5000}
    dirs.append(_runner_dir(root / "no_test", "step 50: dev accuracy: 0.5; loss: 1\n", info))
    dirs.append(_runner_dir(root / "no_dev", "step 50: test accuracy: 0.25; loss: 1\n", info))
    dirs.append(_runner_dir(root / "crashed"))
    dirs.append(_runner_dir(
        root / "evaluated", "step 50: dev accuracy: 0.5; loss: 1\nstep 50: test accuracy: 0.4; loss: 1\n"
        "step 100: dev accuracy: 0.75; loss: 1\nstep 100: test accuracy: 0.6; loss: 1\n"
        "step 0: test accuracy: 0.625; loss: 1\n", info,
        mode_args=[("train", {}), ("evaluate", {"init_ckpt": "somewhere/dev-best.ckpt"})]))
    dirs.append(_runner_dir(root / "best_missing_test", "step 50: dev accuracy: 0.75; loss: 1\n"
                            "step 100: dev accuracy: 0.5; loss: 1\nstep 100: test accuracy: 0.6; loss: 1\n", info))

    # speechprompt train + evaluate (PT), and a BLSTM trained but never evaluated
    for name, method, evaluated in (("engine_pt", "pt", True), ("engine_blstm", "blstm", False)):
        exp = root / name
        exp.mkdir()
        config = {"format": "s3prl-speechprompt-engine/1", "task": "ks", "method": method,
                  "train": "/x/speechprompt-hubert100/ks/train.txt", "trainable_params": 777,
                  "train_config": {"seed": 3, "method": method, "lr": None, "max_updates": 500, "threads": 1}}
        if method != "blstm":
            config.update(ulm="/x/ulm_small", ulm_sha256="ab" * 32, ulm_arch="ulm_small", ulm_width=256,
                          ulm_layers=4, stored_params=777)
        (exp / "config.json").write_text(json.dumps(config))
        (exp / ("model.pt" if method == "blstm" else "prompt.pt")).write_bytes(b"0" * 321)
        torch.save({"progress": {"updates": 480, "seconds": 12.5, "cpu_seconds": 20.0, "best_update": 400}},
                   exp / "checkpoint_last.pt")
        if evaluated:
            _ks_predictions(exp / "test_predictions.jsonl", 30, mode="evaluate", seed=3)
            (exp / "test_scores.json").write_text(json.dumps({"accuracy": 0.75, "n": 40, "seed": 3}))
        dirs.append(exp)
    # an engine run evaluated before the .jsonl predictions existed (predict/truth pair, no scores file)
    old = root / "engine_legacy"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({
        "format": "s3prl-speechprompt-engine/1", "task": "ic", "method": "pt", "ulm": "/x/ulm", "ulm_arch": "a",
        "ulm_width": 8, "ulm_layers": 1, "train": "/x/train.txt", "trainable_params": 100,
        "train_config": {"seed": 0}}))
    truth = ["action:on object:lights location:kitchen"] * 30 + ["action:off object:music location:none"] * 20
    pred = truth[:40] + ["action:on <unk> location:none"] * 10
    (old / "test_truth.txt").write_text("".join(f"test-{i + 1}\t{t}\n" for i, t in enumerate(truth)))
    (old / "test_predict.txt").write_text("".join(f"test-{i + 1}\t{p}\n" for i, p in enumerate(pred)))
    dirs.append(old)
    return dirs


def report_rows(dirs, root: Path) -> list:
    """The run rows ``build_report`` gives for ``dirs`` (with intervals), as dicts, ``root`` written ``<ROOT>``."""
    from dataclasses import asdict

    from s3prl_speechprompt import report
    rows = report.build_report(dirs, references="none")
    return json.loads(json.dumps([asdict(r) for r in rows]).replace(str(root), "<ROOT>"))


def _cli(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", *map(str, args)], capture_output=True,
                         text=True, env=runner_env())
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _comparable(rows: list) -> list:
    """Rows with their notes as a set (the converter lists what it could not read before the report's notes)."""
    return [{**r, "notes": sorted(r["notes"])} for r in rows]


def test_an_old_run_directory_gets_one_line_naming_the_converter(tmp_path):
    dirs = make_old_runs(tmp_path / "old")
    pt, engine = tmp_path / "old" / "ks_pt", tmp_path / "old" / "engine_pt"
    out = _cli("report", pt, engine, check=False)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechprompt report: error: ")
    assert f"`speechprompt upgrade-run {pt} {engine}`" in lines[0]
    out = _cli("report", tmp_path / "old", check=False)            # a folder of them: every old one is named
    assert out.returncode == 2 and all(str(d) in out.stderr for d in dirs if d.name != "crashed")
    # the runner expert refuses to append to one too (-m evaluate / -a on an old run)
    from s3prl_speechprompt.record import OldRunError
    from s3prl_speechprompt.s3prl_plugin.records import RunRecorder
    with pytest.raises(OldRunError, match=f"speechprompt upgrade-run {pt}"):
        RunRecorder(pt, None, "ks", {}, {"mode": "evaluate"}, "t", "p", sizes=dict)


def test_converted_old_runs_report_what_the_old_collector_reported(tmp_path):
    root = tmp_path / "old"
    dirs = make_old_runs(root)
    out = _cli("upgrade-run", root)
    assert out.stdout.count("run.json: written") == len(dirs)
    assert "kept" in _cli("upgrade-run", dirs[0]).stdout                  # once: run.json is not rewritten
    pinned = json.loads(PIN.read_text())
    converted = report_rows(dirs, root)
    got = json.loads(json.dumps(converted))
    legacy = [i for i, r in enumerate(pinned) if r["expdir"].endswith("engine_legacy")]
    for i in legacy:       # recomputed by the converter now, said in a note, instead of by every report
        assert got[i]["test_from"] == "speechprompt evaluate (test, best dev-loss state)"
        assert got[i]["notes"] == ["test metrics recomputed from test_predict.txt by speechprompt upgrade-run"]
        got[i]["test_from"], got[i]["notes"] = pinned[i]["test_from"], pinned[i]["notes"]
    assert _comparable(got) == _comparable(pinned)
    # the converted dirs need none of the old files: the same rows from run.json + predictions alone
    for d in dirs:
        for p in d.iterdir():
            if p.name not in ("run.json", "predictions") and not p.name.endswith(("_predictions.jsonl",
                                                                                  "_predict.txt", "_truth.txt")):
                p.unlink()
    assert report_rows(dirs, root) == converted


# ------------------------------------------------------------------------------------------------
# the record
# ------------------------------------------------------------------------------------------------

def test_record_roundtrip_format_and_the_test_evaluation_it_reports(tmp_path):
    from s3prl_speechprompt.errors import CheckpointError
    from s3prl_speechprompt.record import FORMAT, Evaluation, RunRecord

    rec = RunRecord(front_end="runner", task="ks", method="pt", seed=1, best={"split": "dev", "step": 20})
    for step in (10, 20, 30):
        rec.add(Evaluation("dev", step, "train", {"accuracy": step / 100}))
        rec.add(Evaluation("test", step, "train", {"accuracy": step / 50}, predictions="test_predictions.jsonl"))
    assert [e.predictions for e in rec.evaluations if e.split == "test"] == [None, None, "test_predictions.jsonl"]
    assert rec.test_evaluation()[0].step == 20 and rec.test_evaluation()[1] == "best"
    rec.add(Evaluation("test", 30, "train", {"accuracy": 0.7}))                   # re-evaluated after a resume
    assert len(rec.evaluations) == 6 and rec.latest("test").metrics == {"accuracy": 0.7}
    rec.best = None
    assert rec.test_evaluation() == (rec.latest("test"), "last")
    rec.add(Evaluation("test", 20, "evaluate", {"accuracy": 0.5}, checkpoint="dev-best.ckpt"))
    assert rec.test_evaluation() == (rec.latest("test"), "evaluate")
    rec.save(tmp_path)
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["format"] == FORMAT and data["evaluations"][-1]["checkpoint"] == "dev-best.ckpt"
    assert RunRecord.load(tmp_path) == rec
    (tmp_path / "run.json").write_text(json.dumps({**data, "format": "s3prl-speechprompt-run/9"}))
    with pytest.raises(CheckpointError, match="expected 's3prl-speechprompt-run/1'"):
        RunRecord.load(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": FORMAT, "task": "ks"}))
    with pytest.raises(CheckpointError, match="run.json: not a run record"):
        RunRecord.load(tmp_path)
    with pytest.raises(CheckpointError, match="not a run directory"):
        RunRecord.load(tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------------
# real runs: s3prl's runner and speechprompt train / evaluate on the same test utterances
# ------------------------------------------------------------------------------------------------

N_UNITS = 20
RUNNER = [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream"]


def _run(cmd):
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=runner_env(), timeout=600)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    return out.stdout


@pytest.fixture(scope="module")
def runner_and_engine_runs(tmp_path_factory):
    """A runner PT run (train with dev + test evaluations, then -m evaluate -e dev-best.ckpt) and an engine PT run
    (speechprompt train + evaluate on unit files of the same corpus, same utterance ids), on one random tiny LM."""
    from s3prl_speechprompt import compat
    compat.apply()
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.synth import make_ks
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import prepare_units, to_units

    root = tmp_path_factory.mktemp("runs")
    make_ks(root / "corpus", seed=0, per_class=6, progress=False)
    datarc = ks_datarc(root / "corpus")
    save_random_ulm(root / "ulm", N_UNITS)
    fbank = {"upstream": "fbank", "upstream_feature_selection": "hidden_states", "device": "cpu"}
    task, featurize = get_task("ks")(**datarc), runner_featurizer(fbank)
    quantizer, _ = prepare_units(task.read_split("train"), featurize, read_item_audio, key_parts=upstream_key(fbank),
                                 n_clusters=N_UNITS, seed=0, cache_dir=root / "cache")
    quantizer.save(root / "kmeans.pt")
    for split in ("train", "dev", "test"):
        write_unit_manifest(root / f"{split}.tsv", [
            UnitRecord(it.id, tuple(to_units(quantizer, featurize(read_item_audio(it)))), it.labels)
            for it in task.read_split(split)])

    from importlib import resources
    configs = resources.files("s3prl_speechprompt.downstream_configs")
    cfg = yaml.safe_load((configs / "speechprompt_ks.yaml").read_text())
    cfg["runner"].update(total_steps=8, log_step=4, eval_step=4, save_step=4, eval_dataloaders=["dev", "test"])
    de = cfg["downstream_expert"]
    de.update(ulm=str(root / "ulm"), km=str(root / "kmeans.pt"), n_clusters=N_UNITS, cache_dir=str(root / "cache"),
              prompt={"prompt_length": 2})
    de["datarc"].update(datarc, batch_size=16, eval_batch_size=64, num_workers=0)
    (root / "pt.yaml").write_text(yaml.safe_dump(cfg))
    runner = root / "runner_pt"
    _run(RUNNER + ["-m", "train", "-u", "fbank", "-d", "speechprompt_ks", "-c", root / "pt.yaml", "-p", runner,
                   "--device", "cpu"])
    _run(RUNNER + ["-m", "evaluate", "-t", "test", "-e", runner / "dev-best.ckpt", "--device", "cpu"])
    engine = root / "engine_pt"
    cli = [sys.executable, "-m", "s3prl_speechprompt"]
    _run(cli + ["train", "--task", "ks", "--train", root / "train.tsv", "--valid", root / "dev.tsv", "--ulm",
                root / "ulm", "--method", "pt", "--max-updates", "6", "--threads", "1", "--out", engine])
    _run(cli + ["evaluate", "--exp", engine, "--split", "test", root / "test.tsv", "--threads", "1"])
    return {"runner": runner, "engine": engine}


@pytest.mark.slow
def test_report_reads_only_run_json_and_predictions(runner_and_engine_runs, tmp_path):
    import shutil

    runs = {k: shutil.copytree(v, tmp_path / v.name) for k, v in runner_and_engine_runs.items()}
    args = ["report", runs["runner"], runs["engine"], "--compare", "--references", "none"]
    before = _cli(*args)
    assert "### Paired comparisons" in before.stdout and "runner_pt vs engine_pt (acc): " in before.stdout
    rec = json.loads((runs["runner"] / "run.json").read_text())
    assert rec["front_end"] == "runner" and rec["method"] == "pt" and rec["upstream"]["name"] == "fbank"
    assert [(e["split"], e["step"], e["mode"]) for e in rec["evaluations"]] == [
        ("dev", 4, "train"), ("test", 4, "train"), ("dev", 8, "train"), ("test", 8, "train"),
        ("test", rec["best"]["step"], "evaluate")]
    assert rec["steps_done"] == rec["total_steps"] == 8 and 0 < rec["train_loop_s"] < rec["wall_s"]
    assert rec["evaluations"][-1]["predictions"] == "test_predictions.jsonl"
    assert f"-m evaluate -e dev-best.ckpt (step {rec['best']['step']})" in before.stdout
    eng = json.loads((runs["engine"] / "run.json").read_text())
    assert eng["front_end"] == "engine" and eng["steps_done"] == 6 and eng["upstream"] is None
    assert [(e["split"], e["mode"], e["checkpoint"]) for e in eng["evaluations"]] == [("test", "evaluate", "prompt.pt")]
    assert "speechprompt evaluate (test, best dev-loss state)" in before.stdout

    # the converter, on the same directories without their run.json, reports what the writers recorded
    from dataclasses import asdict
    from s3prl_speechprompt import report
    old = {k: shutil.copytree(v, tmp_path / "old" / v.name) for k, v in runs.items()}
    for d in old.values():
        (d / "run.json").unlink()
    assert _cli("upgrade-run", *old.values()).stdout.count("written") == 2
    timing = ("wall_s", "train_loop_s", "expdir", "predictions")
    rows = [report.build_report([d], references="none")[0] for d in (*runs.values(), *old.values())]
    rows = [{k: v for k, v in asdict(r).items() if k not in timing} for r in rows]
    assert [{k: (a[k], b[k]) for k in a if a[k] != b[k]} for a, b in zip(rows[:2], rows[2:])] == [{}, {}]

    kept = ("run.json", "predictions")
    for d in runs.values():                 # log.log, tensorboard events, args / config yaml, checkpoints, ...
        for p in d.iterdir():
            if p.name not in kept and not p.name.endswith("_predictions.jsonl"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert not list(runs["runner"].glob("log.log")) and not list(runs["runner"].glob("events.out.tfevents*"))
    after = _cli(*args)
    assert after.stdout == before.stdout and after.stderr == before.stderr


@pytest.mark.slow
def test_evaluate_on_an_engine_run_from_before_run_json_records_its_earlier_scores(runner_and_engine_runs, tmp_path):
    import shutil
    from s3prl_speechprompt.record import RunRecord

    exp = shutil.copytree(runner_and_engine_runs["engine"], tmp_path / "engine_old")
    (exp / "run.json").unlink()
    (exp / "dev_scores.json").write_text(json.dumps({"accuracy": 0.25, "n": 12, "split": "dev", "unfinished": 0}))
    units = runner_and_engine_runs["engine"].parent / "test.tsv"
    _run([sys.executable, "-m", "s3prl_speechprompt", "evaluate", "--exp", exp, "--split", "test", units,
          "--threads", "1"])
    rec = RunRecord.load(exp)
    assert [(e.split, e.mode) for e in rec.evaluations] == [("dev", "evaluate"), ("test", "evaluate")]
    assert rec.latest("dev").metrics == {"accuracy": 0.25, "unfinished": 0} and rec.steps_done == 6
    assert rec.latest("test").metrics == RunRecord.load(runner_and_engine_runs["engine"]).latest("test").metrics


if __name__ == "__main__" and sys.argv[1:] == ["--write-pin"]:
    # run once with the old collector (commit f275468, before run.json): python tests/test_run_record.py --write-pin
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "old"
        PIN.write_text(json.dumps(report_rows(make_old_runs(root), root), indent=1) + "\n")
    print(f"wrote {PIN}")
