"""Measurement pieces of the benchmarks in ``benchmarks/`` (docs/bench.md); not part of the installed package.

One module per measured thing of ``benchmarks/efficiency.py``: :mod:`.decode` (KV-cached decoding vs full
recomputation), :mod:`.train` (PT vs FT-LM, PEFT as a peer), :mod:`.units` (on-the-fly vs precomputed units),
:mod:`.flops` (LM forward vs plain matmuls), :mod:`.precision` (bf16 vs fp32). Shared by every benchmark:
:mod:`.common` (sizes, interleaved timing and ratios, memory) and :mod:`.audio` (synthetic clips, a random HuBERT).

Scripts in ``benchmarks/`` import it as ``measure`` (their folder is ``sys.path[0]``); tests import it as
``benchmarks.measure`` from the repository root.
"""
from .audio import random_hubert, tones
from .common import BenchConfig, LMShape, peak_rss_mib, reset_peak_rss

__all__ = ["BenchConfig", "LMShape", "peak_rss_mib", "random_hubert", "reset_peak_rss", "tones"]
