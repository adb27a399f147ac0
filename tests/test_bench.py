"""`python benchmarks/efficiency.py --quick` smoke test (every row is emitted; no timing assertions), and the
preallocated KV cache the benchmark motivated."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from s3prl_speechprompt.ulm.model import KVCache, ULMConfig, UnitLM

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "efficiency.py"
ROWS = ["decode.ks", "decode.asr", "train.ks.time", "train.ks.memory", "peft.ks.time", "peft.ks.params",
        "train.asr.time", "train.asr.memory", "peft.asr.time", "peft.asr.params", "units.epoch",
        "flops.ks", "flops.asr", "precision.ks.pt", "precision.ks.ftlm", "precision.asr.pt", "precision.asr.ftlm"]


def test_bench_quick_emits_every_row(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    table = res.stdout[res.stdout.index("row "):]
    for row in ROWS:
        assert f"\n{row} " in table, (row, table)
    result = json.loads(out.read_text())
    assert [r["id"] for r in result["rows"]] == ROWS
    assert result["threads"] == 1
    rows = {r["id"]: r for r in result["rows"]}
    # correctness parts of the benchmark (not timings): identical decoding, full budgets, PEFT's prefix size
    for regime in ("ks", "asr"):
        assert rows[f"decode.{regime}"]["identical_outputs"]
        assert rows[f"peft.{regime}.params"]["met"]
    cfg = result["config"]
    assert rows["decode.asr"]["generated_lengths"] == [cfg["asr_label"] + 1]
    for row in result["rows"]:
        assert row["value"] > 0
    for regime in ("ks", "asr"):        # bf16 autocast leaves every trainable tensor and Adam state in fp32
        assert rows[f"precision.{regime}.pt"]["trainable_dtypes"] == ["torch.float32"]


def test_kv_cache_growth_and_reorder_match_full_forward():
    """Decoding past the cache's initial capacity, with prefix K/V and a row reorder, equals full forwards."""
    torch.manual_seed(0)
    model = UnitLM(ULMConfig.from_arch("ulm_tiny", 30)).eval()
    prefix = [(torch.randn(3, 64), torch.randn(3, 64)) for _ in range(model.num_layers)]
    tokens = torch.randint(4, 30, (2, 8 + 2 * KVCache.MIN_SPARE))
    tokens[1, :3] = 1                                                   # left padding
    with torch.no_grad():
        full = model(tokens, prefix_kv=prefix)
        cache = KVCache()
        parts = [model(tokens[:, :8], cache=cache, prefix_kv=prefix)]
        for t in range(8, tokens.size(1)):
            parts.append(model(tokens[:, t:t + 1], cache=cache))
        assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
        assert cache.keys[0].shape[2] == 3 + tokens.size(1)
        cache.reorder(torch.tensor([1, 1]))
        nxt = torch.tensor([[5], [5]])
        step = model(nxt, cache=cache)
        ref = model(torch.cat([tokens[[1, 1]], nxt], 1), prefix_kv=prefix)[:, -1:]
    assert torch.allclose(step, ref, atol=1e-5)
