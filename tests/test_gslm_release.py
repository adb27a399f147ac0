"""The loading path of GSLM's released unit LM, fast: a tarball laid out like ``hubert100_lm.tgz`` holding a
fairseq-0.10-era checkpoint (``args`` Namespace, no ``cfg``, fp16 weights) with a tiny model, placed in the
s3prl cache under the name ``ulm: hubert100`` resolves to, then resolved and loaded by the real code.
The full-size run of the same container is benchmarks/gslm_dry_run.py (docs/bench.md)."""
from __future__ import annotations

import argparse
import importlib.util
import tarfile
from pathlib import Path

import torch

from s3prl_speechprompt.ulm.checkpoint import config_from_hparams, load_ulm
from s3prl_speechprompt.ulm.model import UnitLM
from s3prl_speechprompt.ulm.pretrained import ULM_URLS, cached_path, resolve_ulm

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gslm_dry_run.py"


def _dry_run_module():
    spec = importlib.util.spec_from_file_location("gslm_dry_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_shaped_tarball_resolves_and_loads_from_the_s3prl_cache(tmp_path, monkeypatch):
    dry = _dry_run_module()
    cache = tmp_path / "cache"
    monkeypatch.setenv("S3PRL_CACHE", str(cache))
    tgz = dry.build_release_tarball(tmp_path / "hubert100_lm.tgz", "tiny")
    with tarfile.open(tgz) as tar:
        assert sorted(tar.getnames()) == ["hubert100_lm", "hubert100_lm/checkpoint_best.pt", "hubert100_lm/dict.txt"]
    placed = dry.place_in_cache(tgz, cache)
    assert placed == cached_path(ULM_URLS["hubert100"])

    path = resolve_ulm("hubert100")                                   # extracts next to the tarball
    ckpt = path / "checkpoint_best.pt"
    with torch.serialization.safe_globals([argparse.Namespace]):     # the release loads on the weights-only path
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(raw["args"], argparse.Namespace) and "cfg" not in raw
    assert raw["model"]["decoder.embed_tokens.weight"].dtype == torch.float16

    lm, dictionary, info = load_ulm(path)
    assert len(dictionary) == 104 and dictionary.indices["0"] == 4
    assert (info["epoch"], info["num_updates"]) == (40, 100000)
    c = lm.cfg
    assert (c.arch, c.embed_dim, c.ffn_dim, c.layers, c.heads) == ("transformer_lm", 64, 256, 2, 4)
    assert (c.dropout, c.attention_dropout, c.max_positions, c.normalize_before, c.final_norm) == \
        (0.1, 0.1, 3072, True, True)
    want = dry.release_state("tiny")["model"]
    for name, p in lm.state_dict().items():
        assert p.dtype == torch.float32, name                         # fp16 release weights, fp32 parameters
        assert torch.equal(p, want[name].float()), name
    assert resolve_ulm("hubert100") == path                           # second resolve: no re-extraction

    # the full-size container's args describe GSLM's transformer_lm_big exactly (built on the meta device)
    cfg = config_from_hparams(vars(dry.release_args("big")), 104)
    with torch.device("meta"):
        assert UnitLM(cfg).num_parameters() == dry.GSLM_PARAMS == 151_263_232
