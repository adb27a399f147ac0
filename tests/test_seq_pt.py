"""Prompt tuning (method: pt) on ASR through s3prl's real runner, CPU, ``-u fbank``: train, ``-m evaluate -e``.

The unit LM is the tiny random ``ulm_tiny`` of tests/test_seq_tasks.py (2 layers, d=64), kept frozen: the
checkpoint holds no LM weight. With the paper's ``freq`` verbalizer (the LM's own output layer) PT on this LM
reaches a teacher-forced loss of only ~1.5 nats per character in 1,000 steps and greedy decoding falls into
repetition loops (docs/sequence_tasks.md). SpeechPrompt v2's learnable verbalizer (a linear map over the
frozen LM's logits) brings the loss to ~1.1 in the same steps, and the trained prompt then beats the
untrained one on CER: it stops on its own, where the untrained prompt fills the decoding budget for every
utterance. WER stays at 100 % (words are not recognised): the gain is length/stopping and character
statistics, not recognition.

Measured (600 steps, Adam 3e-2, 16 prompts, no prompt dropout, dev-best on test): CER 81.48 % vs 292.06 %
untrained, WER 100 % both, unfinished 0/24 vs 24/24.

SF with the same recipe on the 4-template corpus gave test F1 0.0 (= untrained) in two runner runs. SF PT is
tested on a 2-template corpus at lr 1e-2 in tests/test_seq_pt_sf.py (test F1 0.583 vs 0.000 untrained).

"Untrained" = the same pipeline at learning rate 0 (prompts, separator and verbalizer head at their initial
values). The figures are the expert's SUPERB metrics, recomputed here with SUPERB's ASR expert code.
"""
from __future__ import annotations

import pytest
import torch

from conftest import record_outcome, runner_seed_args
from test_seq_tasks import _config as seq_config
from test_seq_tasks import _read_pairs, _run, _runner, _scores, asr_corpus, tiny_ulm  # noqa: F401

STEPS = 600
PT = dict(lr=3.0e-2, prompt_length=16, prompt_dropout=0.0, verbalizer="learnable")
PT_PROMPT = {k: v for k, v in PT.items() if k != "lr"}


def _config(task, ulm, datarc, steps, lr, eval_step, eval_splits, cache_dir):
    return seq_config(task, "pt", ulm, datarc, steps, lr, eval_step, eval_splits, cache_dir, **PT_PROMPT)


def _pt_and_untrained(tmp_path, task, ulm, datarc, eval_step=STEPS // 2, lr=PT["lr"]):
    """PT for STEPS steps at ``lr`` (dev every ``eval_step`` -> dev-best.ckpt), `-m evaluate -e dev-best` on test;
    and the untrained prompt (lr 0, one step, evaluated on test)."""
    name = f"speechprompt_{task}"
    cfg = tmp_path / f"{task}_pt.yaml"
    cfg.write_text(_config(task, ulm, datarc, STEPS, lr, eval_step, "[dev]", tmp_path / "units"))
    exp = tmp_path / f"{task}_pt"
    _run(_runner("-m", "train", "-u", "fbank", "-d", name, "-c", str(cfg), "-p", str(exp), *runner_seed_args()),
         tmp_path)
    state = torch.load(exp / "dev-best.ckpt", map_location="cpu", weights_only=False)["Downstream"]
    assert not [k for k in state if k.startswith("model.lm.")]        # the LM stayed frozen and is not stored
    assert "model.verbalizer_head.weight" in state and "model.deep_prompt.key" in state
    out = _run(_runner("-m", "evaluate", "-t", "test", "-e", str(exp / "dev-best.ckpt")), tmp_path)
    trained = _scores(out, "test")

    cfg0 = tmp_path / f"{task}_untrained.yaml"
    cfg0.write_text(_config(task, ulm, datarc, 1, 0.0, 1, "[test]", tmp_path / "units"))
    out0 = _run(_runner("-m", "train", "-u", "fbank", "-d", name, "-c", str(cfg0), "-p", str(tmp_path / "u"),
                        *runner_seed_args()), tmp_path)
    return exp, trained, _scores(out0, "test")


@pytest.mark.slow
def test_runner_asr_pt_beats_untrained_cer(asr_corpus, tiny_ulm, tmp_path):  # noqa: F811
    """Measured: test CER 81.48 % (trained, 600 steps, dev-best) vs 292.06 % (untrained); WER 100 % both."""
    from s3prl.downstream.asr.expert import DownstreamExpert

    out_dir, _ = asr_corpus
    datarc = {"libri_root": str(out_dir / "LibriSpeech"), "batch_size": 8, "eval_batch_size": 24, "num_workers": 0}
    exp, trained, untrained = _pt_and_untrained(tmp_path, "asr", tiny_ulm, datarc)
    record_outcome("asr_pt", cer=trained["cer"], untrained_cer=untrained["cer"], unfinished=trained["unfinished"],
                   untrained_unfinished=untrained["unfinished"])
    assert trained["cer"] < 0.75 * untrained["cer"], (trained, untrained)
    assert trained["unfinished"] < untrained["unfinished"], (trained, untrained)
    hyps, refs = _read_pairs(exp)
    tok = lambda s: " ".join(s.replace(" ", "|"))  # noqa: E731
    uer, wer = DownstreamExpert._compute_metrics(None, [tok(h) for h in hyps], [h.split() for h in hyps],
                                                 [tok(r) for r in refs], [r.split() for r in refs])
    assert trained["cer"] == pytest.approx(uer, abs=1e-3) and trained["wer"] == pytest.approx(wer, abs=1e-3)
