"""Synthetic inputs for the audio benchmarks, so nothing is downloaded: tone-plus-noise clips and a randomly
initialised HuBERT in s3prl's converted ``hubert_local`` checkpoint format (also used by benchmarks/gpu_smoke.py
and the runner tests)."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import List

import torch

SAMPLE_RATE = 16000


def tones(count: int, seconds: float, generator: torch.Generator) -> List[torch.Tensor]:
    """``count`` float32 clips of a few gliding tones + noise (so frames, and therefore units, differ)."""
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    out = []
    for _ in range(count):
        f = 100 + 400 * torch.rand(3, generator=generator)
        w = sum(torch.sin(2 * math.pi * fi * t * (1 + 0.3 * t)) for fi in f) / 3
        out.append((w + 0.05 * torch.randn(n, generator=generator)).clamp(-1, 1))
    return out


def random_hubert(path: Path, size: str) -> Path:
    """A randomly initialised HuBERT in s3prl's converted ``hubert_local`` checkpoint format: ``base`` is HuBERT
    Base's shape (12 x 768, FFN 3072, 512-channel CNN), ``tiny`` a 2 x 32 model for tests and smoke runs."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    if size == "tiny":
        model_cfg = HubertConfig(label_rate=50, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                 encoder_attention_heads=2, final_dim=16,
                                 conv_feature_layers="[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2")
    elif size == "base":
        model_cfg = HubertConfig(label_rate=50)
    else:
        raise ValueError(f"upstream must be 'tiny' or 'base', got {size!r}")
    task_cfg = HubertPretrainingConfig(label_rate=50)
    torch.manual_seed(0)
    symbols = [list(map(str, range(10)))]
    model = HubertModel(model_cfg, task_cfg, symbols)
    torch.save({"task_cfg": asdict(task_cfg), "model_cfg": asdict(model_cfg), "model_weight": model.state_dict(),
                "dictionaries_symbols": symbols}, path)
    return path
