"""Row 1: KV-cached greedy decoding vs the reference's full recomputation every step
(``decode(..., use_cache=False)``), ASR-like and KS-like lengths, outputs compared. ``</s>`` is suppressed
so a random LM generates the whole budget."""
from __future__ import annotations

from s3prl_speechprompt.prompt.decode import decode
from s3prl_speechprompt.prompt.prompted import EOS, PromptConfig, PromptedULM

from .common import BenchConfig, interleaved, make_lm, median_s, random_rows, ratio


class _NoEOS(PromptedULM):
    """Decoding-only view of a prompted LM that never emits ``</s>``: a random LM would stop at random,
    so both decoders are made to generate the whole budget (a min-length of ``max_new_tokens``)."""

    def logits(self, tokens, cache=None):
        out = super().logits(tokens, cache)
        out[..., EOS] = float("-inf")
        return out


def bench_decode(cfg: BenchConfig, regime: str) -> dict:
    src_len, budget, L, B = ((cfg.asr_src, cfg.asr_label + 1, cfg.asr_prompt, cfg.asr_decode_batch)
                             if regime == "asr" else (cfg.ks_src, cfg.ks_label + 1, cfg.ks_prompt, cfg.ks_batch))
    model = _NoEOS(make_lm(cfg), PromptConfig(method="pt", prompt_length=L)).to(cfg.device).eval()
    sources = random_rows(cfg, B, src_len, seed=11)
    outs = {"cached": [], "full": []}
    logits_fn = model.logits_fn()

    def run(kind):
        return lambda: outs[kind].append(decode(logits_fn, sources, budget, use_cache=kind == "cached").tokens)

    decode(logits_fn, sources, min(budget, 2))                             # warm-up
    times = interleaved({"cached": run("cached"), "full": run("full")}, cfg.reps, cfg.device)
    identical = all(o == outs["cached"][0] for o in outs["cached"] + outs["full"])
    lengths = sorted({len(r) for o in outs["cached"] for r in o})
    r = ratio(times, "full", "cached")
    return {"id": f"decode.{regime}", "section": "decode",
            "what": f"{regime.upper()}: B={B}, {src_len} src + {budget} new tokens, L={L}: full recompute / KV cache",
            "value": r["median"], "unit": "x faster", "ratio": r, "seconds": median_s(times),
            "identical_outputs": identical, "generated_lengths": lengths,
            "target": ">= 10" if regime == "asr" else None,
            "met": (r["median"] >= 10 and identical) if regime == "asr" else None}
