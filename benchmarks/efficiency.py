"""Efficiency benchmark (docs/bench.md): KV-cached decoding vs full recomputation, PT vs FT-LM step time and
peak memory, PEFT prefix tuning on GPT-2 as a peer, on-the-fly quantization vs precomputed units, LM forward
FLOP/s vs plain matmuls, and bf16 vs fp32 autocast (step time and peak memory). Prints a table; --out FILE
also writes every number as JSON.

    python benchmarks/efficiency.py --out bench.json          # the full run (~15 min on one CPU thread)
    python benchmarks/efficiency.py --quick                   # smoke run: every row, numbers not meaningful
    python benchmarks/efficiency.py --sections train,precision

Contenders run interleaved in one process (the order rotates every repetition); each row is the median of
per-repetition ratios, with their count. Absolute seconds depend on the machine's load and are shown only for
orientation. One thread by default (--threads) so runs on a shared machine stay comparable.

A section is one module of ``measure/`` with a ``bench_*`` function returning a row dict (or a list of them)
with at least ``id``, ``section``, ``what``, ``value``, ``unit``, ``target``, ``met``. To add one: write
``measure/<name>.py``, register it in :data:`SECTIONS`, and give its extra columns (if any) to
:func:`format_table`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:                  # the checkout's package, whatever the venv has installed
    sys.path.insert(1, str(REPO))

import torch  # noqa: E402

from measure.common import BenchConfig, make_lm  # noqa: E402
from measure.decode import bench_decode  # noqa: E402
from measure.flops import bench_flops  # noqa: E402
from measure.precision import bench_precision  # noqa: E402
from measure.train import bench_rss, bench_train  # noqa: E402
from measure.units import bench_units  # noqa: E402

REGIMES = ("ks", "asr")
# section -> its measurement; per regime (KS-like and ASR-like lengths) unless the section has one row
SECTIONS = {"decode": (bench_decode, REGIMES), "train": (bench_train, REGIMES), "units": (bench_units, None),
            "flops": (bench_flops, REGIMES), "precision": (bench_precision, REGIMES)}


def run_bench(cfg: BenchConfig, sections=tuple(SECTIONS), log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(cfg.threads)
    lm = make_lm(cfg)
    info = {"config": asdict(cfg), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "lm_parameters": lm.num_parameters(), "load_average_start": os.getloadavg(),
            "lm": f"{cfg.layers} layers, d={cfg.dim}, {cfg.heads} heads, FFN {cfg.ffn}, vocab {cfg.vocab} "
                  f"({lm.num_parameters() / 1e6:.2f}M parameters)"}
    del lm
    log(f"efficiency: LM {info['lm']}; {cfg.threads} thread(s); {cfg.reps} interleaved repetition(s); "
        f"device {cfg.device}")
    rows: List[dict] = []
    t_start = time.perf_counter()

    def add(new):
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            log(f"  {row['id']:<20} {format_value(row):>10}   {row['what']}")

    for section, (bench, regimes) in SECTIONS.items():
        if section not in sections:
            continue
        for regime in regimes or (None,):
            add(bench(cfg, regime) if regime else bench(cfg))
        if section == "train" and cfg.rss and not cfg.device.startswith("cuda") and Path("/proc/self/status").exists():
            rss = bench_rss(cfg)
            for row in rows:
                if row["id"] == "train.asr.memory":
                    row["rss_cross_check"] = rss
    info.update(rows=rows, seconds_total=time.perf_counter() - t_start, load_average_end=os.getloadavg())
    return info


def format_value(row: dict) -> str:
    v = row["value"]
    if row["unit"] == "x faster":
        return f"{v:.1f}x"
    if row["unit"] == "fraction":
        return f"{v:.2f}"
    return f"{v:.3g}x" if v < 10 else f"{v:.1f}x"


def format_table(result: dict) -> str:
    head = ("row", "result", "reps", "target", "met", "measurement")
    lines = []
    for row in result["rows"]:
        n = str(row["ratio"]["n"]) if "ratio" in row else "-"
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        extra = ""
        if "identical_outputs" in row:
            extra = f"; outputs identical: {row['identical_outputs']}"
        if "peak_mib" in row:
            extra = "; peak MiB " + ", ".join(f"{k} {v:.0f}" for k, v in row["peak_mib"].items())
        if "with_separator_and_prompt_dropout" in row:
            extra = f"; SpeechPrompt's PT (+separator, prompt dropout) / PEFT: " \
                    f"{row['with_separator_and_prompt_dropout']['median']:.3g}x"
        if row["id"].endswith(".params"):
            extra = f"; {row['relation']}"
        if "data_seconds_per_epoch" in row:
            d = row["data_seconds_per_epoch"]
            extra = (f"; data path alone: upstream+quantize {d['on_the_fly']:.2f} s vs reading units "
                     f"{d['cached'] * 1e3:.1f} ms per epoch")
        if "memory_ratio" in row:
            extra = (f"; peak memory bf16 / fp32 {row['memory_ratio']:.2f}x (MiB "
                     + ", ".join(f"{k} {v:.0f}" for k, v in row["peak_mib"].items())
                     + f"); first-step loss differs by {row['loss_rel_diff']:.1e} (relative)")
        if "gflops_per_s" in row:
            extra = "; GFLOP/s " + ", ".join(f"{k} {v:.1f}" for k, v in row["gflops_per_s"].items())
        lines.append((row["id"], format_value(row), n, row["target"] or "-", met, row["what"] + extra))
    widths = [max(len(str(x[i])) for x in lines + [head]) for i in range(5)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head[:5], widths)) + "  " + head[5]]
    out.append("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    for x in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(x[:5], widths)) + "  " + x[5])
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/efficiency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and one repetition (a smoke run: every row, numbers not meaningful)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the full results as JSON here")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the whole run (default 1)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions per comparison "
                   "(default 3; 1 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA peak memory via max_memory_allocated; "
                   "default cpu)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--layers", type=int, default=None, help="LM layers (default 6; 2 with --quick)")
    p.add_argument("--dim", type=int, default=None, help="LM width (default 512; 64 with --quick)")
    p.add_argument("--heads", type=int, default=None, help="LM heads (default 8; 4 with --quick)")
    p.add_argument("--ffn", type=int, default=None, help="LM FFN width (default 2048; 256 with --quick)")
    p.add_argument("--upstream", choices=("base", "tiny"), default=None,
                   help="random HuBERT for the unit-cache row: HuBERT Base shape or the 2x32 test model "
                        "(default base; tiny with --quick)")
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS cross-check of the "
                   "train.asr.memory row")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("reps", "layers", "dim", "heads", "ffn", "upstream")
                 if getattr(args, k) is not None}
    if args.upstream == "tiny" and not args.quick:
        overrides["upstream_layer"] = 1
    if args.no_rss:
        overrides["rss"] = False
    overrides.update(threads=args.threads, device=args.device)
    cfg = BenchConfig.quick_config(**overrides) if args.quick else BenchConfig(**overrides)
    result = run_bench(cfg, args.sections)
    print()
    print(format_table(result))
    print(f"\n{result['lm']}; {cfg.threads} thread(s); load average {result['load_average_start'][0]:.1f} -> "
          f"{result['load_average_end'][0]:.1f}; {result['seconds_total']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
