"""How far does each asserted training outcome of the test suite move with the seed and the thread settings?

Reruns the tests that assert a training outcome (a runner-trained model beats chance / the untrained model) under
other seeds and thread settings and tabulates what each one measured. One *run* = one pytest call over the chosen
tests with

* ``SPEECHPROMPT_TEST_SEED=<seed>``: shifts every seed the tests use (synthetic corpus, k-means, unit LM, the
  runner's ``--seed``; tests/helpers.py ``seed_offset``);
* ``SPEECHPROMPT_TEST_THREADS=<n>``: torch/OMP threads of the training, in process and in runner subprocesses;
* with or without xdist (``-n 2 --dist worksteal``, the README's CI command);
* optionally ``ATEN_CPU_CAPABILITY`` (e.g. ``avx2`` on an AVX-512 machine: other kernels, as on another CPU).

The tests write their figures with ``helpers.record_outcome`` to ``SPEECHPROMPT_OUTCOMES`` (one JSON line per
test); this script collects them with pass/fail from pytest's JUnit XML and prints one row per (test, metric).

    python benchmarks/outcome_spread.py --runs 5                       # every outcome test, 5 settings (hours)
    python benchmarks/outcome_spread.py --runs 5 --tests sf_ftlm sf_pt  # the weakest first
    python benchmarks/outcome_spread.py --table result/outcome_spread       # tabulate what is there, run nothing
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# outcome name (as recorded by the test) -> pytest node id; weakest (closest to its threshold) first
TESTS = {
    "sf_ftlm": "tests/test_seq_tasks.py::test_runner_sf_ftlm_beats_untrained",
    "sf_pt": "tests/test_seq_pt.py::test_runner_sf_pt_beats_untrained_f1",
    "csv_pt": "tests/test_new_tasks.py::test_csv_prompt_tuning_through_s3prl_runner",
    "er_pt": "tests/test_new_tasks.py::test_er_prompt_tuning_through_s3prl_runner",
    "outside_pt": "tests/test_new_tasks.py::test_task_module_outside_the_package_through_s3prl_runner",
    "sid_ftlm": "tests/test_new_tasks.py::test_sid_more_speakers_than_units_through_s3prl_runner",
    "asr_ftlm": "tests/test_seq_tasks.py::test_runner_asr_ftlm_beats_untrained_and_length_analysis",
    "asr_pt": "tests/test_seq_pt.py::test_runner_asr_pt_beats_untrained_cer",
    "ks_pt": "tests/test_s3prl_expert.py::test_ks_prompt_tuning_through_s3prl_runner",
    "ks_ftlm": "tests/test_s3prl_expert.py::test_ks_ftlm_through_s3prl_runner",
    "ic_pt": "tests/test_s3prl_expert.py::test_ic_prompt_tuning_through_s3prl_runner",
}

# run i uses SETTINGS[i % len(SETTINGS)] with seed i: (threads, xdist, ATEN_CPU_CAPABILITY or None)
SETTINGS = [(1, True, None), (2, False, None), (1, False, "avx2"), (2, True, None), (1, True, "avx2")]


def run_once(i: int, names, out: Path) -> None:
    threads, xdist, cpu = SETTINGS[i % len(SETTINGS)]
    env = dict(os.environ, SPEECHPROMPT_TEST_SEED=str(i), SPEECHPROMPT_TEST_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), SPEECHPROMPT_OUTCOMES=str(out / f"run{i}.jsonl"), PYTHONWARNINGS="ignore")
    if cpu:
        env["ATEN_CPU_CAPABILITY"] = cpu
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={out / f'run{i}.xml'}",
           *(["-n", "2", "--dist", "worksteal"] if xdist else []), *[TESTS[n] for n in names]]
    setting = {"run": i, "seed": i, "threads": threads, "xdist": xdist, "cpu": cpu or "default"}
    print(f"run {i}: {setting}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    setting.update(seconds=round(time.time() - t0), returncode=proc.returncode, tests=list(names))
    (out / f"run{i}.log").write_text(proc.stdout + proc.stderr)
    (out / f"run{i}.setting.json").write_text(json.dumps(setting) + "\n")
    print(f"run {i}: pytest exit {proc.returncode} after {setting['seconds']} s", flush=True)


def verdicts(xml: Path) -> dict:
    """{test function name: passed|failed|error|skipped} from pytest's JUnit XML."""
    if not xml.is_file():
        return {}
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        out[case.get("name")] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                                 else "skipped" if "skipped" in kinds else "passed")
    return out


def table(out: Path) -> str:
    """One row per (test, metric): the value of every run, min, max; and each run's setting and verdict."""
    runs = sorted(int(p.stem[3:].split(".")[0]) for p in out.glob("run*.setting.json"))
    values, verdict, settings = {}, {}, {}
    for i in runs:
        settings[i] = json.loads((out / f"run{i}.setting.json").read_text())
        by_func = verdicts(out / f"run{i}.xml")
        for name in settings[i]["tests"]:
            verdict[(name, i)] = by_func.get(TESTS[name].split("::")[1], "missing")
        path = out / f"run{i}.jsonl"
        for line in (path.read_text().splitlines() if path.is_file() else []):
            row = json.loads(line)
            for metric, v in row["metrics"].items():
                values.setdefault((row["test"], metric), {})[i] = float(v)
    lines = ["runs: " + "; ".join(f"{i}: seed {s['seed']}, {s['threads']} thread(s), "
                                  f"{'xdist' if s['xdist'] else 'no xdist'}, cpu {s['cpu']}, {s['seconds']} s"
                                  for i, s in settings.items())]
    head = ["test", "metric"] + [f"run{i}" for i in runs] + ["min", "max"]
    rows = []
    for (test, metric), by_run in sorted(values.items(), key=lambda kv: (list(TESTS).index(kv[0][0])
                                                                         if kv[0][0] in TESTS else 99, kv[0][1])):
        cells = [f"{by_run[i]:.4g}" if i in by_run else "-" for i in runs]
        rows.append([test, metric] + cells + [f"{min(by_run.values()):.4g}", f"{max(by_run.values()):.4g}"])
    for test in dict.fromkeys(n for (n, _) in verdict):
        rows.append([test, "verdict"] + [verdict.get((test, i), "-") for i in runs] + ["", ""])
    widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join(lines + [fmt(head)] + [fmt(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="number of runs; run i uses seed i and setting i mod 5")
    ap.add_argument("--first", type=int, default=0, help="index of the first run (to continue or split a matrix)")
    ap.add_argument("--tests", nargs="+", choices=list(TESTS), default=list(TESTS),
                    help="outcome names to run (default: all, weakest first)")
    ap.add_argument("--out", type=Path, default=REPO / "result" / "outcome_spread",
                    help="directory for run<i>.{jsonl,xml,log,setting.json} and table.txt")
    ap.add_argument("--force", action="store_true", help="replace runs already in --out")
    ap.add_argument("--table", type=Path, metavar="DIR", default=None,
                    help="only tabulate the runs already in DIR, run nothing")
    args = ap.parse_args(argv)
    out = args.table or args.out
    if args.table is None:
        out.mkdir(parents=True, exist_ok=True)
        runs = range(args.first, args.first + args.runs)
        done = [i for i in runs if any(out.glob(f"run{i}.*"))]
        if done and not args.force:
            ap.error(f"{out} already holds run(s) {done}; --first to add others, or --force to replace them")
        for i in runs:
            for stale in out.glob(f"run{i}.*"):
                stale.unlink()
            run_once(i, args.tests, out)
    text = table(out)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
