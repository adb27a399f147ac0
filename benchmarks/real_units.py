"""Real-unit benchmark (not a CI test): SpeechPrompt's released HuBERT-100 / CPC-100 units.

Tasks: ``ks`` (Speech Commands v0.01, 12 classes, 3,081 test utterances; HuBERT-100 and CPC-100) and ``ic``
(Fluent Speech Commands, three slot labels per utterance scored as one, SUPERB's IC accuracy; 3,793 test
utterances; CPC-100 only). For each unit type: pretrain a small unit LM on the train split's units (labels
unused), then prompt-tune it (PT), fine-tune the whole LM (FT-LM) and train the unit BLSTM baseline
(``--methods``); every model is scored on the test set by `speechprompt evaluate`.
All steps go through the real CLI. Results are appended to OUT/results.json after every step, and a
finished step is skipped when the script is run again (interrupted steps continue with --resume).

    python benchmarks/real_units.py --out bench_ks            # KS, both unit types; ../shared/peer-data by default
    python benchmarks/real_units.py --out bench_ks --units hubert100 --seeds 0 1 2   # every method per seed
    python benchmarks/real_units.py --task ic --units cpc100 --out bench_ic           # Fluent Speech Commands IC

Every (units, method, seed) run keeps its experiment directory OUT/<units>_<method>_s<seed>/ (config,
prompts, <split>_predict.txt / _truth.txt, eval_<split>.json), so `speechprompt report` can compare them.
Rows of OUT/results.json are keyed "<units>/<method>/seed<seed>" (one OUT per task). ``--skip-test`` scores the dev file only
(ablations select on dev; test is scored once, for the chosen configuration).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.engine.trainer import LR_SCHEDULES
from s3prl_speechprompt.prompt.prefix import INITS

REPO = Path(__file__).resolve().parents[1]


THREADS = [0]


def sh(cmd, log):
    """Run a speechprompt command; its stderr goes to the log, the last stdout line is parsed as JSON."""
    full = [sys.executable, "-m", "s3prl_speechprompt", *map(str, cmd), "--threads", str(THREADS[0])]
    print("$ speechprompt " + " ".join(map(str, cmd)), flush=True)
    t0 = time.time()
    with open(log, "a") as err:
        err.write("\n$ " + " ".join(map(str, full)) + "\n")
        err.flush()
        out = subprocess.run(full, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode:
        raise SystemExit(f"command failed ({out.returncode}); see {log}: {' '.join(map(str, cmd))}")
    return json.loads(out.stdout.strip().splitlines()[-1]), time.time() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-data", type=Path, default=REPO.parent / "shared" / "peer-data",
                    help="directory holding speechprompt-hubert100/ and speechprompt-cpc100/")
    ap.add_argument("--task", choices=["ks", "ic"], default="ks",
                    help="ks: Speech Commands (hubert100, cpc100); ic: Fluent Speech Commands (cpc100 only)")
    ap.add_argument("--out", type=Path, default=Path("bench_ks"))
    ap.add_argument("--units", nargs="+", default=None,
                    help="unit types (default: every one released for --task)")
    ap.add_argument("--arch", default="ulm_small")
    ap.add_argument("--pretrain-updates", type=int, default=1500,
                    help="KS: ~5 epochs of the 1.2M-token train split; the LM's valid loss stops falling about here")
    ap.add_argument("--prompt-length", type=int, default=32,
                    help="L; 32 spends the paper's ~0.08M trainable budget on a 4-layer, d=256 LM")
    ap.add_argument("--pt-updates", type=int, default=6000)
    ap.add_argument("--pt-verbalizer", default="learnable",
                    help="learnable (SpeechPrompt v2 linear head, +1.7k parameters here; the best here) or freq (v1's)")
    ap.add_argument("--pt-lr", type=float, default=None, help="PT learning rate (default: the CLI's, 5e-3)")
    ap.add_argument("--pt-lr-schedule", choices=LR_SCHEDULES, default="paper",
                    help="paper (constant, the reference's) or cosine")
    ap.add_argument("--ft-updates", type=int, default=1500)
    ap.add_argument("--blstm-updates", type=int, default=3000)
    ap.add_argument("--baseline-lr-schedule", choices=LR_SCHEDULES, default="cosine",
                    help="FT-LM / BLSTM schedule: cosine decays to 0 at their fixed update budget")
    ap.add_argument("--blstm-hidden", type=int, default=128)
    ap.add_argument("--valid-interval", type=int, default=500)
    ap.add_argument("--methods", nargs="+", default=["pt", "blstm", "ftlm"], choices=["pt", "blstm", "ftlm"],
                    help="methods run on every --units")
    ap.add_argument("--valid-stride", type=int, default=4,
                    help="use every k-th dev line for validation (the dev split is a resample; saves CPU)")
    ap.add_argument("--pt-reparam", type=int, default=None, metavar="HIDDEN",
                    help="PT prompt reparameterisation MLP hidden size, 0 = plain prompts (default: the CLI's)")
    ap.add_argument("--pt-init", choices=INITS, default=None,
                    help="PT prompt initialisation (default: the CLI's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="training seeds (`speechprompt train --seed`); every method is run once per seed")
    ap.add_argument("--ulm-dir", type=Path, default=None,
                    help="use the already pretrained LMs DIR/ulm_<units>/ as they are (no pretraining step); "
                         "default: pretrain OUT/ulm_<units>/")
    ap.add_argument("--skip-test", action="store_true",
                    help="score the dev file only (for ablations: select on dev, score test once)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per step (0 = all cores); 1 is faster on a machine shared with other jobs")
    args = ap.parse_args(argv)
    released = {"ks": ["hubert100", "cpc100"], "ic": ["cpc100"]}[args.task]
    args.units = args.units or released
    if set(args.units) - set(released):
        ap.error(f"--task {args.task}: the units released for it are {', '.join(released)}")
    THREADS[0] = args.threads
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"rows": {}, "config": vars(args)}
    results["config"] = {k: str(v) for k, v in vars(args).items()}

    def record(key, row):
        # re-read first: runs of other seeds may write to the same OUT in parallel (one process per seed)
        if res_path.is_file():
            results["rows"] = {**json.loads(res_path.read_text())["rows"], **results["rows"]}
        results["rows"][key] = row
        atomic_write_text(res_path, json.dumps(results, indent=1) + "\n")
        table(results)

    for units in args.units:
        data = args.peer_data / f"speechprompt-{units}"
        task_dir = data / args.task
        if not (task_dir / "train.txt").is_file():
            raise SystemExit(f"{task_dir}/train.txt not found; pass --peer-data (the directory holding "
                             f"speechprompt-hubert100/ and speechprompt-cpc100/)")
        valid = out / f"valid_{units}.txt"
        lines = (task_dir / "valid.txt").read_text().splitlines()[::args.valid_stride]
        valid.write_text("\n".join(lines) + "\n")
        methods = args.methods
        ulm = (args.ulm_dir or out) / f"ulm_{units}"
        key = f"{units}/pretrain"
        if args.ulm_dir and not (ulm / "checkpoint_best.pt").is_file():
            raise SystemExit(f"--ulm-dir {args.ulm_dir}: {ulm}/checkpoint_best.pt not found (pretrain it with "
                             f"`speechprompt pretrain-ulm --out {ulm}` or drop --ulm-dir)")
        if key not in results["rows"] and set(methods) - {"blstm"} and not args.ulm_dir:
            s, secs = sh(["pretrain-ulm", "--train", task_dir / "train.txt", "--valid", valid,
                          "--dict", data / "dict.txt", "--arch", args.arch, "--max-updates", args.pretrain_updates,
                          "--valid-interval", 200, "--out", ulm, "--resume"], log)
            record(key, {"method": f"uLM pretrain ({args.arch})", "units": units, "accuracy": None,
                         "trainable_params": s["parameters"], "seconds": round(s["seconds"], 1),
                         "valid_loss": s["best_valid_loss"], "updates": s["updates"], "exp": str(ulm)})
        for seed in args.seeds:
            for method in methods:
                run_one(args, results, record, log, units, task_dir, valid, ulm, method, seed)
    table(results)
    return 0


def run_one(args, results, record, log, units, task_dir, valid, ulm, method, seed):
    """Train one (method, seed), score dev (the validation file) and, unless --skip-test, the test set."""
    tag = f"pt-{args.pt_verbalizer}" if method == "pt" else method
    key = f"{units}/{tag}/seed{seed}"
    if key in results["rows"]:
        return
    exp = args.out / f"{units}_{tag}_s{seed}"
    cmd = ["train", "--task", args.task, "--train", task_dir / "train.txt", "--valid", valid, "--method", method,
           "--out", exp, "--resume", "--valid-interval", args.valid_interval, "--patience", 100, "--seed", seed]
    if method != "blstm":
        cmd += ["--ulm", ulm]
    if method == "pt":
        cmd += ["--prompt-length", args.prompt_length, "--max-updates", args.pt_updates,
                "--verbalizer", args.pt_verbalizer, "--lr-schedule", args.pt_lr_schedule]
        cmd += ["--lr", args.pt_lr] if args.pt_lr else []
        cmd += ["--prompt-reparam", args.pt_reparam] if args.pt_reparam is not None else []
        cmd += ["--prompt-init", args.pt_init] if args.pt_init else []
    elif method == "ftlm":
        cmd += ["--max-updates", args.ft_updates, "--lr-schedule", args.baseline_lr_schedule]
    else:
        cmd += ["--max-updates", args.blstm_updates, "--blstm-hidden", args.blstm_hidden,
                "--lr-schedule", args.baseline_lr_schedule]
    s, secs = sh(cmd, log)
    scores = {}
    for split, path in [("valid", valid)] + ([] if args.skip_test else [("test", task_dir / "test.txt")]):
        ev, esecs = sh(["evaluate", "--exp", exp, "--split", split, path], log)
        (exp / f"eval_{split}.json").write_text(json.dumps(ev, indent=1) + "\n")
        scores[split] = ev
        secs += esecs
    ev = scores.get("test", scores["valid"])
    pt_desc = f"PT (L={args.prompt_length}, {args.pt_verbalizer} verbalizer, {args.pt_updates} upd."
    pt_desc += f", init {args.pt_init}" if args.pt_init else ""
    pt_desc += f", reparam {args.pt_reparam}" if args.pt_reparam is not None else ""
    name = {"pt": pt_desc + ")", "ftlm": f"FT-LM ({args.ft_updates} upd.)",
            "blstm": f"unit BLSTM ({args.blstm_updates} upd.)"}[method]
    record(key, {"method": name, "units": units, "seed": seed, "exp": str(exp),
                 "accuracy": scores["test"]["accuracy"] if "test" in scores else None,
                 "dev_accuracy": scores["valid"]["accuracy"],
                 "trainable_params": ev["trainable_params"], "stored_params": ev.get("stored_params"),
                 "prompt_bytes": ev["prompt_bytes"], "seconds": round(secs, 1), "updates": s["updates"],
                 "epochs": round(s["epochs"], 2), "best_dev_loss": s["best_dev_loss"],
                 "best_update": s["best_update"], "unfinished": ev["unfinished"], "n": ev["n"]})


def table(results):
    rows = list(results["rows"].values())
    # wall time = training time accumulated over resumed runs (+ evaluation)
    lines = ["| method | units | seed | dev accuracy | test accuracy | trainable params | stored params | wall time |",
             "|---|---|---|---|---|---|---|---|"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    for r in rows:
        stored = f"{r['stored_params']:,}" if r.get("stored_params") else "-"
        lines.append(f"| {r['method']} | {r['units']} | {r.get('seed', '-')} | {pct(r.get('dev_accuracy'))} | "
                     f"{pct(r['accuracy'])} | {r['trainable_params']:,} | {stored} | {r['seconds'] / 60:.1f} min |")
    groups = {}
    for r in rows:
        if r.get("seed") is not None and r["accuracy"] is not None:
            groups.setdefault((r["method"], r["units"]), []).append(100 * r["accuracy"])
    multi = {k: v for k, v in groups.items() if len(v) > 1}
    if multi:
        lines += ["", "| method | units | seeds | test accuracy mean +- std (sample) | per seed |",
                  "|---|---|---|---|---|"]
        for (m, u), accs in multi.items():
            lines.append(f"| {m} | {u} | {len(accs)} | {statistics.mean(accs):.2f} +- {statistics.stdev(accs):.2f} | "
                         f"{', '.join(f'{a:.2f}' for a in accs)} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"\ntotal wall time: {total / 60:.1f} min")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
