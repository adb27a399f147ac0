"""What limits prompt tuning in the embedded default: the PT recipe or the frozen LM? (not a CI test)

Takes a `speechprompt demo --out D` directory (its units, k-means and its own 300-update ``ulm_tiny``) and
trains PT / FT-LM cells on the demo's units with the CLI, dev split only (130 clips; selection, the test split
is left to the demo). Two frozen LMs:

* ``demo``: the demo's own LM (``D/ulm``: 300 updates on the 523 training clips' units, 13k tokens);
* ``unlabelled``: the same architecture pretrained for 2,000 updates on units of an *unlabelled* synthetic corpus
  16x larger (7,650 clips, ~208k tokens: isolated words, the 10 commands among 50 other words, by 38 synthetic
  speakers drawn independently of the demo's, made with `make_ks(seed=777, per_class=100)`), quantized with the
  demo's own k-means, as GSLM's LM is pretrained on other speech than the task's.

Cells (``--cells``, default all): PT with the demo's recipe (L=16, learnable verbalizer, lr 3e-2, 1,000
updates) and one change at a time (3,000 updates; lr 1e-1; L=64; batch 16 for 2,000 updates, the same
compute), FT-LM (lr 1e-3, 1,000 updates), on each LM.
Prints one row per cell with its 95% Wilson interval; a cell that is done is not rerun.

    speechprompt demo --out D
    python benchmarks/demo_pt_recipe.py --demo-out D --out recipe
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import real_units          # benchmarks/ is on sys.path when this script runs: its `sh` runs the CLI
from demo_lm_curve import dev_cell

PT = ["--method", "pt", "--verbalizer", "learnable"]
FT = ["--method", "ftlm", "--verbalizer", "learnable", "--lr", "1e-3"]
# name -> (LM, arguments, updates)
CELLS = {
    "demo_pt": ("demo", PT + ["--prompt-length", "16", "--lr", "3e-2"], 1000),
    "demo_pt_3000": ("demo", PT + ["--prompt-length", "16", "--lr", "3e-2"], 3000),
    "demo_pt_lr1e-1": ("demo", PT + ["--prompt-length", "16", "--lr", "1e-1"], 1000),
    "demo_pt_L64": ("demo", PT + ["--prompt-length", "64", "--lr", "3e-2"], 1000),
    "demo_pt_batch16": ("demo", PT + ["--prompt-length", "16", "--lr", "3e-2", "--batch-size", "16"], 2000),
    "demo_ftlm": ("demo", FT, 1000),
    "unlabelled_pt": ("unlabelled", PT + ["--prompt-length", "16", "--lr", "3e-2"], 1000),
    "unlabelled_pt_3000": ("unlabelled", PT + ["--prompt-length", "16", "--lr", "3e-2"], 3000),
    "unlabelled_ftlm": ("unlabelled", FT, 1000),
}
# the unlabelled corpus: isolated words, none of them labelled; the 10 commands appear as GSLM's data holds them
UNLABELLED_SEED, UNLABELLED_PER_WORD = 777, 100
DIGITS = "zero one two three four five six seven eight nine".split()


def unlabelled_words():
    from s3prl_speechprompt.synth.corpora import KS_CLASSES, KS_UNKNOWN_WORDS
    from s3prl_speechprompt.synth.seq_corpora import ASR_WORDS
    words = []
    for w in KS_UNKNOWN_WORDS + DIGITS + [w.lower() for w in ASR_WORDS]:
        if w not in words and w not in KS_CLASSES:
            words.append(w)
    return words                                            # 50 words


def unlabelled_lm(demo: Path, out: Path, log: Path) -> Path:
    """Synthesize the unlabelled corpus, quantize it with the demo's k-means, pretrain ulm_tiny on it."""
    from s3prl_speechprompt.synth import make_ks
    lm = out / "lm_unlabelled"
    if (lm / "checkpoint_best.pt").is_file() and (out / "lm_unlabelled.json").is_file():
        return lm
    corpus, units = out / "unlabelled_corpus", out / "unlabelled_units"
    if not (corpus / "speech_commands_v0.01").is_dir():
        make_ks(corpus, seed=UNLABELLED_SEED, per_class=UNLABELLED_PER_WORD, test_per_class=1,
                unknown_words=unlabelled_words(), unknown_fraction=1.0, progress=False)
    if not (units / "dev.tsv").is_file():
        cmd = [sys.executable, "-m", "s3prl_speechprompt", "extract-units", "-u", "fbank",
               "--km", str(demo / "units" / "kmeans.pt"), "--corpus-task", "ks", "--root", str(corpus),
               "--splits", "train,dev", "--out", str(units), "--cache-dir", str(out / "cache")]
        with open(log, "a") as err:
            subprocess.run(cmd, stdout=err, stderr=err, check=True)
    every = out / "unlabelled_all.tsv"                     # both splits: nothing of it is the task's
    every.write_text((units / "train.tsv").read_text() + (units / "dev.tsv").read_text())
    s, _ = real_units.sh(["pretrain-ulm", "--train", every, "--valid", demo / "units" / "dev.tsv",
                          "--dict", demo / "units" / "dict.txt", "--arch", "ulm_tiny", "--max-updates", 2000,
                          "--max-tokens", 2048, "--warmup", 50, "--valid-interval", 250, "--out", lm, "--resume",
                          "--seed", 0], log)
    (out / "lm_unlabelled.json").write_text(json.dumps(s) + "\n")
    return lm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", type=Path, required=True, help="a `speechprompt demo --out` directory")
    ap.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    ap.add_argument("--seed", type=int, default=0, help="training seed of every cell")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per command")
    ap.add_argument("--out", type=Path, default=Path("demo_pt_recipe"))
    args = ap.parse_args(argv)
    demo, units = args.demo_out.resolve(), args.demo_out.resolve() / "units"
    if not (demo / "ulm" / "checkpoint_best.pt").is_file():
        raise SystemExit(f"{demo}/ulm/checkpoint_best.pt not found: run `speechprompt demo --out {args.demo_out}` first")
    args.out.mkdir(parents=True, exist_ok=True)
    log, res_path = args.out / "log.txt", args.out / "results.json"
    rows = json.loads(res_path.read_text()) if res_path.is_file() else {}
    real_units.THREADS[0] = args.threads
    lms = {"demo": demo / "ulm"}
    for name in args.cells:
        if name in rows:
            continue
        lm_name, recipe, updates = CELLS[name]
        if lm_name not in lms:
            lms[lm_name] = unlabelled_lm(demo, args.out, log)
        rows[name] = {"lm": lm_name, "updates": updates, "args": recipe,
                      **dev_cell(units, lms[lm_name], recipe, updates, args.out / name, args.seed, log)}
        res_path.write_text(json.dumps(rows, indent=1) + "\n")
    info = args.out / "lm_unlabelled.json"
    if info.is_file():
        print(f"unlabelled LM: best valid loss {json.loads(info.read_text())['best_valid_loss']:.3f} nats on the "
              f"demo's dev units")
    print("| cell | LM | recipe | updates | best dev loss | dev accuracy [95% Wilson] |\n|---|---|---|---|---|---|")
    for name in args.cells:
        r = rows[name]
        ci = f"{r['dev_accuracy']:.3f} [{r['wilson95'][0]:.3f}, {r['wilson95'][1]:.3f}] ({r['correct']}/{r['n']})"
        print(f"| {name} | {r['lm']} | {' '.join(r['args'])} | {r['updates']:,} | {r['best_dev_loss']:.3f} | {ci} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
