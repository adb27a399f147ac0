"""Row 5: achieved FLOP/s of the LM forward at batch 32 vs plain torch.mm/bmm of the same shapes."""
from __future__ import annotations

import math
from typing import List

import torch

from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM, build_batch

from .common import BenchConfig, interleaved, make_lm, median_s, random_rows, ratio


def lm_matmul_shapes(cfg: BenchConfig, B: int, T: int, L: int) -> List[tuple]:
    """The matmuls of one prompted-LM forward: ("mm", m, k, n) or ("bmm", b, m, k, n)."""
    d, f, H = cfg.dim, cfg.ffn, cfg.heads
    hd, S, N = d // H, L + T, B * T
    # q, k, v; the L prefix k/v inputs through k/v_proj count once (their projection is the same for every row)
    layer = [("mm", N, d, d)] * 3 + [("mm", L, d, d)] * 2 + [
        ("bmm", B * H, T, hd, S), ("bmm", B * H, T, S, hd),          # scores, weighted values (unmasked count)
        ("mm", N, d, d), ("mm", N, d, f), ("mm", N, f, d)]           # out_proj, fc1, fc2
    return layer * cfg.layers + [("mm", N, d, cfg.vocab)]             # tied output projection


def shape_flops(shapes) -> int:
    return sum(2 * math.prod(s[1:]) for s in shapes)


def bench_flops(cfg: BenchConfig, regime: str) -> dict:
    src_len, lab_len, L = ((cfg.asr_src, cfg.asr_label, cfg.asr_prompt) if regime == "asr"
                           else (cfg.ks_src, cfg.ks_label, cfg.ks_prompt))
    B = cfg.flops_batch
    model = PromptedULM(make_lm(cfg), PromptConfig(method="pt", prompt_length=L)).to(cfg.device).eval()
    inputs, _ = build_batch(random_rows(cfg, B, src_len, 31), random_rows(cfg, B, lab_len, 32), cfg.device)
    T = inputs.size(1)
    shapes = lm_matmul_shapes(cfg, B, T, L)
    flops = shape_flops(shapes)
    g = torch.Generator(device=cfg.device).manual_seed(0)
    operands = {}
    for s in set(shapes):
        a_shape, b_shape = ((s[1], s[2]), (s[2], s[3])) if s[0] == "mm" else ((s[1], s[2], s[3]), (s[1], s[3], s[4]))
        operands[s] = (torch.randn(a_shape, generator=g, device=cfg.device),
                       torch.randn(b_shape, generator=g, device=cfg.device))

    @torch.no_grad()
    def forward():
        model.logits(inputs)

    def matmuls():
        for s in shapes:
            a, b = operands[s]
            (torch.mm if s[0] == "mm" else torch.bmm)(a, b)

    forward()
    matmuls()
    times = interleaved({"forward": forward, "matmuls": matmuls}, cfg.reps, cfg.device)
    r = ratio(times, "matmuls", "forward")                      # = achieved FLOP/s / matmul FLOP/s
    secs = median_s(times)
    return {"id": f"flops.{regime}", "section": "flops",
            "what": f"{regime.upper()} B={B} x T={T}, L={L}: LM forward FLOP/s / torch.mm FLOP/s (same shapes)",
            "value": r["median"], "unit": "fraction", "ratio": r, "seconds": secs, "gflop": flops / 1e9,
            "gflops_per_s": {k: flops / v / 1e9 for k, v in secs.items()},
            "target": ">= 0.5", "met": r["median"] >= 0.5}
