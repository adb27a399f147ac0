"""Runs the sections in order, collects their rows, and formats the table.

A section is one module with a ``bench_*`` function returning a row dict (or a list of them) with at least
``id``, ``section``, ``what``, ``value``, ``unit``, ``target``, ``met``. To add one (e.g. a prompt-bank
benchmark): write ``bench/<name>.py``, add its name to :data:`SECTIONS` and a branch to :func:`run_bench`,
and its extra columns (if any) to :func:`format_table`.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List

import torch

from s3prl_speechprompt.bench.common import BenchConfig, make_lm
from s3prl_speechprompt.bench.decode import bench_decode
from s3prl_speechprompt.bench.flops import bench_flops
from s3prl_speechprompt.bench.precision import bench_precision
from s3prl_speechprompt.bench.train import bench_rss, bench_train
from s3prl_speechprompt.bench.units import bench_units

SECTIONS = ("decode", "train", "units", "flops", "precision")


def run_bench(cfg: BenchConfig, sections=SECTIONS, log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(cfg.threads)
    lm = make_lm(cfg)
    info = {"config": asdict(cfg), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "lm_parameters": lm.num_parameters(), "load_average_start": os.getloadavg(),
            "lm": f"{cfg.layers} layers, d={cfg.dim}, {cfg.heads} heads, FFN {cfg.ffn}, vocab {cfg.vocab} "
                  f"({lm.num_parameters() / 1e6:.2f}M parameters)"}
    del lm
    log(f"speechprompt bench: LM {info['lm']}; {cfg.threads} thread(s); {cfg.reps} interleaved repetition(s); "
        f"device {cfg.device}")
    rows: List[dict] = []
    t_start = time.perf_counter()

    def add(new):
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            log(f"  {row['id']:<20} {format_value(row):>10}   {row['what']}")

    if "decode" in sections:
        for regime in ("ks", "asr"):
            add(bench_decode(cfg, regime))
    if "train" in sections:
        for regime in ("ks", "asr"):
            add(bench_train(cfg, regime))
        if cfg.rss and not cfg.device.startswith("cuda") and Path("/proc/self/status").exists():
            rss = bench_rss(cfg)
            for row in rows:
                if row["id"] == "train.asr.memory":
                    row["rss_cross_check"] = rss
    if "units" in sections:
        add(bench_units(cfg))
    if "flops" in sections:
        for regime in ("ks", "asr"):
            add(bench_flops(cfg, regime))
    if "precision" in sections:
        for regime in ("ks", "asr"):
            add(bench_precision(cfg, regime))
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
