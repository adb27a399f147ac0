"""The one decoder (prompt/decode.py): greedy and beam search over a logits function, for one task or a bank.

``PINNED`` was produced by the decoders this module replaced (``greedy_decode``, ``beam_decode``,
``PromptBank.decode`` at 5264e39) on the seeded tiny model below: the new decoder must give the same tokens and the
same log-probabilities (1e-6).
"""
from __future__ import annotations

import pytest
import torch

from s3prl_speechprompt.prompt import decode as decode_module
from s3prl_speechprompt.prompt.bank import PromptBank
from s3prl_speechprompt.prompt.decode import Decoded, decode
from s3prl_speechprompt.prompt.prompted import EOS, SEP, PromptConfig, PromptedULM, left_pad
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

VOCAB = 20
SOURCES = [[5, 9, 13, 4, 17], [8, 8, 11], [19, 4, 6, 12, 7, 15, 10, 5, 14], [16, 6], [10, 13, 18, 9, 4, 11, 7],
           [12, 5, 17, 8]]
BANK_TASKS = ["deep", "head", "head", "deep", "head", "deep"]
BANK_BUDGETS = [4, 0, 6, 2, 5, 7]


def _models():
    """A seeded tiny LM with three tasks: deep prompts; deep prompts + a trained-looking learnable head; an
    input-level prompt only (which the bank refuses)."""
    torch.manual_seed(0)
    lm = UnitLM(ULMConfig.from_arch("ulm_tiny", VOCAB))
    with torch.no_grad():        # a random LM that does more than copy its input, and sometimes ends
        for n, p in lm.named_parameters():
            if p.dim() == 2 and "embed" not in n:
                p.normal_(0, 1.0)
        e = lm.decoder.embed_tokens.weight[EOS]
        lm.decoder.layer_norm.bias.copy_(e / e.norm() ** 2)
    models = {"deep": PromptedULM(lm, PromptConfig(prompt_length=3)),
              "head": PromptedULM(lm, PromptConfig(prompt_length=5, learnable_classes=6, separator_init="normal")),
              "input": PromptedULM(lm, PromptConfig(prompt_length=4, deep=False, input_prompt=True))}
    with torch.no_grad():
        models["head"].verbalizer_head.weight.add_(torch.randn_like(models["head"].verbalizer_head.weight))
    return {n: m.eval() for n, m in models.items()}


# (case, task) -> (tokens per source, score per source), budget 6 (the bank: BANK_BUDGETS)
PINNED = {
    ('greedy', 'deep'): (
        [[6, 0, 6, 0, 6, 14], [6, 0, 6, 0, 11, 14], [9, 0, 6, 6, 6, 6], [6, 14, 6], [0, 0, 0, 18, 15, 9],
         [6, 6, 6, 6, 14, 0]],
        [-8.74308043718338, -9.855918407440186, -7.828951954841614, -6.296706438064575, -9.103854060173035,
         -9.734004259109497]),
    ('greedy', 'head'): (
        [[5, 5, 6, 0, 6, 5], [3, 6, 8, 0, 0, 0], [6, 8], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [6, 5, 0, 6, 5, 0]],
        [-3.4641129970550537, -1.7826514467597008, -1.594329059123993, -1.1907945722341537, -1.7368508875370026,
         -2.2704695779830217]),
    ('greedy', 'input'): (
        [[14, 0, 0, 3, 0, 0], [14, 7], [6, 5, 0, 0], [15, 15, 15, 15, 15, 15], [4, 6, 6, 6, 6, 6], [3, 9, 0, 3, 0, 3]],
        [-10.190251231193542, -5.73937201499939, -8.766911268234253, -7.931484341621399, -8.144777953624725,
         -9.526785612106323]),
    ('beam3', 'deep'): (
        [[6], [6, 16, 15, 15, 15, 15], [17], [6, 14, 6], [0, 6, 6, 6, 6, 6], [6]],
        [-2.647670269012451, -9.06464672088623, -3.2237284183502197, -6.296706199645996, -7.999458312988281,
         -3.081308364868164]),
    ('beam3', 'input'): (
        [[0, 0, 0, 0, 3], [14, 7], [16, 3], [15, 6, 6, 6, 6, 6], [6, 6, 6, 6, 6, 6], [3, 7]],
        [-9.82712173461914, -5.739372253417969, -4.8574299812316895, -7.21535587310791, -7.8493781089782715,
         -4.6622796058654785]),
    ('beam3_lp0.5', 'head'): (
        [[6, 0, 5, 5, 5, 5], [3], [6, 8], [0, 0, 0, 0, 0, 0], [], [6, 5, 0, 6, 5, 0]],
        [-2.5541720390319824, -2.787696123123169, -1.5943289995193481, -1.190794587135315, -1.9129784107208252,
         -2.2704694271087646]),
    ('bank', 'mixed'): (
        [[6, 0, 6, 0], [], [6, 8], [6, 14], [0, 0, 0, 0, 0], [6, 6, 6, 6, 14, 0, 6]],
        [-5.468425869941711, 0.0, -1.5943285524845123, -3.090285062789917, -1.7039470039308071, -11.13196063041687]),
}


CASES = {"greedy": {}, "beam3": dict(beam_size=3), "beam3_lp0.5": dict(beam_size=3, length_penalty=0.5)}


@pytest.fixture(scope="module")
def models():
    return _models()


def _bank(models):
    bank = PromptBank.from_models([("deep", models["deep"]), ("head", models["head"])])
    return bank, bank.task_ids(BANK_TASKS)


@pytest.mark.parametrize("case,task", list(PINNED))
def test_pinned_outputs_of_the_decoders_it_replaced(models, case, task):
    if case == "bank":
        bank, ids = _bank(models)
        got, budgets = decode(bank.logits_fn(ids), SOURCES, BANK_BUDGETS), BANK_BUDGETS
    else:
        got, budgets = decode(models[task].logits_fn(), SOURCES, 6, **CASES[case]), [6] * len(SOURCES)
    tokens, scores = PINNED[(case, task)]
    assert isinstance(got, Decoded)
    assert got.tokens == tokens
    # the pins were bit-identical on the machine that wrote them; fp32 matmul kernels differ between CPUs
    # (AVX2 / AVX-512 summation order), which moves a 6-step log-prob by up to ~4e-5: tokens exact, scores 1e-4
    assert got.scores == pytest.approx(scores, abs=1e-4)
    # a source stops at </s> or at its budget (beam: its best hypothesis ended or not)
    assert got.finished == [len(t) < b for t, b in zip(tokens, budgets)]
    assert got.unfinished == sum(len(t) == b for t, b in zip(tokens, budgets))


@pytest.mark.parametrize("task", ["deep", "head", "input"])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_kv_cache_equals_full_recomputation(models, task, beam_size):
    fn = models[task].logits_fn()
    cached = decode(fn, SOURCES, 6, beam_size=beam_size)
    full = decode(fn, SOURCES, 6, beam_size=beam_size, use_cache=False)
    assert full.tokens == cached.tokens and full.finished == cached.finished
    assert full.scores == pytest.approx(cached.scores, abs=1e-4)


@pytest.mark.parametrize("task", ["deep", "head", "input"])
def test_beam_search_at_width_one_is_greedy(models, task):
    fn = models[task].logits_fn()
    greedy = decode(fn, SOURCES, 6)
    beam = decode_module._beam(fn, left_pad([[EOS, *s, SEP] for s in SOURCES]), [6] * len(SOURCES), True, 1, 1.0)
    assert beam.tokens == greedy.tokens and beam.finished == greedy.finished
    assert beam.scores == pytest.approx(greedy.scores, abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_per_source_budgets_equal_each_source_alone(models, beam_size):
    fn = models["deep"].logits_fn()
    got = decode(fn, SOURCES, BANK_BUDGETS, beam_size=beam_size)
    for i, (src, budget) in enumerate(zip(SOURCES, BANK_BUDGETS)):
        alone = decode(fn, [src], budget, beam_size=beam_size)
        assert got.tokens[i] == alone.tokens[0] and got.finished[i] == alone.finished[0]
        assert got.scores[i] == pytest.approx(alone.scores[0], abs=1e-4)
    assert got.tokens[1] == [] and got.scores[1] == 0.0 and not got.finished[1]       # budget 0
    with pytest.raises(ValueError, match="one budget per source"):
        decode(fn, SOURCES, [3, 4])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_bank_rows_equal_each_model_alone(models, beam_size):
    bank, ids = _bank(models)
    mixed = decode(bank.logits_fn(ids), SOURCES, BANK_BUDGETS, beam_size=beam_size)
    for name in ("deep", "head"):
        idx = [i for i, t in enumerate(BANK_TASKS) if t == name]
        alone = decode(models[name].logits_fn(), [SOURCES[i] for i in idx], [BANK_BUDGETS[i] for i in idx],
                       beam_size=beam_size)
        assert [mixed.tokens[i] for i in idx] == alone.tokens
        assert [mixed.finished[i] for i in idx] == alone.finished
        assert [mixed.scores[i] for i in idx] == pytest.approx(alone.scores, abs=1e-4)


def test_a_training_model_decodes_in_eval_mode_and_stays_in_training(models):
    model = models["deep"]
    model.train()
    try:
        got = decode(model.logits_fn(), SOURCES, 6)
        assert model.training and model.deep_prompt.dropout.training
    finally:
        model.eval()
    assert got.tokens == PINNED[("greedy", "deep")][0]


def test_precision_is_the_decoders_autocast(models):
    fn = models["input"].logits_fn()

    def bf16_fn(tokens, cache, rows):              # what precision="bf16" must amount to
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(tokens, cache, rows)

    got = decode(fn, SOURCES, 6, beam_size=3, precision="bf16")
    ref = decode(bf16_fn, SOURCES, 6, beam_size=3)
    assert got == ref
    assert got.scores != decode(fn, SOURCES, 6, beam_size=3).scores          # autocast was on
    fp32 = decode(fn, SOURCES, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):                        # fp32 overrides an outer autocast
        assert decode(fn, SOURCES, 6) == fp32


def test_no_sources_and_bad_width(models):
    fn = models["deep"].logits_fn()
    assert decode(fn, [], 5) == Decoded([], [], []) and Decoded([], [], []).unfinished == 0
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        decode(fn, SOURCES, 5, beam_size=0)
