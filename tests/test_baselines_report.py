"""SUPERB baseline heads (``-d speechprompt_<task>_linear|_lstm``) and ``speechprompt report``.

* parameter counts of the heads against SUPERB's (by instantiation) and the report's closed form;
* the heads' forward/loss/decoding in process, with toy tasks (incl. the ``ctc_vocabulary()`` hook);
* end to end: tiny PT, FT-LM and linear KS runs through s3prl's real runner (``-u fbank``, synthetic
  corpus, a random tiny unit LM), then the report lists all three with what the runs logged;
* the report on partial / hand-made experiment directories (old format, converted by ``speechprompt upgrade-run``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ks_datarc, run_runner, runner_env, save_random_ulm
from s3prl_speechprompt import report
from s3prl_speechprompt import compat
from s3prl_speechprompt.tasks.base import Item, Task

N_UNITS = 20


def _params(modules) -> int:
    return sum(p.numel() for m in modules.values() for p in m.parameters())


# ------------------------------------------------------------------------------------------------
# parameter counts
# ------------------------------------------------------------------------------------------------

def test_superb_head_parameter_counts():
    compat.apply()
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import build_head

    assert _params(build_head("linear", 768, 12)) == 199_948            # SUPERB KS
    assert _params(build_head("linear", 768, 24)) == 203_032            # SUPERB IC (6 + 14 + 4)
    asr = _params(build_head("lstm", 768, 32, upstream_rate=320))       # SUPERB ASR (fairseq char dict)
    assert asr == 42_828_832 and round(asr / 1e6, 2) == 42.83
    for kind, dim, out in (("linear", 240, 12), ("linear", 256, 24), ("lstm", 240, 32), ("lstm", 64, 7)):
        assert report.superb_head_params(kind, dim, out) == _params(build_head(kind, dim, out)), (kind, dim, out)


# ------------------------------------------------------------------------------------------------
# heads in process, on toy tasks
# ------------------------------------------------------------------------------------------------

class _Logger:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, global_step=0):
        self.scalars[tag] = value


class ToySlots(Task):
    """Three label positions like IC; the training split lacks ``c:9`` (seen only in dev)."""

    name = "toy_slots"

    def read_split(self, split):
        labels = [("a:x", "b:1", "c:none"), ("a:y", "b:2", "c:none"), ("a:x", "b:3", "c:7")]
        if split != "train":
            labels = labels + [("a:y", "b:1", "c:9")]
        return [Item(f"{split}{i}", self.wav, y) for i, y in enumerate(labels)]


class ToyChars(Task):
    """A sequence task exposing the CTC hook: blank first, then the label symbols."""

    name = "toy_chars"
    metrics = ("char_acc",)
    primary_metric = "char_acc"

    def ctc_vocabulary(self):
        return ["<blank>", "A", "B", "C", "|"]

    def read_split(self, split):
        return [Item(f"{split}0", self.wav, ("A", "B", "|", "C")), Item(f"{split}1", self.wav, ("C", "A"))]

    def score(self, hyps, refs):
        return {"char_acc": sum(list(h) == list(r) for h, r in zip(hyps, refs)) / len(refs)}


@pytest.fixture
def toy_tasks(monkeypatch, tmp_path):
    import numpy as np
    import soundfile as sf

    from s3prl_speechprompt.tasks import base

    wav = tmp_path / "tone.wav"          # the experts check every item's audio when they read a split
    sf.write(wav, np.sin(np.arange(1600) / 5.0).astype(np.float32), 16000)
    for cls in (ToySlots, ToyChars):
        monkeypatch.setattr(cls, "wav", str(wav), raising=False)

    monkeypatch.setitem(base.TASKS, ToySlots.name, ToySlots)
    monkeypatch.setitem(base.TASKS, ToyChars.name, ToyChars)


def test_linear_head_slices_and_unseen_labels(toy_tasks, tmp_path):
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import DownstreamExpert

    torch.manual_seed(0)
    expert = DownstreamExpert(upstream_dim=8, downstream_expert={"task": ToySlots.name}, expdir=str(tmp_path),
                              downstream="speechprompt_toy_slots_linear")
    assert expert.kind == "linear"
    assert expert.classes == [["a:x", "a:y"], ["b:1", "b:2", "b:3"], ["c:7", "c:none"]]   # from train, sorted
    assert expert.num_trainable() == report.superb_head_params("linear", 8, 7)
    items = expert.task.read_split("dev")
    feats = [torch.randn(5 + i, 8) for i in range(len(items))]
    records = __import__("collections").defaultdict(list)
    loss = expert("dev", feats, [it.labels for it in items], [it.id for it in items], records=records)
    loss.backward()
    assert torch.isfinite(loss) and expert.projector.weight.grad is not None
    assert all(len(h) == 3 for h in records["hyp"])
    assert records["hyp"][3][2] != "c:9"            # unseen in training: never predicted, counted wrong
    names = expert.log_records("dev", records, _Logger(), global_step=7)
    assert names == ["dev-best.ckpt"]
    assert (tmp_path / "log.log").read_text().startswith("step 7: dev accuracy: ")
    from s3prl_speechprompt.record import RunRecord
    recorded = RunRecord.load(tmp_path)
    assert recorded.latest("dev").step == 7 and recorded.best == {"split": "dev", "step": 7, "metric": "accuracy"}
    assert recorded.method == "linear" and recorded.trainable_params == expert.num_trainable()
    info = json.loads((tmp_path / "speechprompt_info.json").read_text())
    assert info["method"] == "linear" and info["trainable_params"] == expert.num_trainable()
    assert info["classes"] == [2, 3, 2] and info["checkpoint_bytes"] > 4 * info["trainable_params"]
    # the class sets travel in the checkpoint; a different head refuses to load it
    state = expert.state_dict()
    assert state["_extra_state"]["classes"] == expert.classes
    other = DownstreamExpert(upstream_dim=8, downstream_expert={"task": ToySlots.name}, expdir=str(tmp_path))
    other.load_state_dict(state)
    state["_extra_state"] = {**state["_extra_state"], "classes": [["a:x"], ["b:1", "b:2", "b:3"], ["c:7", "c:none"]]}
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(state)


def test_ctc_head_uses_the_task_vocabulary_hook(toy_tasks, tmp_path):
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import DownstreamExpert

    torch.manual_seed(0)
    small = {"project_dim": 16, "RNNs": {"dim": [8, 8]}}
    expert = DownstreamExpert(upstream_dim=6, downstream_expert={"task": ToyChars.name, "modelrc": small},
                              expdir=str(tmp_path), upstream_rate=160)
    assert expert.kind == "lstm" and expert.vocab[0] == "<blank>"
    assert expert.model.linear.out_features == 5
    items = expert.task.read_split("train")
    feats = [torch.randn(12, 6), torch.randn(9, 6)]
    records = __import__("collections").defaultdict(list)
    opt = torch.optim.Adam(expert.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        records.clear()
        loss = expert("train", feats, [it.labels for it in items], [it.id for it in items], records=records)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert all(isinstance(h, tuple) and "<blank>" not in h for h in records["hyp"])
    expert.log_records("dev", records, _Logger(), global_step=3)
    assert (tmp_path / "dev_predict.txt").is_file() and "dev char_acc" in (tmp_path / "log.log").read_text()
    with pytest.raises(ValueError, match="ctc_vocabulary"):
        expert("train", feats[:1], [("A", "Z")], ["x"], records=records)


def test_lstm_head_requires_the_hook(toy_tasks, tmp_path):
    from s3prl_speechprompt.s3prl_plugin.baseline_expert import DownstreamExpert

    with pytest.raises(ValueError, match="ctc_vocabulary"):
        DownstreamExpert(upstream_dim=6, downstream_expert={"task": ToySlots.name, "head": "lstm"},
                         expdir=str(tmp_path))


# ------------------------------------------------------------------------------------------------
# end to end through s3prl's runner
# ------------------------------------------------------------------------------------------------

def _config(name: str, datarc: dict, steps: int, **expert) -> dict:
    from importlib import resources
    cfg = yaml.safe_load((resources.files("s3prl_speechprompt.downstream_configs") / f"{name}.yaml").read_text())
    cfg["runner"].update(total_steps=steps, log_step=steps // 2, eval_step=steps // 2, save_step=steps // 2,
                         eval_dataloaders=["dev", "test"])
    if "scheduler" in cfg:
        cfg["scheduler"]["num_warmup_steps"] = 2
    de = cfg["downstream_expert"]
    de.update(expert)
    de["datarc"].update(datarc, batch_size=16, eval_batch_size=64, num_workers=0)
    return cfg


@pytest.fixture(scope="module")
def ks_runs(tmp_path_factory):
    """Tiny PT, FT-LM and linear KS runs (train with dev+test evaluation; linear also -m evaluate -e)."""
    compat.apply()
    from s3prl_speechprompt.synth import make_ks

    root = tmp_path_factory.mktemp("ks_report")
    make_ks(root / "corpus", seed=0, per_class=6, progress=False)
    datarc = ks_datarc(root / "corpus")
    save_random_ulm(root / "ulm", N_UNITS)
    lm = {"ulm": str(root / "ulm"), "km": None, "n_clusters": N_UNITS}
    runs = {
        "pt": ("speechprompt_ks", _config("speechprompt_ks", datarc, 8, prompt={"prompt_length": 2},
                                          cache_dir=str(root / "cache_pt"), **lm)),
        "ftlm": ("speechprompt_ks_ftlm", _config("speechprompt_ks_ftlm", datarc, 8,
                                                 cache_dir=str(root / "cache_ftlm"), **lm)),
        "linear": ("speechprompt_ks_linear", _config("speechprompt_ks_linear", datarc, 20)),
    }
    out = {"root": root}

    def train(key):
        name, cfg = runs[key]
        path = root / f"{key}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out[key] = {"exp": root / f"exp_{key}", "steps": cfg["runner"]["total_steps"]}
        t0 = time.time()
        run_runner("-m", "train", "-u", "fbank", "-d", name, "-c", path, "-p", out[key]["exp"], "--device", "cpu",
                   timeout=240)
        out[key]["seconds"] = time.time() - t0

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:     # independent runs: all three at once
        list(pool.map(train, runs))
    run_runner("-m", "evaluate", "-t", "test", "-e", out["linear"]["exp"] / "dev-best.ckpt", "--device", "cpu",
               timeout=240)
    return out


def _logged(expdir: Path, split: str, step: int) -> dict:
    """The metrics the expert wrote to log.log for ``split`` at ``step`` (the last such line)."""
    found = {}
    for line in (expdir / "log.log").read_text().splitlines():
        head, _, rest = line.partition(": ")
        if head != f"step {step}":
            continue
        for part in rest.split("; "):
            key, _, value = part.rpartition(": ")
            if key.startswith(f"{split} "):
                found[key[len(split) + 1:]] = float(value)
    return found


@pytest.mark.slow
def test_report_lists_pt_ftlm_and_linear_runs(ks_runs):
    dirs = [ks_runs[k]["exp"] for k in ("pt", "ftlm", "linear")]
    rows = report.build_report(dirs)
    runs = {Path(r.expdir).name: r for r in rows if r.source == "run"}
    assert set(runs) == {"exp_pt", "exp_ftlm", "exp_linear"}
    methods = {name: r.method for name, r in runs.items()}
    assert methods == {"exp_pt": "PT (SpeechPrompt)", "exp_ftlm": "FT-LM", "exp_linear": "SUPERB linear"}

    for key in ("pt", "ftlm", "linear"):
        exp, row = ks_runs[key]["exp"], runs[f"exp_{key}"]
        info = json.loads((exp / "speechprompt_info.json").read_text())
        assert row.task == "ks" and row.notes == [], row.notes
        assert row.trainable_params == info["trainable_params"] and row.bytes_per_task == info["checkpoint_bytes"]
        assert row.steps == row.total_steps == ks_runs[key]["steps"]
        assert row.upstream.startswith("fbank")
        assert 0 < row.wall_s <= ks_runs[key]["seconds"] and 0 < row.train_loop_s <= row.wall_s
        assert set(row.metrics) == {"accuracy"}
        best_step = torch.load(exp / "dev-best.ckpt", map_location="cpu", weights_only=False)["Step"]
        if key == "linear":      # -m evaluate -e dev-best.ckpt logged at step 0
            assert row.test_from == f"-m evaluate -e dev-best.ckpt (step {best_step:,})"
            expected = _logged(exp, "test", 0)
        else:
            assert row.test_from == f"best dev (step {best_step:,})"
            expected = _logged(exp, "test", best_step)
        assert row.metrics["accuracy"] == pytest.approx(100 * expected["accuracy"])
        if key in ("pt", "ftlm"):
            assert f"{N_UNITS} units (k-means fit on train)" in row.upstream and "uLM ulm" in row.upstream

    # SUPERB's linear head on fbank (D=240) with the 12 KS classes; PT stores far less than FT-LM
    assert runs["exp_linear"].trainable_params == report.superb_head_params("linear", 240, 12) == 64_780
    assert runs["exp_pt"].trainable_params < runs["exp_linear"].trainable_params < runs["exp_ftlm"].trainable_params
    assert runs["exp_pt"].bytes_per_task < runs["exp_ftlm"].bytes_per_task

    published = [r for r in rows if r.source != "run"]
    assert published and {r.task for r in published} == {"ks"}
    assert any(r.source == "paper" and r.metrics == {"accuracy": 95.16} for r in published)
    assert any(r.source == "SUPERB" and r.upstream.startswith("HuBERT Base") and r.trainable_params == 199_948
               for r in published)

    md = report.render(rows, "md")
    for needle in ("PT (SpeechPrompt)", "FT-LM", "SUPERB linear", "64,780", "acc 96.30", "**paper**", "**SUPERB**"):
        assert needle in md
    parsed = json.loads(report.render(rows, "json"))
    assert len(parsed) == len(rows)
    csv_lines = report.render(rows, "csv").splitlines()
    assert csv_lines[0].startswith("source,task,method") and len(csv_lines) == len(rows) + 1


@pytest.mark.slow
def test_report_command_line(ks_runs, tmp_path):
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "report", str(ks_runs["linear"]["exp"]),
                          "--format", "csv", "--references", "none"], capture_output=True, text=True, env=runner_env())
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and ",ks,SUPERB linear," in lines[1] and ",64780," in lines[1]


# ------------------------------------------------------------------------------------------------
# partial results
# ------------------------------------------------------------------------------------------------

def _fake_run(expdir: Path, log: str = "", info: dict = None, mode_args=(), downstream="speechprompt_ic_linear"):
    expdir.mkdir(parents=True)
    for i, (mode, extra) in enumerate(mode_args or [("train", {})]):
        args = {"mode": mode, "downstream": downstream, "upstream": "fbank", "upstream_layer_selection": None,
                "evaluate_split": "test", "init_ckpt": None, **extra}
        (expdir / f"args_2026-01-01-00-00-0{i}.yaml").write_text(yaml.safe_dump(args))
    (expdir / "config_2026-01-01-00-00-00.yaml").write_text(yaml.safe_dump(
        {"runner": {"total_steps": 100}, "downstream_expert": {"task": "ic", "head": "linear"}}))
    if log:
        (expdir / "log.log").write_text(log)
    if info is not None:
        (expdir / "speechprompt_info.json").write_text(json.dumps(info))
    return expdir


def test_report_on_partial_results(tmp_path):
    info = {"task": "ic", "method": "linear", "trainable_params": 1000, "checkpoint_bytes": 5000}
    no_test = _fake_run(tmp_path / "no_test", "step 50: dev accuracy: 0.5; loss: 1\n", info)
    no_dev = _fake_run(tmp_path / "no_dev", "step 50: test accuracy: 0.25; loss: 1\n", info)
    crashed = _fake_run(tmp_path / "crashed")                         # died before any log
    evaluated = _fake_run(
        tmp_path / "evaluated",
        "step 50: dev accuracy: 0.5; loss: 1\nstep 50: test accuracy: 0.4; loss: 1\n"
        "step 100: dev accuracy: 0.75; loss: 1\nstep 100: test accuracy: 0.6; loss: 1\n"
        "step 0: test accuracy: 0.625; loss: 1\n", info,
        mode_args=[("train", {}), ("evaluate", {"init_ckpt": "somewhere/dev-best.ckpt"})])
    best_missing_test = _fake_run(
        tmp_path / "best_missing_test",
        "step 50: dev accuracy: 0.75; loss: 1\nstep 100: dev accuracy: 0.5; loss: 1\n"
        "step 100: test accuracy: 0.6; loss: 1\n", info)

    from s3prl_speechprompt.report.upgrade import upgrade_run
    for old in (no_test, no_dev, crashed, evaluated, best_missing_test):     # runs from before run.json
        upgrade_run(old)
    rows = report.build_report([no_test, no_dev, crashed, evaluated, best_missing_test, tmp_path / "absent"],
                               references="none")
    by = {Path(r.expdir).name: r for r in rows}
    assert by["no_test"].metrics == {} and by["no_test"].test_from == "missing"
    assert "no test result" in by["no_test"].notes
    assert by["no_dev"].metrics == {"accuracy": 25.0} and "no dev result" in by["no_dev"].notes
    assert by["crashed"].method == "SUPERB linear" and by["crashed"].task == "ic"
    assert by["crashed"].trainable_params is None and any("speechprompt_info.json" in n for n in by["crashed"].notes)
    assert by["evaluated"].metrics == {"accuracy": 62.5}
    assert by["evaluated"].test_from == "-m evaluate -e dev-best.ckpt"
    assert by["evaluated"].steps == 100
    assert by["best_missing_test"].metrics == {"accuracy": 60.0}
    assert by["best_missing_test"].test_from == "last (step 100)"
    assert "test not evaluated at the best dev step" in by["best_missing_test"].notes
    assert by["absent"].notes == ["directory not found"]
    for fmt in ("md", "csv", "json"):
        text = report.render(rows, fmt)
        assert "no_test" in text or fmt == "md"
    md = report.render(rows, "md")
    assert "missing" in md and "directory not found" in md
    # a folder of experiment dirs expands to them
    assert {p.name for p in report.expand_dirs([tmp_path])} == {"no_test", "no_dev", "crashed", "evaluated",
                                                                "best_missing_test"}


# ------------------------------------------------------------------------------------------------
# uncertainty: intervals, paired comparison, plot (on the runner runs above)
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_report_intervals_and_paired_comparison_of_pt_and_ftlm(ks_runs, tmp_path):
    from s3prl_speechprompt.predictions import read_predictions
    from s3prl_speechprompt.report import stats

    pt, ftlm = ks_runs["pt"]["exp"], ks_runs["ftlm"]["exp"]
    for exp in (pt, ftlm):
        # the test predictions of the best-dev step are kept beside the latest ones, with the step in the header
        best_step = torch.load(exp / "dev-best.ckpt", map_location="cpu", weights_only=False)["Step"]
        kept = read_predictions(exp / "predictions" / f"test-step{best_step}.jsonl")
        assert kept.header["step"] == best_step and kept.header["task"] == "ks" and kept.header["seed"] == 1337
        assert kept.ids == sorted(line.split(" ", 1)[0] for line in (exp / "test_truth.txt").read_text().splitlines())
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "report", str(pt), str(ftlm), "--compare",
                          "--plot", str(tmp_path / "ks.png")], capture_output=True, text=True, env=runner_env())
    assert out.returncode == 0, out.stderr[-3000:]
    rows = report.build_report([pt, ftlm], references="tasks")
    runs = {Path(r.expdir).name: r for r in rows if r.source == "run"}
    for name, row in runs.items():
        assert row.notes == [] and row.interval_kind == {"accuracy": "wilson"}, (name, row.notes)
        k = round(row.metrics["accuracy"] * row.n_test / 100)
        lo, hi = (100 * v for v in stats.wilson_interval(k, row.n_test))
        assert row.intervals["accuracy"] == pytest.approx([lo, hi])
        assert f"acc {row.metrics['accuracy']:.2f} [{lo:.2f}, {hi:.2f}]" in out.stdout
    assert "### Paired comparisons" in out.stdout and "exp_pt vs exp_ftlm (acc): " in out.stdout
    assert "exact McNemar" in out.stdout and ("not distinguishable" in out.stdout or "is better" in out.stdout)

    # the plot: a PNG, and every run drawn (the JSON it was drawn from), next to the published rows
    data = json.loads((tmp_path / "ks.json").read_text())
    assert (tmp_path / "ks.png").read_bytes()[:4] == b"\x89PNG"
    assert {p["expdir"] for p in data["points"] if p["source"] == "run"} == {str(pt), str(ftlm)}
    assert data["drawn"]["run"] == 2 and data["drawn"]["paper"] >= 1 and data["drawn"]["SUPERB"] >= 1


@pytest.mark.slow
def test_report_compare_refuses_different_test_sets(ks_runs, tmp_path):
    import shutil
    other = tmp_path / "exp_ftlm_other_test"
    shutil.copytree(ks_runs["ftlm"]["exp"], other)
    for path in [other / "test_predictions.jsonl", *(other / "predictions").glob("test-step*.jsonl")]:
        lines = path.read_text().splitlines()
        renamed = [lines[0]] + [line.replace('{"id": "', '{"id": "other/', 1) for line in lines[1:3]] + lines[3:]
        path.write_text("\n".join(renamed) + "\n")
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "report", str(ks_runs["pt"]["exp"]), str(other),
                          "--compare"], capture_output=True, text=True, env=runner_env())
    assert out.returncode == 2 and out.stdout == ""
    assert "were not scored on the same test utterances: 2 of" in out.stderr and "exp_ftlm_other_test" in out.stderr
