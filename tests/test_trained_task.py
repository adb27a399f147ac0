"""The trained task (s3prl_speechprompt/trained.py) and the LM reference (lm_ref.py): what a PT / FT-LM run is,
saved and loaded bitwise, rebuilt from runner checkpoints and engine directories as their own front ends decode,
and the one weights fingerprint (dropout irrelevant; the runner's fingerprint of before still accepted)."""
from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import torch

from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest

KS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
DIM = 24


def _old_unitlm_fingerprint(lm) -> str:
    """``UnitLM.fingerprint`` as runner checkpoints stored it before the weights fingerprint (pinned here)."""
    h = hashlib.sha256(repr(lm.cfg.to_dict()).encode())
    for name, t in sorted(lm.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _expert(tiny_ulm_dir, tmp_path, seed=0, **expert):
    """The runner's prompt expert as ``-m inference`` builds it (k-means and verbalizer from ``init_ckpt``), its
    trainable state randomised, and the runner checkpoint it would save: (expert, checkpoint path)."""
    from s3prl_speechprompt.prompt.verbalizer import Verbalizer
    from s3prl_speechprompt.s3prl_plugin.prompt_expert import DownstreamExpert

    torch.manual_seed(seed)
    init = tmp_path / f"init{seed}.ckpt"
    verbalizer = Verbalizer("learnable", {c: (str(i),) for i, c in enumerate(KS)})
    torch.save({"Downstream": {"_extra_state": {"centroids": torch.randn(20, DIM),
                                                "verbalizer": verbalizer.to_dict()}}}, init)
    de = {"task": "ks", "ulm": str(tiny_ulm_dir), "verbalizer": "learnable", "datarc": {"batch_size": 4}, **expert}
    ex = DownstreamExpert(DIM, de, str(tmp_path / f"exp{seed}"), init_ckpt=str(init), mode="inference",
                          device="cpu")
    with torch.no_grad():
        for p in ex.model.trainable_parameters().values():
            p.add_(0.3 * torch.randn_like(p))
    args = argparse.Namespace(upstream="fbank", upstream_ckpt=None, upstream_model_config=None,
                              upstream_feature_selection="hidden_states", upstream_layer_selection=None,
                              upstream_feature_normalize=False, downstream="speechprompt_ks", expdir=str(tmp_path))
    ckpt = tmp_path / f"dev-best{seed}.ckpt"
    torch.save({"Args": args, "Config": {"downstream_expert": de}, "Downstream": ex.state_dict(), "Step": 1}, ckpt)
    return ex, ckpt


def _features(n=6):
    g = torch.Generator().manual_seed(5)
    return [torch.randn(int(torch.randint(8, 30, (1,), generator=g)), DIM, generator=g) for _ in range(n)]


def _served_labels(served, features):
    from s3prl_speechprompt.prompt.decode import decode
    from s3prl_speechprompt.units.prepare import to_units

    sources = [served.dictionary.encode(to_units(served.quantizer, f)) for f in features]
    d = decode(served.model.logits_fn(), sources, served.budget, beam_size=served.trained.decoding.beam_size,
               precision=served.trained.decoding.precision)
    return [served.task.label_string(served.label(g)) for g in d.tokens], d.scores


@pytest.mark.parametrize("expert", [{"prompt": {"prompt_length": 3}}, {"prompt": {"prompt_length": 2, "reparam": 8}},
                                    {"method": "ftlm"}], ids=["pt", "pt_reparam", "ftlm"])
def test_from_runner_checkpoint_decodes_as_the_expert(tiny_ulm_dir, tmp_path, expert):
    from s3prl_speechprompt.trained import TrainedTask

    ex, ckpt = _expert(tiny_ulm_dir, tmp_path, **expert)
    feats = _features()
    with torch.no_grad():
        own = ex.inference(feats, [f"u{i}" for i in range(len(feats))])
    tt = TrainedTask.from_runner_checkpoint(ckpt)
    assert tt.prompt["reparam"] == 0 and tt.trainable_params == ex.model.num_trainable()
    assert tt.stored_params == ex.model.num_stored() and tt.audio.upstream["upstream"] == "fbank"
    got, scores = _served_labels(tt.build(), feats)
    assert got == own
    assert all(s <= 0 for s in scores)
    # the trained task of a directory = the one of its checkpoint, read back bitwise
    tt.save(tmp_path / "run" / "trained_task")
    back = TrainedTask.find(tmp_path / "run")
    _assert_same(back, tt)


def _assert_same(a, b):
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert a.state[k].dtype == b.state[k].dtype and torch.equal(a.state[k], b.state[k]), k
    if b.audio is not None:
        assert torch.equal(a.audio.centroids, b.audio.centroids) and a.audio.upstream == b.audio.upstream
        assert (a.audio.featurizer is None) == (b.audio.featurizer is None)
    else:
        assert a.audio is None
    for f in ("task", "task_options", "method", "lm", "prompt", "verbalizer", "decoding", "trainable_params",
              "stored_params"):
        assert getattr(a, f) == getattr(b, f), f


def test_save_load_roundtrip_is_bitwise_with_featurizer_and_bf16(tiny_ulm_dir, tmp_path):
    from s3prl_speechprompt.trained import AudioUnits, TrainedTask

    _, ckpt = _expert(tiny_ulm_dir, tmp_path)
    tt = TrainedTask.from_runner_checkpoint(ckpt)
    tt.state = {k: v.to(torch.bfloat16) if k == "separator" else v for k, v in tt.state.items()}
    tt.audio = AudioUnits(tt.audio.upstream, tt.audio.centroids, {"weights": torch.randn(3)})
    d = tt.save(tmp_path / "tt")
    assert sorted(p.name for p in d.iterdir()) == ["trained_task.json", "trained_task.pt"]
    meta = json.loads((d / "trained_task.json").read_text())
    assert meta["format"] == "s3prl-speechprompt-trained-task/1" and meta["lm"]["family"] == "gslm"
    back = TrainedTask.load(d)
    _assert_same(back, tt)
    assert torch.equal(back.audio.featurizer["weights"], tt.audio.featurizer["weights"])


def _engine_run(tiny_ulm_dir, tmp_path, method="pt"):
    from s3prl_speechprompt.engine.trainer import TrainConfig, train_prompted

    g = torch.Generator().manual_seed(1)
    for split, n in (("train", 24), ("dev", 8), ("test", 8)):
        write_unit_manifest(tmp_path / f"{split}.tsv", [
            UnitRecord(f"{split}{i}", tuple(str(int(u)) for u in torch.randint(0, 20, (12,), generator=g)),
                       (KS[i % 4],)) for i in range(n)])
    exp = tmp_path / f"engine_{method}"
    train_prompted(tmp_path / "train.tsv", tmp_path / "dev.tsv", tiny_ulm_dir, exp,
                   TrainConfig(task="ks", method=method, max_updates=4, valid_interval=2, threads=1, lr=5e-2),
                   log=lambda *a: None)
    return exp


def test_from_engine_dir_and_the_trained_task_the_engine_writes(tiny_ulm_dir, tmp_path):
    from s3prl_speechprompt.engine.evaluate import evaluate
    from s3prl_speechprompt.trained import TrainedTask

    exp = _engine_run(tiny_ulm_dir, tmp_path)
    old = TrainedTask.from_engine_dir(exp)
    assert old.audio is None and old.task_options == {} and old.decoding.max_new_tokens == 2
    written = TrainedTask.load(exp / "trained_task")
    _assert_same(written, old)
    prompt = torch.load(exp / "prompt.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(prompt[k], written.state[k]) for k in prompt)
    res = evaluate(exp, "test", tmp_path / "test.tsv", log=lambda *a: None)
    # an engine dir from before trained_task/ evaluates the same
    import shutil
    shutil.rmtree(exp / "trained_task")
    assert evaluate(exp, "test", tmp_path / "test.tsv", log=lambda *a: None) == res


def test_find_names_what_is_wrong(tiny_ulm_dir, tmp_path):
    from s3prl_speechprompt.errors import CheckpointError, MissingFileError
    from s3prl_speechprompt.trained import TrainedTask

    with pytest.raises(MissingFileError, match="nope: no such file or directory"):
        TrainedTask.find(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: no trained task here"):
        TrainedTask.find(tmp_path / "empty")
    (tmp_path / "blstm").mkdir()
    (tmp_path / "blstm" / "config.json").write_text(json.dumps({"method": "blstm", "task": "ks"}))
    with pytest.raises(CheckpointError, match="a blstm baseline, not a prompt run"):
        TrainedTask.find(tmp_path / "blstm")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=r"x.ckpt: is a dict with keys \['weights'\], expected an s3prl runner checkpoint"):
        TrainedTask.find(tmp_path / "x.ckpt")
    (tmp_path / "evil.ckpt").write_bytes(b"\x80\x04\x95" + b"not a pickle at all")
    with pytest.raises(CheckpointError, match=r"evil.ckpt: is a plain pickle \(e.g. a joblib km.bin.*\), expected an s3prl runner checkpoint"):
        TrainedTask.find(tmp_path / "evil.ckpt")
    _, ckpt = _expert(tiny_ulm_dir, tmp_path)
    c = torch.load(ckpt, weights_only=False)
    c["Downstream"] = {"_extra_state": {"kind": "linear"}}
    torch.save(c, tmp_path / "linear.ckpt")
    with pytest.raises(CheckpointError, match="a SUPERB linear baseline; predict serves PT / FT-LM"):
        TrainedTask.find(tmp_path / "linear.ckpt")
    d = TrainedTask.from_runner_checkpoint(ckpt).save(tmp_path / "tt")
    meta = json.loads((d / "trained_task.json").read_text())
    (d / "trained_task.json").write_text(json.dumps({**meta, "format": "s3prl-speechprompt-trained-task/9"}))
    with pytest.raises(CheckpointError, match="expected 's3prl-speechprompt-trained-task/1'"):
        TrainedTask.find(d)


def test_one_weights_fingerprint_for_runner_and_engine_dropout_irrelevant(tiny_ulm_dir, tmp_path):
    from s3prl_speechprompt.lm_ref import LMCache, weights_fingerprint
    from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
    from s3prl_speechprompt.ulm.checkpoint import load_ulm

    ex, _ = _expert(tiny_ulm_dir, tmp_path)
    exp = _engine_run(tiny_ulm_dir, tmp_path)
    sha = json.loads((exp / "config.json").read_text())["ulm_sha256"]
    assert ex.lm_fingerprint == sha == LMCache().get(str(tiny_ulm_dir))[2]
    lm, _, _ = load_ulm(tiny_ulm_dir)
    before = weights_fingerprint(lm.state_dict())
    PromptedULM(lm, PromptConfig(method="ftlm", lm_dropout=0.3))
    assert lm.cfg.dropout == 0.3 and weights_fingerprint(lm.state_dict()) == before == sha
    with torch.no_grad():
        lm.decoder.layers[0].fc1.bias.add_(1e-6)
    assert weights_fingerprint(lm.state_dict()) != sha


def test_legacy_runner_fingerprint_is_accepted_other_lms_refused(tiny_ulm_dir, tmp_path):
    from s3prl_speechprompt.errors import LMMismatchError
    from s3prl_speechprompt.lm_ref import legacy_fingerprint_matches
    from s3prl_speechprompt.trained import TrainedTask
    from s3prl_speechprompt.ulm.checkpoint import load_ulm, save_ulm

    ex, ckpt = _expert(tiny_ulm_dir, tmp_path)
    legacy = _old_unitlm_fingerprint(ex.model.lm)           # as the expert computed it: after PromptedULM's dropout
    c = torch.load(ckpt, weights_only=False)
    c["Downstream"]["_extra_state"]["lm_fingerprint"] = legacy
    torch.save(c, tmp_path / "old.ckpt")
    feats = _features(3)
    with torch.no_grad():
        own = ex.inference(feats, ["a", "b", "c"])
    tt = TrainedTask.from_runner_checkpoint(tmp_path / "old.ckpt")
    assert tt.lm.fingerprint == legacy and _served_labels(tt.build(), feats)[0] == own
    ex.load_state_dict(c["Downstream"])                     # the expert (-m evaluate -e old.ckpt) accepts it too
    lm, d, _ = load_ulm(tiny_ulm_dir)
    assert legacy_fingerprint_matches(lm, legacy)           # whatever dropout the LM has now
    with torch.no_grad():
        lm.decoder.embed_tokens.weight.add_(0.01)
    assert not legacy_fingerprint_matches(lm, legacy)
    save_ulm(lm, d, tmp_path / "other_ulm")
    with pytest.raises(LMMismatchError, match=r"trained on the unit LM with fingerprint \w{16}, but \S*other_ulm "
                                              r"\(--ulm\) has fingerprint \w{64}; point --ulm at"):
        tt.build(ulm=str(tmp_path / "other_ulm"))
    c["Downstream"]["_extra_state"]["lm_fingerprint"] = "0" * 16
    with pytest.raises(LMMismatchError, match="trained on a different unit LM"):
        ex.load_state_dict(c["Downstream"])


def test_lm_cache_shares_one_model_per_weights(tiny_ulm_dir, tmp_path):
    import shutil

    from s3prl_speechprompt.lm_ref import FAMILIES, LMCache

    shutil.copytree(tiny_ulm_dir, tmp_path / "copy")
    cache = LMCache()
    a, b = cache.get(str(tiny_ulm_dir)), cache.get(str(tmp_path / "copy"))
    assert a[0] is b[0] and a[2] == b[2] and cache.get(str(tiny_ulm_dir))[0] is a[0]
    assert LMCache.fresh(str(tiny_ulm_dir))[0] is not a[0]
    assert set(FAMILIES) == {"gslm"} and FAMILIES["gslm"].fingerprint(a[0]) == a[2]
