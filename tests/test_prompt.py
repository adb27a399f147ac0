"""Deep prompts equal SpeechPrompt's K/V-input substitution; decoding, loss and freezing rules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prompted import EOS, SEP, PromptConfig, PromptedULM
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM, sinusoidal_positions


def _tiny_lm(seed=0, vocab=24, arch="ulm_tiny"):
    torch.manual_seed(seed)
    return UnitLM(ULMConfig.from_arch(arch, vocab))


def reference_substitution_forward(lm: UnitLM, tokens, sep_vec, keys, values):
    """SpeechPrompt's formulation, written independently: L dummy positions in front of the sequence;
    at every layer the key/value *inputs* at those positions are overwritten (after the pre-attention
    LayerNorm) and attention runs through torch's fused multi-head path as fairseq's does."""
    cfg = lm.cfg
    B, T = tokens.shape
    L = keys.size(1)
    emb = lm.decoder.embed_tokens(tokens)
    emb = torch.where(tokens.eq(SEP).unsqueeze(-1), sep_vec, emb)
    pos = torch.arange(T).unsqueeze(0).expand(B, T) + cfg.padding_idx + 1
    x = emb * cfg.embed_dim ** 0.5 + sinusoidal_positions(pos, cfg.embed_dim, cfg.padding_idx)
    x = torch.cat([torch.zeros(B, L, cfg.embed_dim), x], 1).transpose(0, 1)          # (L+T, B, C)
    causal = torch.triu(torch.full((L + T, L + T), float("-inf")), 1)
    for i, layer in enumerate(lm.decoder.layers):
        a = layer.self_attn
        h = layer.self_attn_layer_norm(x)
        k_in, v_in = h.clone(), h.clone()
        k_in[:L] = keys[i].unsqueeze(1)
        v_in[:L] = values[i].unsqueeze(1)
        att, _ = F.multi_head_attention_forward(
            h, k_in, v_in, cfg.embed_dim, cfg.heads, torch.empty([0]),
            torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]), None, None, False, 0.0,
            a.out_proj.weight, a.out_proj.bias, training=False, need_weights=False, attn_mask=causal,
            use_separate_proj_weight=True, q_proj_weight=a.q_proj.weight, k_proj_weight=a.k_proj.weight,
            v_proj_weight=a.v_proj.weight)
        x = x + att
        x = x + layer.fc2(F.relu(layer.fc1(layer.final_layer_norm(x))))
    x = lm.decoder.layer_norm(x).transpose(0, 1)[:, L:]
    return x @ lm.decoder.embed_tokens.weight.T


def test_prefix_kv_equals_kv_input_substitution():
    lm = _tiny_lm()
    model = PromptedULM(lm, PromptConfig(prompt_length=4, prompt_dropout=0.0)).eval()
    tokens = torch.tensor([[EOS, 5, 6, 7, 8, 9, SEP, 12], [EOS, 9, 9, 4, 5, 6, SEP, 13]])
    with torch.no_grad():
        ours = model.logits(tokens)
        ref = reference_substitution_forward(lm, tokens, model.separator, model.deep_prompt.key,
                                             model.deep_prompt.value)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_input_prompt_gets_no_gradient_when_deep_prompts_are_on():
    model = PromptedULM(_tiny_lm(), PromptConfig(prompt_length=3, input_prompt=True, prompt_dropout=0.0))
    inputs = torch.tensor([[EOS, 5, 6, 7, SEP, 12]])
    targets = torch.tensor([[5, 6, 7, SEP, 12, EOS]])
    model.loss(inputs, targets).backward()
    assert model.input_prompt.grad is None or model.input_prompt.grad.abs().max() == 0
    assert model.deep_prompt.key.grad.abs().max() > 0 and model.separator.grad.abs().max() > 0


def test_frozen_lm_gets_no_grad_and_is_not_trained():
    model = PromptedULM(_tiny_lm(), PromptConfig(prompt_length=3))
    trainable = model.trainable_parameters()
    assert set(trainable) == {"deep_prompt.key", "deep_prompt.value", "separator"}
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    before = {n: p.clone() for n, p in model.lm.named_parameters()}
    inputs = torch.tensor([[EOS, 5, 6, 7, SEP, 12], [EOS, 8, 9, SEP, 13, 1]])
    targets = torch.tensor([[5, 6, 7, SEP, 12, EOS], [8, 9, SEP, 13, EOS, 1]])
    model.train()
    model.loss(inputs, targets).backward()
    opt.step()
    assert all(p.grad is None for p in model.lm.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.lm.named_parameters())
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in model.lm.parameters()}


@pytest.mark.parametrize("L", [3, 6])
def test_trainable_count_matches_the_paper_formula(L):
    with torch.device("meta"):
        lm = UnitLM(ULMConfig.from_arch("transformer_lm_big", 104))
        paper = PromptedULM(lm, PromptConfig(prompt_length=L, input_prompt=True))
        effective = PromptedULM(UnitLM(ULMConfig.from_arch("transformer_lm_big", 104)), PromptConfig(prompt_length=L))
    assert paper.num_trainable() == 1024 * (25 * L + 1)          # 77,824 for KS (L=3), 154,624 for IC (L=6)
    assert effective.num_trainable() == 1024 * (24 * L + 1)      # without the input prompt that gets no gradient


def test_ftlm_trains_everything_without_prompts():
    lm = _tiny_lm()
    model = PromptedULM(lm, PromptConfig(method="ftlm"))
    assert model.deep_prompt is None and model.separator is None
    assert model.num_trainable() == lm.num_parameters()
    assert lm.dropout.p == 0.1


def test_loss_scores_only_from_the_separator_on():
    model = PromptedULM(_tiny_lm(), PromptConfig(prompt_length=2, prompt_dropout=0.0)).eval()
    inputs = torch.tensor([[EOS, 5, 6, 7, SEP, 12]])
    targets = torch.tensor([[5, 6, 7, SEP, 12, EOS]])
    with torch.no_grad():
        logp = model.logits(inputs).log_softmax(-1)[0]
        expected = -(logp[3, SEP] + logp[4, 12] + logp[5, EOS]) / 3
        assert torch.allclose(model.loss(inputs, targets), expected, atol=1e-6)
        model.cfg.loss_normalization = "ntokens"
        assert torch.allclose(model.loss(inputs, targets), expected * 3 / 6, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one separator"):
        model.loss(inputs, torch.tensor([[5, 6, 7, 8, 12, EOS]]))


@pytest.mark.parametrize("method", ["pt", "ftlm"])
def test_kv_cached_greedy_equals_full_recomputation(method):
    model = PromptedULM(_tiny_lm(seed=3), PromptConfig(method=method, prompt_length=5))
    g = torch.Generator().manual_seed(0)
    sources = [torch.randint(4, 24, (n,), generator=g).tolist() for n in (3, 17, 9, 30)]
    cached = decode(model.logits_fn(), sources, max_new_tokens=25)
    full = decode(model.logits_fn(), sources, max_new_tokens=25, use_cache=False)
    assert cached.tokens == full.tokens and cached.finished == full.finished
    assert any(len(c) > 3 for c in cached.tokens)      # a random LM produces real continuations, not just </s>
    assert 0 <= cached.unfinished <= len(sources)


def test_learnable_verbalizer_head():
    model = PromptedULM(_tiny_lm(), PromptConfig(prompt_length=2, learnable_classes=5))
    assert model.logits(torch.tensor([[EOS, 5, SEP]])).shape[-1] == 9
    assert "verbalizer_head.weight" in model.trainable_parameters()
    with pytest.raises(ValueError, match="exceed the LM vocabulary"):
        PromptedULM(_tiny_lm(), PromptConfig(learnable_classes=30))


def test_build_batch_layout():
    from s3prl_speechprompt.prompt.prompted import build_batch
    inputs, targets = build_batch([[5, 6, 7], [8]], [[12], [13, 14]])
    assert inputs.tolist() == [[EOS, 5, 6, 7, SEP, 12], [EOS, 8, SEP, 13, 14, 1]]
    assert targets.tolist() == [[5, 6, 7, SEP, 12, EOS], [8, SEP, 13, 14, EOS, 1]]
