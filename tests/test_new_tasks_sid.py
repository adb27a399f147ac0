"""SID (VoxCeleb1) with more speakers than units, and the SUPERB ``_linear`` baselines of csv and sid.

Kept apart from test_new_tasks.py so that CI's two xdist workers (``--dist loadfile``) share the runner jobs.

SID: 12 synthetic speakers (``speechprompt synth sid``: espeak-ng voice/pitch/rate plus a per-speaker vocal-tract
warp and spectral tilt) on 8 fbank k-means units, so the ``multi`` verbalizer gives every speaker a 2-unit code.
The units come from s3prl's ``fbank_no_cmvn`` upstream: per-utterance CMVN (``-u fbank``) subtracts each
utterance's mean log spectrum, i.e. most of what tells the speakers apart.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

import test_new_tasks as tnt
from conftest import record_outcome, seed_offset
from test_s3prl_expert import last_metrics
from s3prl_speechprompt.s3prl_plugin import registry
from s3prl_speechprompt.tasks.base import get_task

SID_SPEAKERS, SID_UNITS, SID_PER_SPEAKER = 12, 8, (16, 4, 4)
SID_UPSTREAM = "fbank_no_cmvn"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from s3prl_speechprompt.synth.cls_corpora import make_csv, make_sid
    root = tmp_path_factory.mktemp("new_tasks_sid")
    return {"root": root,
            "sid": make_sid(root / "sid", seed=seed_offset(), speakers=SID_SPEAKERS, per_speaker=SID_PER_SPEAKER,
                            progress=False),
            "csv": make_csv(root / "csv", seed=seed_offset(), per_class=(4, 2, 2), progress=False)}


def test_sid_reader_on_synthetic_voxceleb1(corpora):
    task = get_task("sid")(file_path=corpora["sid"]["root"], meta_data=corpora["sid"]["meta_data"], max_timestep=8000)
    splits = {s: task.read_split(s) for s in task.splits}
    assert [len(v) for v in splits.values()] == [SID_SPEAKERS * n for n in SID_PER_SPEAKER]
    assert {it.labels for it in splits["test"]} == {(f"speaker_{k}",) for k in range(SID_SPEAKERS)}
    assert all(it.num_samples == 8000 for it in splits["train"]) and splits["dev"][0].num_samples is None
    # videos do not cross splits
    video = lambda it: it.id.rsplit("-", 1)[0]  # noqa: E731
    assert not {video(it) for it in splits["train"]} & {video(it) for it in splits["test"]}
    # every speaker has its own vocal tract (warp, tilt) on top of the espeak-ng voice
    voices = corpora["sid"]["voices"]
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
def runs(corpora):
    """SID FT-LM in one thread, the two linear baselines one after the other in the other."""
    root = corpora["root"]
    sid_datarc = {"file_path": corpora["sid"]["root"]}
    csv_datarc = {"csv": str(Path(corpora["csv"]["root"]) / "all.csv")}
    results = {}

    def sid_ftlm():
        env = tnt._pipeline(root / "run_sid", "sid", sid_datarc, SID_UNITS, upstream=SID_UPSTREAM)
        cfg = tnt._config(env, "speechprompt_sid_ftlm", 500, lr=2e-3, verbalizer="multi")
        return tnt._train_and_evaluate("speechprompt_sid_ftlm", cfg, root / "exp_sid", upstream=SID_UPSTREAM)

    def linear(task, datarc, upstream):
        name = f"speechprompt_{task}_linear"
        cfg = _linear_config(root / f"{name}.yaml", name, datarc, 40)
        return tnt._train_and_evaluate(name, cfg, root / f"exp_{task}_linear", upstream=upstream)

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


def _result(runs, key):
    if isinstance(runs[key], BaseException):
        raise runs[key]
    return runs[key]


def test_sid_more_speakers_than_units_through_s3prl_runner(runs, corpora):
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
    test = _result(runs, "sid")
    exp = corpora["root"] / "exp_sid"
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


def test_linear_baselines_through_s3prl_runner(runs, corpora):
    """-d speechprompt_csv_linear and speechprompt_sid_linear (the registry's baseline expert): 40 steps,
    train + -m evaluate -e; mechanics and the accuracy metric, not its level."""
    results = _result(runs, "linear")
    for task, test in results.items():
        exp = corpora["root"] / f"exp_{task}_linear"
        print(f"{task} linear test accuracy {test['accuracy']:.3f} (40 steps)")
        assert 0.0 <= test["accuracy"] <= 1.0
        assert (exp / "dev-best.ckpt").is_file()
