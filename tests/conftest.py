"""Shared fixtures: fairseq as a test oracle, peer data location, tiny unit LMs."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Test files run in 2 xdist workers on 2 cores and most heavy work is tiny per-utterance ops or subprocesses:
# one thread per process avoids oversubscription, which slows such ops by up to 100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
PEER_DATA = REPO.parent / "shared" / "peer-data"

# fairseq 0.12 on numpy 2 needs np.compat.long; patched inside the oracle's own process only
_FAIRSEQ_TRAIN = """
import sys, types, numpy as np
np.compat = types.SimpleNamespace(long=np.int64)
from fairseq_cli.train import cli_main
sys.argv[0] = 'fairseq-train'
cli_main()
"""


def peer_dir(name: str) -> Path:
    d = PEER_DATA / name
    if not d.is_dir():
        pytest.skip(f"peer data {d} is absent (it lives in ../shared next to the repository)")
    return d


def seed_offset() -> int:
    """``SPEECHPROMPT_TEST_SEED`` (default 0), added to every seed of the outcome tests (synthetic corpora, k-means,
    unit LMs, the runner's ``--seed``): benchmarks/outcome_spread.py reruns them under other seeds to measure how
    far each asserted outcome moves. 0 reproduces the seeds the thresholds were set with."""
    return int(os.environ.get("SPEECHPROMPT_TEST_SEED", "0"))


def thread_count() -> int:
    """``SPEECHPROMPT_TEST_THREADS`` (default 1): torch/OMP threads of the outcome tests' training, in process and in
    runner subprocesses (another thread count changes float summation order, as another machine does)."""
    return int(os.environ.get("SPEECHPROMPT_TEST_THREADS", "1"))


def runner_seed_args() -> list:
    """``--seed`` for s3prl's runner: its own default (1337) shifted by :func:`seed_offset`."""
    return ["--seed", str(1337 + seed_offset())]


def record_outcome(name: str, **metrics) -> None:
    """Print an outcome test's measured figures and, if ``SPEECHPROMPT_OUTCOMES`` names a file, append them there
    as one JSON line (with the seed offset and thread count) for benchmarks/outcome_spread.py to tabulate."""
    print(f"outcome {name}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    path = os.environ.get("SPEECHPROMPT_OUTCOMES")
    if path:
        row = {"test": name, "seed": seed_offset(), "threads": thread_count(),
               "cpu": os.environ.get("ATEN_CPU_CAPABILITY", "default"), "metrics": metrics}
        with open(path, "a") as f:           # one short append per line: safe across xdist workers
            f.write(json.dumps(row) + "\n")


def runner_env() -> dict:
    """Environment for runner subprocesses: one OMP thread (tiny per-utterance ops only add contention
    on 2 cores; :func:`thread_count` to measure another count), no warnings."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(thread_count())
    env["PYTHONWARNINGS"] = "ignore"
    return env

def fairseq_env() -> dict:
    env = dict(os.environ)
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"   # fairseq 0.12 calls torch.load without weights_only
    env["PYTHONWARNINGS"] = "ignore"
    return env

def require_fairseq():
    try:
        import fairseq  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"fairseq oracle not importable ({e}); install fairseq-fixed==0.12.3.1 (see .ci/run)")

def write_unit_corpus(path: Path, n: int, n_units: int = 20, seed: int = 0, max_len: int = 30) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(" ".join(str(rng.randrange(n_units)) for _ in range(rng.randint(5, max_len))) + "\n")

def train_fairseq_lm(workdir: Path, *extra: str, n_units: int = 20) -> Path:
    """Preprocess a random unit corpus and train a tiny transformer_lm for 3 updates with fairseq's CLI."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_unit_corpus(workdir / "train.txt", 200, n_units)
    (workdir / "dict.txt").write_text("".join(f"{u} 1\n" for u in range(n_units)))
    py, env = sys.executable, fairseq_env()
    subprocess.run([py, "-m", "fairseq_cli.preprocess", "--only-source", "--srcdict", str(workdir / "dict.txt"),
                    "--trainpref", str(workdir / "train.txt"), "--destdir", str(workdir / "bin"), "--workers", "1"],
                   check=True, env=env, capture_output=True)
    ck = workdir / "ck"
    subprocess.run([py, "-c", _FAIRSEQ_TRAIN, str(workdir / "bin"), "--task", "language_modeling",
                    "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
                    "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
                    "--decoder-attention-heads", "4", "--share-decoder-input-output-embed",
                    "--tokens-per-sample", "128", "--sample-break-mode", "eos", "--max-tokens", "512",
                    "--optimizer", "adam", "--lr", "1e-3", "--max-update", "3", "--save-dir", str(ck),
                    "--no-epoch-checkpoints", "--cpu", "--log-format", "simple", "--disable-validation", *extra],
                   check=True, env=env, capture_output=True)
    (ck / "dict.txt").write_text((workdir / "bin" / "dict.txt").read_text())
    return ck

@pytest.fixture(scope="session")
def tiny_ulm_dir(tmp_path_factory):
    """A tiny GSLM-shaped (pre-LN) unit LM saved by our writer in fairseq's format, 20 units."""
    import torch

    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    torch.manual_seed(0)
    d = Dictionary([str(u) for u in range(20)])
    model = UnitLM(ULMConfig.from_arch("ulm_tiny", len(d)))
    out = tmp_path_factory.mktemp("tiny_ulm")
    save_ulm(model, d, out)
    return out
