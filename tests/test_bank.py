"""The prompt bank: a batch whose rows carry different tasks' prompts equals each task's own batches."""
from __future__ import annotations

import random

import pytest
import torch

from s3prl_speechprompt.prompt.bank import PromptBank
from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prompted import EOS, SEP, PromptConfig, PromptedULM, left_pad
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

VOCAB = 30


def _models():
    """Four tasks on one random LM: prompt lengths 3/16/1/7, with and without separator / learnable head."""
    torch.manual_seed(0)
    lm = UnitLM(ULMConfig.from_arch("ulm_tiny", VOCAB))
    cfgs = [PromptConfig(prompt_length=3),
            PromptConfig(prompt_length=16, learnable_classes=12),
            PromptConfig(prompt_length=1, train_separator=False),
            PromptConfig(prompt_length=7, learnable_classes=5, separator_init="normal")]
    models = []
    for i, cfg in enumerate(cfgs):
        m = PromptedULM(lm, cfg)
        with torch.no_grad():                    # a trained-looking head, not the identity
            if m.verbalizer_head is not None:
                m.verbalizer_head.weight.add_(torch.randn_like(m.verbalizer_head.weight))
        models.append((f"task{i}", m.eval()))
    return lm, models


def _sources(n, seed):
    rng = random.Random(seed)
    return [[rng.randrange(4, VOCAB) for _ in range(rng.randint(3, 20))] for _ in range(n)]


def test_mixed_task_batch_equals_per_task_batches():
    lm, models = _models()
    bank = PromptBank.from_models(models).eval()
    per_task = 5
    sources = {name: _sources(per_task, seed=i) for i, (name, _) in enumerate(models)}
    rows = [(name, s) for name, _ in models for s in sources[name]]
    random.Random(1).shuffle(rows)                # tasks interleaved in the mixed batch
    ids = bank.task_ids([n for n, _ in rows])
    inputs = left_pad([[EOS, *s, SEP, 5, 6] for _, s in rows])
    with torch.no_grad():
        mixed = bank.logits(inputs, ids).log_softmax(-1)
        worst = 0.0
        for name, model in models:
            idx = [i for i, (n, _) in enumerate(rows) if n == name]
            own = model.logits(inputs[idx]).log_softmax(-1)                       # (b, T, n_out)
            ours = mixed[idx][..., :own.size(-1)]
            worst = max(worst, (ours - own).abs().max().item())
            assert torch.isinf(mixed[idx][..., own.size(-1):]).all()           # padded head outputs
    print(f"mixed vs per-task log-prob max abs diff {worst:.2e}")
    assert worst <= 1e-5

    budgets = {"task0": 4, "task1": 2, "task2": 6, "task3": 3}
    mixed = decode(bank.logits_fn(ids), [s for _, s in rows], [budgets[n] for n, _ in rows])
    out, scores, finished = mixed.tokens, mixed.scores, mixed.finished
    for name, model in models:
        idx = [i for i, (n, _) in enumerate(rows) if n == name]
        alone = decode(model.logits_fn(), [rows[i][1] for i in idx], budgets[name])
        own = alone.tokens
        assert [out[i] for i in idx] == own
        assert [finished[i] for i in idx] == alone.finished
        # the score is the log-probability of what was generated (+ </s> when finished), by teacher forcing
        for j, i in enumerate(idx):
            seq = [EOS, *rows[i][1], SEP, *own[j]]
            with torch.no_grad():
                logp = model.logits(torch.tensor([seq])).float().log_softmax(-1)[0]
            gen = own[j] + ([EOS] if finished[i] else [])
            start = len(rows[i][1]) + 1
            ref = sum(logp[start + k, t].item() for k, t in enumerate(gen))
            assert scores[i] == pytest.approx(ref, abs=1e-4)


def test_bank_refuses_models_on_different_lms():
    _, models = _models()
    torch.manual_seed(5)
    other = PromptedULM(UnitLM(ULMConfig.from_arch("ulm_tiny", VOCAB)), PromptConfig(prompt_length=2))
    with pytest.raises(ValueError, match="runs on another unit LM .* make one bank per LM"):
        PromptBank.from_models([models[0], ("other", other)])


def test_prefix_padding_shape_is_checked():
    lm, _ = _models()
    k = torch.zeros(2, 3, lm.cfg.embed_dim)
    with pytest.raises(ValueError, match=r"prefix_padding: expected shape \(2, 3\)"):
        lm(torch.tensor([[EOS, 5], [EOS, 6]]), prefix_kv=[(k, k)] * lm.num_layers,
           prefix_padding=torch.zeros(2, 4, dtype=torch.bool))
