"""Efficiency benchmark (``speechprompt bench``, docs/bench.md): one module per measured thing.

Every comparison is a *ratio measured pair by pair in one process*: the contenders run interleaved
(the order rotates every repetition), each repetition gives one ratio, and the table reports the
median ratio and how many repetitions it came from. Absolute seconds are printed for orientation
only: on a shared machine they move with the load, the ratios much less.

Sections (``speechprompt bench --help`` for the sizes):

1. ``decode``     KV-cached greedy decoding vs the reference's full recomputation (:mod:`.decode`).
2. ``train``      PT vs FT-LM step time and peak memory; PEFT prefix tuning as a peer (:mod:`.train`).
3. ``units``      on-the-fly quantization of upstream features vs precomputed units (:mod:`.units`).
4. ``flops``      achieved FLOP/s of the LM forward vs plain matmuls (:mod:`.flops`).
5. ``precision``  bf16 vs fp32 autocast of the LM: PT / FT-LM step time and peak memory (:mod:`.precision`).

Shared pieces (sizes, timing, memory) live in :mod:`.common`; :mod:`.runner` runs the sections and
formats the table (new benchmarks, e.g. a prompt bank, are one more module registered there).
"""
from s3prl_speechprompt.bench.common import BenchConfig
from s3prl_speechprompt.bench.runner import SECTIONS, format_table, format_value, run_bench
from s3prl_speechprompt.bench.train import rss_child
from s3prl_speechprompt.bench.units import random_hubert

__all__ = ["BenchConfig", "SECTIONS", "format_table", "format_value", "random_hubert", "rss_child", "run_bench"]
