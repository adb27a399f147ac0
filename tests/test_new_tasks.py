"""Tasks added by the one-module rule: csv, er (IEMOCAP), sid (VoxCeleb1), and a task kept outside the package.

Readers are checked on hand-written files and on the synthetic corpora (``speechprompt synth er|csv``);
then csv and er go through s3prl's real runner on CPU (train, then ``-m evaluate -e``), with fbank units
and a tiny unit LM pretrained on them (tests/helpers.py). Then SID (VoxCeleb1) with more speakers than units,
and the SUPERB ``_linear`` baselines of csv and sid.

SID: 12 synthetic speakers (``speechprompt synth sid``: espeak-ng voice/pitch/rate plus a per-speaker vocal-tract
warp and spectral tilt) on 8 fbank k-means units, so the ``multi`` verbalizer gives every speaker a 2-unit code.
The units come from s3prl's ``fbank_no_cmvn`` upstream: per-utterance CMVN (``-u fbank``) subtracts each
utterance's mean log spectrum, i.e. most of what tells the speakers apart.
"""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from helpers import last_metrics, prepare_lm, record_outcome, seed_offset, train_and_evaluate, write_config
from s3prl_speechprompt.s3prl_plugin import registry
from s3prl_speechprompt.tasks import base
from s3prl_speechprompt.tasks.base import get_task


def _wav(path: Path, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


# ---------------------------------------------------------------------------------------------
# readers (unit level)
# ---------------------------------------------------------------------------------------------

def test_csv_task_layouts(tmp_path):
    for i in range(6):
        _wav(tmp_path / "corpus" / "wavs" / f"{i}.wav")
    (tmp_path / "corpus" / "all.csv").write_text(
        "path,label,split,speaker\n"
        "wavs/0.wav,red+circle,train,a\nwavs/1.wav,blue+star,train,b\nwavs/2.wav,red+star,valid,a\n"
        f"{tmp_path}/corpus/wavs/3.wav,blue+circle,test,c\n")
    task = get_task("csv")(csv=str(tmp_path / "corpus" / "all.csv"))
    train = task.read_split("train")
    assert [it.labels for it in train] == [("red+circle",), ("blue+star",)]
    assert train[0].wav_path == str(tmp_path / "corpus" / "wavs" / "0.wav")      # relative to the CSV's folder
    assert task.read_split("dev")[0].labels == ("red+star",)                     # valid -> dev
    assert task.read_split("test")[0].wav_path == str(tmp_path / "corpus" / "wavs" / "3.wav")
    assert task.max_label_tokens == 1

    task = get_task("csv")(csv=str(tmp_path / "corpus" / "all.csv"), label_separator="+")
    assert task.read_split("train")[0].labels == ("red", "circle") and task.max_label_tokens == 2
    task = get_task("csv")(csv=str(tmp_path / "corpus" / "all.csv"), label_separator="+", prefix_slots=True)
    assert task.read_split("train")[0].labels == ("label_1:red", "label_2:circle")

    # one file per split, IC-like label columns, an id column
    (tmp_path / "splits").mkdir()
    for split, rows in (("train", [("u0", "../corpus/wavs/0.wav", "on", "lights", "none")]),
                        ("dev", [("u1", "../corpus/wavs/1.wav", "off", "lamp", "kitchen")]),
                        ("test", [("u2", "../corpus/wavs/2.wav", "on", "none", "none")])):
        (tmp_path / "splits" / f"{split}.csv").write_text(
            "id,path,label_1,label_2,label_3\n" + "".join(",".join(r) + "\n" for r in rows))
    task = get_task("csv")(**{f"{s}_csv": str(tmp_path / "splits" / f"{s}.csv") for s in ("train", "dev", "test")})
    it = task.read_split("test")[0]
    assert (it.id, it.labels, task.max_label_tokens) == ("u2", ("on", "none", "none"), 3)
    assert Path(it.wav_path).resolve() == (tmp_path / "corpus" / "wavs" / "2.wav").resolve()
    assert task.score([("on", "none", "none"), ("on", None, "none")], [("on", "none", "none")] * 2) == {"accuracy": 0.5}


@pytest.mark.parametrize("content, kwargs, message", [
    ("path,label\nwavs/0.wav,a\n", {}, "split"),                             # one file needs a split column
    ("path,split\nwavs/0.wav,train\n", {}, "no label column"),
    ("path,label,split\nwavs/0.wav,a,holdout\n", {}, "holdout"),
    ("path,label,split\nwavs/0.wav,,train\n", {}, "empty label"),
    ("path,label_1,label_3,split\nwavs/0.wav,a,b,train\n", {}, "without gaps"),
])
def test_csv_task_errors(tmp_path, content, kwargs, message):
    (tmp_path / "x.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        get_task("csv")(csv=str(tmp_path / "x.csv"), **kwargs)


def test_csv_task_duplicate_ids_and_missing_split(tmp_path):
    (tmp_path / "x.csv").write_text("path,label,split\na.wav,x,train\na.wav,y,train\n")
    task = get_task("csv")(csv=str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="twice"):
        task.read_split("train")
    with pytest.raises(ValueError, match="no rows"):
        task.read_split("test")
    with pytest.raises(ValueError, match="not both"):
        get_task("csv")(csv=str(tmp_path / "x.csv"), train_csv=str(tmp_path / "x.csv"))


def test_get_task_from_a_module_outside_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "outside_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "two.py").write_text(textwrap.dedent("""
        from s3prl_speechprompt.tasks.base import Task, register_task
        @register_task
        class A(Task):
            name = "outside_a"
        @register_task
        class B(Task):
            name = "outside_b"
    """))
    (tmp_path / "outside_one.py").write_text(textwrap.dedent("""
        from s3prl_speechprompt.tasks.base import Task, register_task
        @register_task
        class One(Task):
            name = "outside_one_task"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert get_task("outside_one").name == "outside_one_task"            # a top-level module
        assert get_task("outside_pkg.two:outside_b").name == "outside_b"
        with pytest.raises(KeyError, match="registers 2 tasks"):
            get_task("outside_pkg.two")
        with pytest.raises(KeyError, match="no module"):
            get_task("outside_pkg.missing")
        # an installed distribution's entry point (group s3prl_speechprompt.tasks)
        monkeypatch.setattr(base, "_entry_point", lambda name: "outside_pkg.two" if name == "ep_task" else None)
        with pytest.raises(KeyError, match="registers 2 tasks"):
            get_task("ep_task")
        monkeypatch.setattr(base, "_entry_point", lambda name: "outside_pkg.two" if name == "outside_a" else None)
        assert get_task("outside_a").name == "outside_a"
        with pytest.raises(KeyError, match="unknown task 'no_such_task_xyz'"):
            get_task("no_such_task_xyz")
    finally:
        for name in ("outside_a", "outside_b", "outside_one_task"):
            base.TASKS.pop(name, None)


def test_config_path_folders_define_downstreams(tmp_path, monkeypatch):
    (tmp_path / "speechprompt_mine.yaml").write_text("downstream_expert: {task: x}\n")
    (tmp_path / "speechprompt_ks.yaml").write_text("# shadowed by the packaged one\n")
    monkeypatch.setenv(registry.ENV_CONFIG_PATH, str(tmp_path))
    assert "speechprompt_mine" in registry.all_downstreams()
    assert registry.default_config_path("speechprompt_mine") == str((tmp_path / "speechprompt_mine.yaml").resolve())
    assert Path(registry.default_config_path("speechprompt_ks")).parent != tmp_path
    assert "speechprompt_mine" not in registry.packaged_downstreams()
    monkeypatch.delenv(registry.ENV_CONFIG_PATH)
    assert registry.default_config_path("speechprompt_mine") is None


def test_new_task_configs_are_packaged():
    names = registry.packaged_downstreams()
    for task in ("csv", "er", "sid"):
        for suffix, expert in (("", registry.PROMPT_EXPERT), ("_ftlm", registry.PROMPT_EXPERT),
                               ("_linear", registry.BASELINE_EXPERT)):
            name = f"speechprompt_{task}{suffix}"
            assert name in names and registry.expert_module_for(name) == expert
            cfg = yaml.safe_load(Path(registry.default_config_path(name)).read_text())
            assert cfg["downstream_expert"]["task"] == task
    assert yaml.safe_load(Path(registry.default_config_path("speechprompt_sid")).read_text())[
        "downstream_expert"]["verbalizer"] == "multi"


# ---------------------------------------------------------------------------------------------
# synthetic corpora through s3prl's parsers
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from s3prl_speechprompt.synth.cls_corpora import make_csv, make_er
    root = tmp_path_factory.mktemp("new_tasks")
    out = {"root": root}
    out["csv"] = make_csv(root / "csv", seed=seed_offset(), per_class=(12, 3, 3), progress=False)
    out["er"] = make_er(root / "er", seed=seed_offset(), per_emotion=6, progress=False)
    return out


def test_er_reader_on_synthetic_iemocap(corpora):
    er_root = corpora["er"]["root"]
    for fold in ("fold1", 3):
        task = get_task("er")(root=er_root, test_fold=fold)
        splits = {s: task.read_split(s) for s in task.splits}
        test_session = f"Ses{int(str(fold)[-1]):02d}"
        assert all(it.id.startswith(test_session) for it in splits["test"])
        assert not any(it.id.startswith(test_session) for it in splits["train"] + splits["dev"])
        assert {it.labels[0] for s in splits.values() for it in s} == {"neu", "hap", "ang", "sad"}  # fru dropped
        n_train = len(splits["train"]) + len(splits["dev"])
        assert len(splits["dev"]) == round(0.2 * n_train)
        assert Counter(it.labels[0] for it in splits["test"]) == {"neu": 12, "hap": 12, "ang": 12, "sad": 12}
    with pytest.raises(ValueError, match="fold1..fold5"):
        get_task("er")(root=er_root, test_fold="fold6")


# ---------------------------------------------------------------------------------------------
# s3prl's runner, train + -m evaluate -e
# ---------------------------------------------------------------------------------------------

TASK_MODULE = """
\"\"\"A throwaway task kept outside the package: the shape word of the CSV corpus's "<colour>+<shape>" labels.\"\"\"
import csv
from pathlib import Path

from s3prl_speechprompt.tasks.base import Item, Task, register_task


@register_task
class ShapeOnly(Task):
    name = "shape_only"
    default_prompt_length = 16

    def __init__(self, csv_file="", **datarc):
        super().__init__(**datarc)
        self.csv_file = Path(csv_file)

    def read_split(self, split):
        self.check_split(split)
        with open(self.csv_file, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == split]
        return [Item(r["path"], str(self.csv_file.parent / r["path"]), (r["label"].split("+")[1],)) for r in rows]
"""

# PT on the tiny LM: SpeechPrompt v2's learnable verbalizer, lr 3e-2, 16 prompts (as the KS test)
PT_FAST = dict(lr=3e-2, verbalizer="learnable", prompt={"prompt_length": 16})


def _pipeline(root, task, datarc, n_clusters, lm_updates=150, upstream="fbank"):
    """Units + tiny pretrained LM for one task (helpers.prepare_lm at ``n_clusters``, on ``upstream``)."""
    root.mkdir(parents=True, exist_ok=True)
    ulm = prepare_lm(task, datarc, root, lm_updates=lm_updates, n_clusters=n_clusters, upstream=upstream)
    return {"root": root, "datarc": datarc, "ulm": ulm, "n_clusters": n_clusters, "upstream": upstream}


def _config(env, name, steps, lr=None, **expert):
    """The packaged config, shrunk; ``km`` = the k-means the LM was pretrained with (no second fit)."""
    path = write_config(env["root"] / f"{name}.yaml", name, env["datarc"], env["ulm"], env["root"] / "cache", steps, lr,
                        n_clusters=env["n_clusters"], **expert)
    cfg = yaml.safe_load(path.read_text())
    cfg["downstream_expert"]["km"] = str(_kmeans(env))
    path.write_text(yaml.safe_dump(cfg))
    return path


def _kmeans(env) -> Path:
    (km,) = (env["root"] / "cache").glob("kmeans-*.pt")
    return km


@pytest.fixture(scope="module")
def runs(corpora):
    """Every runner job of this file, two at a time (each runner process is single-threaded)."""
    root = corpora["root"]
    csv_env = _pipeline(root / "run_csv", "csv", {"csv": str(Path(corpora["csv"]["root"]) / "all.csv")}, 50)
    er_env = _pipeline(root / "run_er", "er", {"root": corpora["er"]["root"], "test_fold": "fold1"}, 50,
                       lm_updates=500)

    # a task module and its YAML outside the package: nothing registered, nothing edited
    outside = root / "outside"
    (outside / "code").mkdir(parents=True)
    (outside / "code" / "my_shape_task.py").write_text(TASK_MODULE)
    (outside / "configs").mkdir()
    cfg = yaml.safe_load(Path(registry.default_config_path("speechprompt_csv")).read_text())
    cfg["runner"].update(total_steps=150, log_step=50, eval_step=150, save_step=150, eval_dataloaders=["dev"])
    cfg["optimizer"]["lr"] = 3e-2
    cfg["downstream_expert"] = {
        "task": "my_shape_task", "method": "pt", "ulm": str(csv_env["ulm"]), "km": str(_kmeans(csv_env)),
        "n_clusters": 50, "cache_dir": str(csv_env["root"] / "cache"), "verbalizer": "learnable",
        "datarc": {"csv_file": csv_env["datarc"]["csv"], "batch_size": 32, "eval_batch_size": 64, "num_workers": 0}}
    (outside / "configs" / "speechprompt_shapes.yaml").write_text(yaml.safe_dump(cfg))
    outside_env = {"PYTHONPATH": str(outside / "code"), registry.ENV_CONFIG_PATH: str(outside / "configs")}

    jobs = {
        "csv": ("speechprompt_csv", _config(csv_env, "speechprompt_csv", 250, **PT_FAST), root / "exp_csv", None),
        "er": ("speechprompt_er", _config(er_env, "speechprompt_er", 500, balanced_sampling=True, **PT_FAST),
               root / "exp_er", None),
        "outside": ("speechprompt_shapes", None, root / "exp_outside", outside_env),
    }
    results = {}

    def job(key):
        name, cfg, exp, extra = jobs[key]
        try:
            results[key] = (exp, train_and_evaluate(name, cfg, exp, extra))
        except BaseException as e:  # reported by the test that owns the job
            results[key] = (exp, e)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(job, jobs))
    return results


def _result(runs, key):
    """A job's result; its exception, if it failed, is raised in the test that owns the job."""
    value = runs[key]
    for part in value if isinstance(value, tuple) else (value,):
        if isinstance(part, BaseException):
            raise part
    return value


def test_csv_prompt_tuning_through_s3prl_runner(runs):
    """9 classes, 27 test utterances by 2 unseen speakers. Measured (separate runs, same settings): corpus seed 0
    0.30, seed 1 0.26 (7/27); chance 0.111; asserted >= 0.22 (6/27, 2x chance). More data (16,4,4 per class,
    300 steps: 0.22 / 0.75) or more training speakers (12: 0.22 / 0.22) did not make it steadier."""
    exp, test = _result(runs, "csv")
    record_outcome("csv_pt", accuracy=test["accuracy"])
    assert test["accuracy"] >= 0.22
    assert (exp / "test_predict.txt").is_file()


def test_er_prompt_tuning_through_s3prl_runner(runs):
    """4 balanced classes, 48 test utterances (per_emotion 6); chance 0.25; asserted >= 0.35 (17/48). With a
    150-update LM and 300 steps the 5-run spread (docs/testing.md) gave 0.521 / 0.354 / 0.4375 (seeds 0-2: seed 1
    passed by 0.004), so the LM now pretrains 500 updates and PT runs 500 steps: 0.458 / 0.4375 / 0.458."""
    exp, test = _result(runs, "er")
    record_outcome("er_pt", accuracy=test["accuracy"])
    assert test["accuracy"] >= 0.35


def test_task_module_outside_the_package_through_s3prl_runner(runs):
    """-d speechprompt_shapes: module on PYTHONPATH, YAML in SPEECHPROMPT_CONFIG_PATH, no -c."""
    exp, test = _result(runs, "outside")
    info = json.loads((exp / "speechprompt_info.json").read_text())
    record_outcome("outside_pt", accuracy=test["accuracy"])
    assert info["task"] == "my_shape_task" and info["trainable_params"] > 0
    assert {"circle", "square", "triangle"} <= set((exp / "test_truth.txt").read_text().split())
    assert test["accuracy"] > 0.333


# ---------------------------------------------------------------------------------------------
# SID with more speakers than units; the _linear baselines
# ---------------------------------------------------------------------------------------------

SID_SPEAKERS, SID_UNITS, SID_PER_SPEAKER = 12, 8, (16, 4, 4)
SID_UPSTREAM = "fbank_no_cmvn"


@pytest.fixture(scope="module")
def sid_corpora(tmp_path_factory):
    """The SID corpus and a smaller csv corpus (for its linear baseline)."""
    from s3prl_speechprompt.synth.cls_corpora import make_csv, make_sid
    root = tmp_path_factory.mktemp("new_tasks_sid")
    return {"root": root,
            "sid": make_sid(root / "sid", seed=seed_offset(), speakers=SID_SPEAKERS, per_speaker=SID_PER_SPEAKER,
                            progress=False),
            "csv": make_csv(root / "csv", seed=seed_offset(), per_class=(4, 2, 2), progress=False)}


def test_sid_reader_on_synthetic_voxceleb1(sid_corpora):
    sid = sid_corpora["sid"]
    task = get_task("sid")(file_path=sid["root"], meta_data=sid["meta_data"], max_timestep=8000)
    splits = {s: task.read_split(s) for s in task.splits}
    assert [len(v) for v in splits.values()] == [SID_SPEAKERS * n for n in SID_PER_SPEAKER]
    assert {it.labels for it in splits["test"]} == {(f"speaker_{k}",) for k in range(SID_SPEAKERS)}
    assert all(it.num_samples == 8000 for it in splits["train"]) and splits["dev"][0].num_samples is None
    # videos do not cross splits
    video = lambda it: it.id.rsplit("-", 1)[0]  # noqa: E731
    assert not {video(it) for it in splits["train"]} & {video(it) for it in splits["test"]}
    # every speaker has its own vocal tract (warp, tilt) on top of the espeak-ng voice
    voices = sid_corpora["sid"]["voices"]
    assert len({(v["warp"], v["tilt"]) for v in voices}) == SID_SPEAKERS


def test_apply_timbre():
    import numpy as np
    from s3prl_speechprompt.synth.cls_corpora import apply_timbre

    t = np.arange(16000) / 16000
    x = 0.5 * np.sin(2 * np.pi * 200 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    assert np.allclose(apply_timbre(x), x)
    y = apply_timbre(x, warp=1.25)
    assert abs(len(y) - 16000 / 1.25) <= 1 and np.isclose(np.abs(y).max(), np.abs(x).max())
    peak = lambda w: np.fft.rfftfreq(len(w), 1 / 16000)[np.argmax(np.abs(np.fft.rfft(w)))]  # noqa: E731
    assert abs(peak(y) - 250) < 2                                  # 200 Hz * 1.25
    tilt = lambda w: np.abs(np.fft.rfft(w))[3000] / np.abs(np.fft.rfft(w))[200]  # noqa: E731  (1 s: bin = Hz)
    assert tilt(apply_timbre(x, tilt=0.9)) > 4 * tilt(x) > 16 * tilt(apply_timbre(x, tilt=-0.9))


def _linear_config(path: Path, name: str, datarc: dict, steps: int) -> Path:
    cfg = yaml.safe_load(Path(registry.default_config_path(name)).read_text())
    cfg["runner"].update(total_steps=steps, gradient_accumulate_steps=1, log_step=steps, eval_step=steps,
                         save_step=steps, eval_dataloaders=["dev"])
    cfg["optimizer"]["lr"] = 1e-3
    cfg["downstream_expert"]["datarc"].update(datarc, batch_size=16, eval_batch_size=16, num_workers=0)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def sid_runs(sid_corpora):
    """SID FT-LM in one thread, the two linear baselines one after the other in the other."""
    root = sid_corpora["root"]
    sid_datarc = {"file_path": sid_corpora["sid"]["root"]}
    csv_datarc = {"csv": str(Path(sid_corpora["csv"]["root"]) / "all.csv")}
    results = {}

    def sid_ftlm():
        env = _pipeline(root / "run_sid", "sid", sid_datarc, SID_UNITS, upstream=SID_UPSTREAM)
        cfg = _config(env, "speechprompt_sid_ftlm", 500, lr=2e-3, verbalizer="multi")
        return train_and_evaluate("speechprompt_sid_ftlm", cfg, root / "exp_sid", upstream=SID_UPSTREAM)

    def linear(task, datarc, upstream):
        name = f"speechprompt_{task}_linear"
        cfg = _linear_config(root / f"{name}.yaml", name, datarc, 40)
        return train_and_evaluate(name, cfg, root / f"exp_{task}_linear", upstream=upstream)

    jobs = {"sid": sid_ftlm,
            "linear": lambda: {"csv": linear("csv", csv_datarc, "fbank"),
                               "sid": linear("sid", sid_datarc, SID_UPSTREAM)}}

    def job(key):
        try:
            results[key] = jobs[key]()
        except BaseException as e:  # reported by the test that owns the job
            results[key] = e

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(job, jobs))
    return results


def test_sid_more_speakers_than_units_through_s3prl_runner(sid_runs, sid_corpora):
    """12 speakers > 8 units: 2-unit codes; FT-LM on the tiny unit LM, train + -m evaluate -e.

    Chance 1/12 = 0.083. Asserted: accuracy >= 0.19 on the 96 held-out clips, dev and test pooled (the runner
    evaluates dev once, at the last step, so dev is as held out as test; chance-level guessing reaches 0.19 on
    96 clips with probability < 0.1%). Measured spread (benchmarks/outcome_spread.py, docs/testing.md): at 250
    steps test alone gave 0.271 / 0.25 / 0.1875 (seeds 0-2); at 500 steps 0.354 / 0.396 / 0.354 / 0.458 / 0.125
    (seeds 0-4): seed 4 generalised to the test videos far worse than to dev (dev 0.417), 6 of 48 test clips, and
    1,000 steps did not cure it (test 0.208, dev 0.333). 48 clips are too few to assert on alone; the pooled
    figures of the five seeds are in docs/testing.md.
    Prompt tuning with the multi verbalizer stays at chance on this tiny LM in CI time (0.06 with 16 speakers).
    """
    test = _result(sid_runs, "sid")
    exp = sid_corpora["root"] / "exp_sid"
    info = json.loads((exp / "speechprompt_info.json").read_text())
    chance = 1 / SID_SPEAKERS
    dev = last_metrics(exp, "dev")
    n_test, n_dev = SID_SPEAKERS * SID_PER_SPEAKER[2], SID_SPEAKERS * SID_PER_SPEAKER[1]
    held_out = (test["accuracy"] * n_test + dev["accuracy"] * n_dev) / (n_test + n_dev)
    record_outcome("sid_ftlm", accuracy=test["accuracy"], dev_accuracy=dev["accuracy"], held_out_accuracy=held_out)
    assert (info["verbalizer"], info["code_length"], info["k"]) == ("multi", 2, SID_UNITS)
    state = torch.load(exp / "dev-best.ckpt", map_location="cpu", weights_only=False)["Downstream"]["_extra_state"]
    codes = state["verbalizer"]["codes"]
    assert len(codes) == SID_SPEAKERS > SID_UNITS and len(set(codes.values())) == SID_SPEAKERS
    assert all(len(c.split()) == 2 for c in codes.values())
    truth = dict(line.split() for line in (exp / "test_truth.txt").read_text().splitlines())
    # the LM may generate more than one code ("speaker_9 <unk>"): that counts as wrong
    predict = dict(line.split(maxsplit=1) for line in (exp / "test_predict.txt").read_text().splitlines())
    assert len(truth) == SID_SPEAKERS * SID_PER_SPEAKER[2] and set(truth.values()) == set(codes)
    assert predict.keys() == truth.keys()
    decoded = [p for tokens in predict.values() for p in tokens.split() if p != "<unk>"]
    assert decoded and set(decoded) <= set(codes)            # generated 2-unit codes map back to speakers
    assert held_out >= 0.19 > 2 * chance


def test_linear_baselines_through_s3prl_runner(sid_runs, sid_corpora):
    """-d speechprompt_csv_linear and speechprompt_sid_linear (the registry's baseline expert): 40 steps,
    train + -m evaluate -e; mechanics and the accuracy metric, not its level."""
    results = _result(sid_runs, "linear")
    for task, test in results.items():
        exp = sid_corpora["root"] / f"exp_{task}_linear"
        print(f"{task} linear test accuracy {test['accuracy']:.3f} (40 steps)")
        assert 0.0 <= test["accuracy"] <= 1.0
        assert (exp / "dev-best.ckpt").is_file()
