"""How much does the embedded default's frozen LM limit prompt tuning? (not a CI test)

Takes the units of a `speechprompt demo` run (``DEMO/units/{train,dev}.tsv``, ``dict.txt``), pretrains the demo's
unit LM (``ulm_tiny``, 2,048-token batches, 50 warmup updates, as ``speechprompt demo``) for several update counts,
and on each LM trains PT and FT-LM with the demo's recipes (PT: L=16, learnable verbalizer, lr 3e-2 constant;
FT-LM: learnable verbalizer, lr 1e-3; 1,000 updates each, batch 32, dev loss every 200 updates), then scores the
dev split (selection only: the test split is left to the demo itself). Prints one row per LM: best valid loss in
nats, and each method's dev accuracy with its 95% Wilson interval. Everything goes through the real CLI.

    speechprompt demo --out D                                   # corpus, units, the default LM, PT on test
    python benchmarks/demo_lm_curve.py --demo-out D --updates 300 1000 3000 --out curve
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scipy.stats import binomtest

import real_units          # benchmarks/ is on sys.path when this script runs: its `sh` runs the CLI

RECIPES = {
    "pt": ["--method", "pt", "--prompt-length", "16", "--verbalizer", "learnable", "--lr", "3e-2"],
    "ftlm": ["--method", "ftlm", "--verbalizer", "learnable", "--lr", "1e-3"],
}


def dev_cell(units: Path, lm: Path, recipe, updates: int, exp: Path, seed: int, log: Path) -> dict:
    """Train one recipe on a demo's units (dev loss every 200 updates) and score its dev split: accuracy with
    its 95% Wilson interval, best dev loss, trainable parameters."""
    s, _ = real_units.sh(["train", "--task", "ks", "--train", units / "train.tsv", "--valid", units / "dev.tsv",
                          "--ulm", lm, *recipe, "--max-updates", updates, "--valid-interval", 200, "--patience", 100,
                          "--out", exp, "--resume", "--seed", seed], log)
    ev, _ = real_units.sh(["evaluate", "--exp", exp, "--split", "dev", units / "dev.tsv"], log)
    correct = round(ev["accuracy"] * ev["n"])
    ci = binomtest(correct, ev["n"]).proportion_ci(method="wilson")
    return {"dev_accuracy": ev["accuracy"], "correct": correct, "n": ev["n"],
            "wilson95": [round(ci.low, 4), round(ci.high, 4)], "best_dev_loss": s["best_dev_loss"],
            "trainable_params": ev["trainable_params"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", type=Path, required=True, help="a `speechprompt demo --out` directory")
    ap.add_argument("--updates", type=int, nargs="+", default=[300, 1000, 3000], help="LM pretraining budgets")
    ap.add_argument("--methods", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--train-updates", type=int, default=1000, help="PT / FT-LM updates (the demo's runner steps)")
    ap.add_argument("--seed", type=int, default=0, help="seed of LM pretraining and of training")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per command")
    ap.add_argument("--out", type=Path, default=Path("demo_lm_curve"))
    args = ap.parse_args(argv)
    units = args.demo_out / "units"
    if not (units / "train.tsv").is_file():
        raise SystemExit(f"{units}/train.tsv not found: run `speechprompt demo --out {args.demo_out}` first")
    args.out.mkdir(parents=True, exist_ok=True)
    log, res_path = args.out / "log.txt", args.out / "results.json"
    rows = json.loads(res_path.read_text()) if res_path.is_file() else {}
    real_units.THREADS[0] = args.threads        # every command gets --threads
    for n in args.updates:
        lm = args.out / f"lm{n}"
        key = f"lm{n}"
        if key not in rows:
            s, _ = real_units.sh(["pretrain-ulm", "--train", units / "train.tsv", "--valid", units / "dev.tsv",
                                  "--dict", units / "dict.txt", "--arch", "ulm_tiny", "--max-updates", n,
                                  "--max-tokens", 2048, "--warmup", 50, "--valid-interval", max(n // 4, 1),
                                  "--out", lm, "--resume", "--seed", args.seed], log)
            rows[key] = {"updates": n, "valid_nats": s["best_valid_loss"], "seconds": s["seconds"]}
        for method in args.methods:
            if method in rows[key]:
                continue
            rows[key][method] = dev_cell(units, lm, RECIPES[method], args.train_updates,
                                         args.out / f"lm{n}_{method}", args.seed, log)
        res_path.write_text(json.dumps(rows, indent=1) + "\n")
    head = "| LM updates | best valid loss (nats) | " + " | ".join(f"{m} dev accuracy [95% Wilson]"
                                                              for m in args.methods)
    print(head + " |\n|---|---|" + "---|" * len(args.methods))
    for key in (f"lm{n}" for n in args.updates):
        r = rows[key]
        cells = [f"{r[m]['dev_accuracy']:.3f} [{r[m]['wilson95'][0]:.3f}, {r[m]['wilson95'][1]:.3f}] "
                 f"({r[m]['correct']}/{r[m]['n']})" for m in args.methods]
        print(f"| {r['updates']:,} | {r['valid_nats']:.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
