"""The unit LM against fairseq itself: checkpoints both ways, log-probs, eras, errors."""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import fairseq_env, require_fairseq, train_fairseq_lm
from s3prl_speechprompt.ulm.checkpoint import CheckpointError, load_ulm, save_ulm
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.ulm.model import KVCache, ULMConfig, UnitLM

TOKENS = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 0, 11, 12], [2, 5, 6, 7, 9, 4, 1, 1, 1, 1]])


def _fairseq_logprobs(ckpt, tokens, data=None):
    from fairseq import checkpoint_utils
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(data)} if data else None)
    with torch.no_grad():
        return models[0].eval()(tokens)[0].log_softmax(-1)


@pytest.fixture(scope="module")
def fairseq_ckpts(tmp_path_factory):
    require_fairseq()
    import os
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"   # for fairseq's own torch.load in this process
    root = tmp_path_factory.mktemp("fairseq")
    return {"post_ln": train_fairseq_lm(root / "post"),
            "pre_ln": train_fairseq_lm(root / "pre", "--decoder-normalize-before")}


@pytest.mark.parametrize("kind", ["post_ln", "pre_ln"])
def test_fairseq_trained_checkpoint_logprob_parity(fairseq_ckpts, kind, tmp_path):
    ck = fairseq_ckpts[kind]
    ours, dictionary, info = load_ulm(ck)
    assert ours.cfg.normalize_before == (kind == "pre_ln")
    assert ours.cfg.final_norm == (kind == "pre_ln")
    assert info["num_updates"] == 3
    ref = _fairseq_logprobs(ck / "checkpoint_last.pt", TOKENS, ck)
    with torch.no_grad():
        got = ours(TOKENS).log_softmax(-1)
    mask = TOKENS.ne(1)
    assert (got - ref)[mask].abs().max().item() <= 1e-5
    # and the other way: what we save, fairseq loads and computes the same
    save_ulm(ours, dictionary, tmp_path / "ours")
    back = _fairseq_logprobs(tmp_path / "ours" / "checkpoint_best.pt", TOKENS)
    assert (back - got)[mask].abs().max().item() <= 1e-5
    assert (tmp_path / "ours" / "dict.txt").read_text() == (ck / "dict.txt").read_text()


def test_our_pre_ln_model_loads_in_fairseq_with_same_outputs(tiny_ulm_dir):
    require_fairseq()
    import os
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    ours, _, _ = load_ulm(tiny_ulm_dir)
    with torch.no_grad():
        got = ours(TOKENS).log_softmax(-1)
    ref = _fairseq_logprobs(tiny_ulm_dir / "checkpoint_best.pt", TOKENS)
    assert (got - ref)[TOKENS.ne(1)].abs().max().item() <= 1e-5


def test_transformer_lm_big_has_gslm_parameter_count():
    with torch.device("meta"):
        model = UnitLM(ULMConfig.from_arch("transformer_lm_big", vocab_size=104))
    assert model.num_parameters() == 151_263_232


def _legacy_containers(ck, tmp_path):
    """Re-pack a fairseq-trained checkpoint into the two older container eras."""
    state = torch.load(ck / "checkpoint_last.pt", weights_only=False)
    model_cfg = state["cfg"]["model"]
    args = argparse.Namespace(**{k: v for k, v in model_cfg.items() if k != "_name"},
                              arch="transformer_lm", task="language_modeling", data="/nonexistent")
    old = dict(state, args=args, cfg=None)
    # era 1 weights: legacy key names fairseq's upgrade handles
    sd = dict(state["model"])
    for i in range(2):
        for j, name in ((0, "self_attn_layer_norm"), (2, "final_layer_norm")):
            for p in ("weight", "bias"):
                sd[f"decoder.layers.{i}.layer_norms.{j}.{p}"] = sd.pop(f"decoder.layers.{i}.{name}.{p}")
        for p in ("weight", "bias"):
            sd[f"decoder.layers.{i}.self_attn.in_proj_{p}"] = torch.cat(
                [sd.pop(f"decoder.layers.{i}.self_attn.{n}_proj.{p}") for n in ("q", "k", "v")])
    sd.pop("decoder.output_projection.weight")
    old["model"] = sd
    (tmp_path / "args_era").mkdir()
    torch.save(old, tmp_path / "args_era" / "checkpoint_best.pt")
    (tmp_path / "args_era" / "dict.txt").write_text((ck / "dict.txt").read_text())
    # era 2: cfg as an OmegaConf DictConfig holding a real fairseq ChoiceEnum member
    from fairseq.dataclass.constants import DDP_BACKEND_CHOICES
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"model": dict(model_cfg), "task": {"_name": "language_modeling"}},
                           flags={"allow_objects": True})
    member = DDP_BACKEND_CHOICES.c10d
    cfg.common = {"ddp_backend": member}
    enum_era = dict(state, cfg=cfg)
    (tmp_path / "enum_era").mkdir()
    # fairseq builds its ChoiceEnum classes dynamically; make the member pickle by the module-level name
    # it is reachable under, as checkpoints of that era reference it
    cls = type(member)
    saved = cls.__qualname__
    cls.__qualname__ = "DDP_BACKEND_CHOICES"
    try:
        torch.save(enum_era, tmp_path / "enum_era" / "checkpoint_best.pt")
    finally:
        cls.__qualname__ = saved
    (tmp_path / "enum_era" / "dict.txt").write_text((ck / "dict.txt").read_text())


def test_older_container_eras_load_without_fairseq(fairseq_ckpts, tmp_path):
    ck = fairseq_ckpts["pre_ln"]
    _legacy_containers(ck, tmp_path)
    ref, _, _ = load_ulm(ck)
    with torch.no_grad():
        expected = ref(TOKENS)
    torch.save(expected, tmp_path / "expected.pt")
    # a fresh interpreter in which `import fairseq` fails, as on a user's machine
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules['fairseq'] = None
        from s3prl_speechprompt.ulm.checkpoint import load_ulm
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        for era in ('args_era', 'enum_era'):
            model, d, info = load_ulm({str(tmp_path)!r} + '/' + era)
            with torch.no_grad():
                diff = (model(torch.tensor({TOKENS.tolist()})) - expected).abs().max().item()
            assert diff <= 1e-5, (era, diff)
            print(era, 'ok', diff)
    """)
    env = fairseq_env()
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "args_era ok" in out.stdout and "enum_era ok" in out.stdout


def test_clear_errors(tiny_ulm_dir, tmp_path):
    import shutil
    bare = tmp_path / "no_dict"
    bare.mkdir()
    shutil.copy(tiny_ulm_dir / "checkpoint_best.pt", bare)
    with pytest.raises(FileNotFoundError, match=r"dict\.txt: missing"):
        load_ulm(bare)
    (bare / "dict.txt").write_text("".join(f"{u} 1\n" for u in range(30)))
    with pytest.raises(CheckpointError, match="30 symbols .* 20 rows|34\\) but the embedding .* 24 rows"):
        load_ulm(bare)
    (bare / "dict.txt").write_text((tiny_ulm_dir / "dict.txt").read_text())
    state = torch.load(bare / "checkpoint_best.pt", weights_only=False)
    state["cfg"]["model"]["_name"] = "transformer_lm_mystery"
    torch.save(state, bare / "checkpoint_best.pt")
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer_lm_mystery'"):
        load_ulm(bare)
    (bare / "checkpoint_best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint_best.pt: is a text file, not a PyTorch file; expected a fairseq unit-LM"):
        load_ulm(bare)


def test_kv_cache_and_left_padding_match_full_forward():
    torch.manual_seed(0)
    model = UnitLM(ULMConfig.from_arch("ulm_tiny", 24)).eval()
    full_tokens = torch.tensor([[2, 5, 6, 7, 8, 9, 10], [1, 1, 2, 5, 6, 7, 9]])   # row 2 left padded
    with torch.no_grad():
        full = model(full_tokens)
        unpadded = model(full_tokens[1:, 2:])
        cache = KVCache()
        parts = [model(full_tokens[:, :4], cache=cache)]
        for t in range(4, 7):
            parts.append(model(full_tokens[:, t:t + 1], cache=cache))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert torch.allclose(full[1, 2:], unpadded[0], atol=1e-5)


def test_dictionary_roundtrip_and_errors(tmp_path):
    p = tmp_path / "dict.txt"
    p.write_text("61 19403763\n97 18692018\n8 17973242 #fairseq:overwrite\n")
    d = Dictionary.load(p)
    assert d.units == ["61", "97", "8"] and d.index("61") == 4 and d.index("8") == 6
    with pytest.raises(KeyError, match="'5' is not in the LM dictionary"):
        d.encode(["61", "5"])
    d.save(tmp_path / "out.txt")
    assert Dictionary.load(tmp_path / "out.txt") == d
    p.write_text("61\n")
    with pytest.raises(ValueError, match=r"dict.txt:1: expected '<symbol> <count>'"):
        Dictionary.load(p)
