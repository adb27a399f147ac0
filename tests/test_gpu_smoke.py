"""benchmarks/gpu_smoke.py on CPU at tiny size: KS PT and FT-LM through s3prl's runner with a random
hubert_local upstream, fp32 and bf16; the script itself checks that each run's training loss fell."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import runner_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"


def test_gpu_smoke_runs_on_cpu_at_tiny_size(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--size", "tiny", "--steps", "20",
                          "--out", str(tmp_path)], capture_output=True, text=True, env=runner_env(), timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    results = {r["name"]: r for r in json.loads((tmp_path / "gpu_smoke.json").read_text())}
    assert set(results) == {"pt_fp32", "pt_bf16", "ftlm_fp32", "ftlm_bf16"}
    for name, r in results.items():
        assert r["fell"] and r["peak_mib"] > 0, (name, r)
        assert f"\n{name} " in out.stdout
    cfg = (tmp_path / "pt_bf16.yaml").read_text()
    assert "precision: bf16" in cfg and "hubert_local" in json.dumps(json.loads((tmp_path / "runs.json").read_text()))
