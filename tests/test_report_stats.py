"""Statistics of ``speechprompt report`` against hand-computed cases, and the report's uncertainty features on
hand-made ``speechprompt train`` experiment directories (fast; the runner-based case is in
test_baselines_report.py).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import runner_env
from s3prl_speechprompt import report
from s3prl_speechprompt.predictions import read_predictions, write_predictions
from s3prl_speechprompt.report import stats
from s3prl_speechprompt.report.compare import TestSetMismatch, compare_runs
from s3prl_speechprompt.report.upgrade import upgrade_run

Z95 = 1.959963984540054         # standard normal 97.5% quantile


def _wilson_by_hand(k, n, z=Z95):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n,published", [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)),
                                           (2900, 3081, None), (1, 1, None)])
def test_wilson_interval_matches_the_closed_form(k, n, published):
    lo, hi = stats.wilson_interval(k, n)
    want = _wilson_by_hand(k, n)
    assert lo == pytest.approx(want[0], abs=1e-9) and hi == pytest.approx(want[1], abs=1e-9)
    if published:                   # Wilson (1927) values as tabulated, e.g. Newcombe (1998) Table I
        assert (round(lo, 4), round(hi, 4)) == published
    assert lo <= k / n <= hi


def test_exact_mcnemar_on_a_constructed_table():
    # 20 both right, 5 both wrong, 1 only A right, 9 only B right
    a = [1] * 20 + [0] * 5 + [1] * 1 + [0] * 9
    b = [1] * 20 + [0] * 5 + [0] * 1 + [1] * 9
    r = stats.mcnemar_exact(a, b)
    assert (r.only_a, r.only_b) == (1, 9)
    # two-sided exact: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * (1 + 10) / 1024
    assert r.p == pytest.approx(22 / 1024, abs=1e-12)
    assert stats.mcnemar_exact(a, a).p == 1.0        # no discordant pair


def test_paired_bootstrap_identical_runs_give_zero_width_and_p_one():
    rng = np.random.default_rng(1)
    num = rng.integers(0, 5, 300).astype(float)
    den = rng.integers(1, 10, 300).astype(float)
    r = stats.paired_bootstrap(num, den, num, den, resamples=500, seed=3)
    assert r.diff == 0.0 and r.low == 0.0 and r.high == 0.0 and r.p == 1.0


def test_paired_bootstrap_sign_for_a_strictly_better_run():
    # B is right on 70% of 400 utterances, A on those and on 40 more: A - B = +10 points
    b = np.zeros(400)
    b[:280] = 1
    a = b.copy()
    a[280:320] = 1
    ones = np.ones(400)
    r = stats.paired_bootstrap(a, ones, b, ones, resamples=1000, seed=0)
    assert r.diff == pytest.approx(0.1) and 0 < r.low < r.diff < r.high and r.p < 0.01
    flipped = stats.paired_bootstrap(b, ones, a, ones, resamples=1000, seed=0)
    assert flipped.high < 0 and flipped.low == pytest.approx(-r.high) and flipped.p == r.p
    # an error rate: A makes fewer edits everywhere -> negative difference
    edits_b = np.full(400, 3.0)
    r = stats.paired_bootstrap(edits_b - 1, np.full(400, 10.0), edits_b, np.full(400, 10.0), 200, 0)
    assert r.high < 0 and r.diff == pytest.approx(-0.1)


def test_bootstrap_is_deterministic_for_a_seed_and_fast():
    rng = np.random.default_rng(0)
    num, den = rng.integers(0, 4, 3081).astype(float), rng.integers(1, 12, 3081).astype(float)
    t0 = time.perf_counter()
    first = stats.bootstrap_interval(num, den, resamples=1000, seed=7)
    seconds = time.perf_counter() - t0
    assert stats.bootstrap_interval(num, den, resamples=1000, seed=7) == first
    assert stats.bootstrap_interval(num, den, resamples=1000, seed=8) != first
    assert first[0] < stats.ratio(num, den) < first[1]
    assert seconds < 5, f"1000 resamples of 3081 utterances took {seconds:.1f} s"


def test_bootstrap_of_accuracy_agrees_with_wilson_roughly():
    correct = np.zeros(3081)
    correct[:2887] = 1              # 93.70%
    lo, hi = stats.bootstrap_interval(correct, np.ones_like(correct), resamples=2000, seed=0)
    wlo, whi = stats.wilson_interval(2887, 3081)
    assert abs(lo - wlo) < 0.002 and abs(hi - whi) < 0.002


def test_holm_adjustment():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


# ------------------------------------------------------------------------------------------------
# per-utterance decomposition == SUPERB's corpus metric on the full set
# ------------------------------------------------------------------------------------------------

def test_slot_filling_decomposition_equals_s3prl_metrics():
    from s3prl.downstream.ctc import metric

    from s3prl_speechprompt.tasks.sf import METRICS, slot_utterance_scores
    refs = ["PLAY B-artist ADELE E-artist NOW", "WAKE ME UP B-time AT SEVEN E-time", "HELLO THERE",
            "B-city PARIS E-city AND B-city ROME E-city", "B-x A E-x B-y BB E-y"]
    hyps = ["PLAY B-artist ADEL E-artist NOW", "WAKE ME B-time AT SEVN E-time", "HELLO",
            "B-city PARIS E-city B-country ROME E-country", "B-y BB E-y"]
    per = slot_utterance_scores(hyps, refs)
    for name in METRICS:
        num, den = per[name]
        assert stats.ratio(num, den) == pytest.approx(float(getattr(metric, name)(hyps, refs)), abs=1e-12), name


def test_asr_decomposition_equals_error_rates():
    from s3prl_speechprompt.tasks.asr import SpeechRecognition, error_rates
    from s3prl_speechprompt.tasks.sequence import text_to_tokens
    refs = [text_to_tokens(t) for t in ("HELLO WORLD", "A CAT SAT", "GOOD MORNING TO YOU")]
    hyps = [text_to_tokens(t) for t in ("HELO WORLD", "A CAT SAT ON", "GOOD EVENING")]
    hyps[2] = hyps[2] + (None,)
    per = SpeechRecognition().utterance_scores(hyps, refs)
    full = error_rates(hyps, refs)
    for name in ("wer", "cer"):
        assert 100 * stats.ratio(*per[name]) == pytest.approx(full[name], abs=1e-12)


def test_predictions_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "test_predictions.jsonl"
    write_predictions(path, ["b", "a"], [("x",), ("y", "z")], [("x",), (None, "z")], task="ic", split="test",
                      step=5, seed=3)
    p = read_predictions(path)
    assert p.ids == ["a", "b"] and p.truths == [("y", "z"), ("x",)] and p.predictions == [(None, "z"), ("x",)]
    assert p.header["step"] == 5 and p.header["seed"] == 3 and p.task == "ic"
    with pytest.raises(ValueError, match="more than once"):
        write_predictions(path, ["a", "a"], [(), ()], [(), ()], task="ks", split="test")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(ValueError, match="n=2 but the file has 1"):
        read_predictions(path)
    path.write_text(lines[0] + "\n{\"id\": \"a\"}\n")
    with pytest.raises(ValueError, match=r"test_predictions.jsonl:2"):
        read_predictions(path)


# ------------------------------------------------------------------------------------------------
# the report on `speechprompt train` directories (hand-made, as `speechprompt evaluate` left them before run.json)
# ------------------------------------------------------------------------------------------------

def _engine_run(path: Path, method: str, seed: int, correct: np.ndarray, ids=None, params=1000):
    path.mkdir(parents=True)
    n = len(correct)
    ids = ids or [f"test-{i + 1}" for i in range(n)]
    labels = [("yes",) if i % 2 else ("no",) for i in range(n)]
    hyps = [lab if c else (("no",) if lab == ("yes",) else ("yes",)) for lab, c in zip(labels, correct)]
    config = {"format": "s3prl-speechprompt-engine/1", "task": "ks", "method": method, "ulm": "/x/ulm_small",
              "ulm_arch": "ulm_small", "ulm_width": 256, "ulm_layers": 4, "train": "/x/ks/train.txt",
              "trainable_params": params, "train_config": {"seed": seed, "method": method, "lr": None}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "prompt.pt").write_bytes(b"0" * 10)
    (path / "test_scores.json").write_text(json.dumps({"accuracy": float(np.mean(correct)), "n": n,
                                                        "seed": seed}))
    write_predictions(path / "test_predictions.jsonl", ids, labels, hyps, task="ks", split="test", mode="evaluate",
                      seed=seed)
    upgrade_run(path)          # hand-made in the format before run.json: converted, as a user converts theirs
    return path


@pytest.fixture()
def engine_runs(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    base = rng.random(n) < 0.85
    runs = {}
    for s in (0, 1, 2):
        flip = rng.random(n) < 0.03
        runs[f"pt_s{s}"] = _engine_run(tmp_path / "bench" / f"pt_s{s}", "pt", s, base ^ flip)
    better = base | (rng.random(n) < 0.5)
    runs["ftlm_s0"] = _engine_run(tmp_path / "bench" / "ftlm_s0", "ftlm", 0, better, params=50_000)
    return runs


def test_report_intervals_groups_and_comparisons_on_engine_runs(engine_runs, tmp_path):
    rows = report.build_report([engine_runs["pt_s0"].parent], group_seeds=True)
    runs = {r.name: r for r in rows if r.source == "run"}
    assert set(runs) == {"pt_s0", "pt_s1", "pt_s2", "ftlm_s0"}
    pt = runs["pt_s0"]
    assert pt.method == "PT (SpeechPrompt)" and pt.seed == 0 and pt.n_test == 600 and pt.notes == []
    k = round(pt.metrics["accuracy"] * 6)
    assert pt.intervals["accuracy"] == pytest.approx([100 * v for v in stats.wilson_interval(k, 600)])
    groups = [r for r in rows if r.source == "seeds"]
    assert len(groups) == 1 and groups[0].seeds == [0, 1, 2]
    accs = [runs[f"pt_s{s}"].metrics["accuracy"] for s in (0, 1, 2)]
    assert groups[0].metrics["accuracy"] == pytest.approx(np.mean(accs))
    assert groups[0].std["accuracy"] == pytest.approx(np.std(accs, ddof=1))

    comps, skipped = compare_runs(rows, reference=str(engine_runs["ftlm_s0"]))
    assert skipped == [] and {(c.a, c.b) for c in comps} == {("ftlm_s0", f"pt_s{s}") for s in (0, 1, 2)}
    for c in comps:
        assert c.test == "exact McNemar" and c.diff > 0 and c.low > 0 and c.p < 0.001
        assert "ftlm_s0 is better on this test set" in c.sentence()
    md = report.render(rows, "md", comparisons=comps, stats_note=report.statistics_note())
    assert "acc " in md and "[" in md and "± " in md and "(n=3)" in md and "Paired comparisons" in md
    assert "Wilson score interval" in md
    csv_text = report.render(rows, "csv", comparisons=comps)
    assert "accuracy_lo" in csv_text.splitlines()[0] and "exact McNemar" in csv_text
    parsed = json.loads(report.render(rows, "json", comparisons=comps))
    assert len(parsed["comparisons"]) == 3 and parsed["rows"][0]["intervals"]

    from s3prl_speechprompt.report.plot import plot_report
    data = plot_report(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000 and (tmp_path / "plot.json").is_file()
    drawn = {p["expdir"] for p in data["points"] if p["source"] == "run"}
    assert drawn == {str(p) for p in engine_runs.values()} and data["drawn"]["run"] == 4
    assert data["drawn"]["seeds"] == 1 and data["drawn"]["paper"] >= 1 and data["drawn"]["SUPERB"] >= 1


def test_report_refuses_to_compare_different_test_sets(engine_runs, tmp_path):
    other = _engine_run(tmp_path / "other", "pt", 5, np.ones(600, bool),
                        ids=[f"test-{i + 1}" for i in range(590)] + [f"extra-{i}" for i in range(10)])
    rows = report.build_report([engine_runs["pt_s0"], other], references="none")
    with pytest.raises(TestSetMismatch, match=r"pt_s0 and .*other were not scored on the same test utterances: "
                                              r"10 of 600 ids only in pt_s0"):
        compare_runs(rows)
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "report", str(engine_runs["pt_s0"]), str(other),
                          "--compare"], capture_output=True, text=True, env=runner_env())
    assert out.returncode == 2 and out.stdout == "" and "not scored on the same test utterances" in out.stderr


def test_compare_leaves_out_pairs_on_other_test_sets_when_others_compare(engine_runs, tmp_path):
    other = _engine_run(tmp_path / "cpc_pt", "pt", 0, np.ones(600, bool), ids=[f"cpc-{i}" for i in range(600)])
    rows = report.build_report([engine_runs["pt_s0"], engine_runs["ftlm_s0"], other], references="none")
    comps, skipped = compare_runs(rows)
    assert {(c.a, c.b) for c in comps} == {("pt_s0", "ftlm_s0")}
    assert len(skipped) == 2 and all("different test sets" in s and "cpc_pt" in s for s in skipped)


def _engine_config(path: Path, task: str, method: str = "pt", seed: int = 0):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "format": "s3prl-speechprompt-engine/1", "task": task, "method": method, "ulm": "/x/ulm", "ulm_arch": "a",
        "ulm_width": 8, "ulm_layers": 1, "train": "/x/train.txt", "trainable_params": 100,
        "train_config": {"seed": seed}}))
    return path


def test_asr_run_gets_bootstrap_intervals_for_wer_and_cer(tmp_path):
    from s3prl_speechprompt.tasks.asr import error_rates
    from s3prl_speechprompt.tasks.sequence import text_to_tokens
    rng = np.random.default_rng(0)
    words = ["A", "CAT", "SAT", "ON", "THE", "MAT", "DOG"]
    refs = [text_to_tokens(" ".join(rng.choice(words, 6))) for _ in range(200)]
    hyps = [r if rng.random() < 0.6 else text_to_tokens(" ".join(rng.choice(words, 5))) for r in refs]
    exp = _engine_config(tmp_path / "asr_pt", "asr")
    ids = [f"u{i}" for i in range(200)]
    write_predictions(exp / "test_predictions.jsonl", ids, refs, hyps, task="asr", split="test", mode="evaluate")
    full = error_rates(hyps, refs)                        # percent, as SUPERB's ASR expert logs them
    (exp / "test_scores.json").write_text(json.dumps({**full, "n": 200}))
    upgrade_run(exp)
    row = report.build_report([exp], references="none")[0]
    assert row.notes == [] and row.metrics == pytest.approx({"wer": full["wer"], "cer": full["cer"]})
    assert row.interval_kind == {"wer": "bootstrap", "cer": "bootstrap"}
    for m in ("wer", "cer"):
        lo, hi = row.intervals[m]
        assert lo < row.metrics[m] < hi and hi - lo < 20
    assert f"WER {full['wer']:.2f} [" in report.render([row], "md")


def test_engine_run_evaluated_before_the_jsonl_format_is_read_from_predict_and_truth(tmp_path):
    exp = _engine_config(tmp_path / "old_pt", "ic")
    truth = ["action:on object:lights location:kitchen"] * 30 + ["action:off object:music location:none"] * 20
    pred = truth[:40] + ["action:on <unk> location:none"] * 10
    (exp / "test_truth.txt").write_text("".join(f"test-{i + 1}\t{t}\n" for i, t in enumerate(truth)))
    (exp / "test_predict.txt").write_text("".join(f"test-{i + 1}\t{p}\n" for i, p in enumerate(pred)))
    upgrade_run(exp)
    row = report.build_report([exp], references="none")[0]
    assert row.metrics == {"accuracy": 80.0} and row.n_test == 50
    assert row.notes == ["test metrics recomputed from test_predict.txt by speechprompt upgrade-run"]
    assert row.intervals["accuracy"] == pytest.approx([100 * v for v in stats.wilson_interval(40, 50)])
