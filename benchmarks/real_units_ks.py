"""Real-unit benchmark (not a CI test): keyword spotting on SpeechPrompt's released HuBERT-100 / CPC-100 units.

For each unit type: pretrain a small unit LM on the train split's units (labels unused), prompt-tune
it (PT), and for HuBERT also fine-tune the whole LM (FT-LM) and train the unit BLSTM baseline; every
model is scored on the 3,081-utterance Speech Commands v0.01 test set by `speechprompt evaluate`.
All steps go through the real CLI. Results are appended to OUT/results.json after every step, and a
finished step is skipped when the script is run again (interrupted steps continue with --resume).

    python benchmarks/real_units_ks.py --out bench_ks            # ../shared/peer-data by default
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from s3prl_speechprompt.engine.trainer import LR_SCHEDULES

REPO = Path(__file__).resolve().parents[1]


def sh(cmd, log):
    """Run a speechprompt command; its stderr goes to the log, the last stdout line is parsed as JSON."""
    full = [sys.executable, "-m", "s3prl_speechprompt", *map(str, cmd)]
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
    ap.add_argument("--peer-data", type=Path, default=REPO.parent / "shared" / "peer-data")
    ap.add_argument("--out", type=Path, default=Path("bench_ks"))
    ap.add_argument("--units", nargs="+", default=["hubert100", "cpc100"])
    ap.add_argument("--arch", default="ulm_small")
    ap.add_argument("--pretrain-updates", type=int, default=1500,
                    help="~5 epochs of the 1.2M-token train split; the LM's valid loss stops falling about here")
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
    ap.add_argument("--methods", nargs="+", default=["pt", "blstm", "ftlm"], help="run on the first --units")
    ap.add_argument("--valid-stride", type=int, default=4,
                    help="use every k-th dev line for validation (the dev split is a resample; saves CPU)")
    args = ap.parse_args(argv)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"rows": {}, "config": vars(args)}
    results["config"] = {k: str(v) for k, v in vars(args).items()}

    def record(key, row):
        results["rows"][key] = row
        res_path.write_text(json.dumps(results, indent=1) + "\n")
        table(results)

    for units in args.units:
        data = args.peer_data / f"speechprompt-{units}"
        ks = data / "ks"
        if not (ks / "train.txt").is_file():
            raise SystemExit(f"{ks}/train.txt not found; pass --peer-data (the directory holding "
                             f"speechprompt-hubert100/ and speechprompt-cpc100/)")
        ulm = out / f"ulm_{units}"
        valid = out / f"valid_{units}.txt"
        lines = (ks / "valid.txt").read_text().splitlines()[::args.valid_stride]
        valid.write_text("\n".join(lines) + "\n")
        key = f"{units}/pretrain"
        if key not in results["rows"]:
            s, secs = sh(["pretrain-ulm", "--train", ks / "train.txt", "--valid", valid,
                          "--dict", data / "dict.txt", "--arch", args.arch, "--max-updates", args.pretrain_updates,
                          "--valid-interval", 200, "--out", ulm, "--resume"], log)
            record(key, {"method": f"uLM pretrain ({args.arch})", "units": units, "accuracy": None,
                         "trainable_params": s["parameters"], "seconds": round(s["seconds"], 1),
                         "valid_loss": s["best_valid_loss"], "updates": s["updates"]})
        methods = args.methods if units == args.units[0] else ["pt"]
        for method in methods:
            tag = f"pt-{args.pt_verbalizer}" if method == "pt" else method
            key = f"{units}/{tag}"
            if key in results["rows"]:
                continue
            exp = out / f"{units}_{tag}"
            cmd = ["train", "--task", "ks", "--train", ks / "train.txt", "--valid", valid, "--method", method,
                   "--out", exp, "--resume", "--valid-interval", args.valid_interval, "--patience", 100]
            if method != "blstm":
                cmd += ["--ulm", ulm]
            if method == "pt":
                cmd += ["--prompt-length", args.prompt_length, "--max-updates", args.pt_updates,
                        "--verbalizer", args.pt_verbalizer]
                cmd += ["--lr", args.pt_lr] if args.pt_lr else []
                cmd += ["--lr-schedule", args.pt_lr_schedule]
            elif method == "ftlm":
                cmd += ["--max-updates", args.ft_updates, "--lr-schedule", args.baseline_lr_schedule]
            else:
                cmd += ["--max-updates", args.blstm_updates, "--blstm-hidden", args.blstm_hidden,
                        "--lr-schedule", args.baseline_lr_schedule]
            s, secs = sh(cmd, log)
            ev, esecs = sh(["evaluate", "--exp", exp, "--split", "test", ks / "test.txt"], log)
            name = {"pt": f"PT (L={args.prompt_length}, {args.pt_verbalizer} verbalizer, {args.pt_updates} upd.)",
                    "ftlm": f"FT-LM ({args.ft_updates} upd.)",
                    "blstm": f"unit BLSTM ({args.blstm_updates} upd.)"}[method]
            record(key, {"method": name, "units": units, "accuracy": ev["accuracy"],
                         "trainable_params": ev["trainable_params"], "prompt_bytes": ev["prompt_bytes"],
                         "seconds": round(s["seconds"] + esecs, 1), "updates": s["updates"], "epochs": round(s["epochs"], 2),
                         "best_dev_loss": s["best_dev_loss"], "unfinished": ev["unfinished"], "n": ev["n"]})
    table(results)
    return 0


def table(results):
    rows = list(results["rows"].values())
    # wall time = training time accumulated over resumed runs (+ evaluation)
    lines = ["| method | units | test accuracy | trainable params | wall time |", "|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        lines.append(f"| {r['method']} | {r['units']} | {acc} | {r['trainable_params']:,} | {r['seconds'] / 60:.1f} min |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"\ntotal wall time: {total / 60:.1f} min")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
