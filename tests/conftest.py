"""Fixtures shared by several test files (plain helper functions are in helpers.py), and the test processes'
thread setting."""
from __future__ import annotations

import os

import pytest

# Test files run in 2 xdist workers on 2 cores and most heavy work is tiny per-utterance ops or subprocesses:
# one thread per process avoids oversubscription, which slows such ops by up to 100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from helpers import SEQ_UNITS, save_random_ulm, seed_offset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ulm_dir(tmp_path_factory):
    """A tiny GSLM-shaped (pre-LN) unit LM saved by our writer in fairseq's format, 20 units."""
    return save_random_ulm(tmp_path_factory.mktemp("tiny_ulm"), 20)


@pytest.fixture(scope="module")
def asr_corpus(tmp_path_factory):
    """A synthetic LibriSpeech (160/24/24 utterances, 8 words) for the ASR tests: (root, summary)."""
    from s3prl_speechprompt.synth.seq_corpora import make_asr

    out = tmp_path_factory.mktemp("synth_asr")
    return out, make_asr(out, seed=seed_offset(), utterances=(160, 24, 24), vocabulary=8, words=(1, 3),
                         speakers=(4, 1, 1), progress=False)


@pytest.fixture(scope="module")
def seq_ulm(tmp_path_factory):
    """A tiny random ``ulm_tiny`` LM over :data:`helpers.SEQ_UNITS` units (the sequence tasks' runner tests)."""
    return save_random_ulm(tmp_path_factory.mktemp("seq_ulm"), SEQ_UNITS, seed=seed_offset())


@pytest.fixture(scope="session")
def tiny_engine_run(tmp_path_factory, tiny_ulm_dir):
    """A `speechprompt train` PT run of 4 updates on the tiny LM (random units, labels a/b): (run dir, dev units)."""
    import random
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny_engine_run")
    rng = random.Random(0)
    for name in ("train", "valid"):
        (root / f"{name}.txt").write_text("".join(
            " ".join(str(rng.randrange(20)) for _ in range(8)) + f" <s> {rng.choice('ab')}\n" for _ in range(16)))
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "train", "--task", "ks", "--train",
                          str(root / "train.txt"), "--valid", str(root / "valid.txt"), "--ulm", str(tiny_ulm_dir),
                          "--max-updates", "4", "--threads", "1", "--out", str(root / "run")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "run", root / "valid.txt"
