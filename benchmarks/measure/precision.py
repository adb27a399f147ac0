"""Row 6: bf16 vs fp32 autocast of the LM (``s3prl_speechprompt.precision``): PT and FT-LM step time and peak
memory on the same batch, trained as the engine does (Adam, clip 1.0, parameters and Adam state in fp32).

On CPU, bf16 matmuls are fast only where the CPU has bf16 instructions (AVX512-BF16 / AMX); elsewhere they
may be slower than fp32, and autocast adds a bf16 copy of every weight it casts per step. The same command
with ``--device cuda`` measures the GPU, where bf16 is what a sizing decision needs.
"""
from __future__ import annotations

from typing import List

from s3prl_speechprompt import precision
from s3prl_speechprompt.prompt.prompted import build_batch

from .common import BenchConfig, interleaved, make_lm, median_s, peak_step_bytes, random_rows, ratio, trainer

PRECISIONS = ("fp32", "bf16")


def _amp_step(model, opt, params, inputs, targets, prec: str, device: str, losses: list):
    scaler = precision.grad_scaler(prec, device)

    def step():
        opt.zero_grad(set_to_none=True)
        with precision.autocast(prec, device):
            loss = model.loss(inputs, targets)
        losses.append(loss.detach().item())
        precision.optimizer_step(loss, opt, params, scaler, clip_norm=1.0)
    return step


def bench_precision(cfg: BenchConfig, regime: str) -> List[dict]:
    src_len, lab_len, L, B = ((cfg.asr_src, cfg.asr_label, cfg.asr_prompt, cfg.asr_train_batch)
                              if regime == "asr" else (cfg.ks_src, cfg.ks_label, cfg.ks_prompt, cfg.ks_batch))
    inputs, targets = build_batch(random_rows(cfg, B, src_len, 21), random_rows(cfg, B, lab_len, 22), cfg.device)
    shape = f"{regime.upper()}: B={B} x T={inputs.size(1)}, L={L}"
    rows = []
    for method in ("pt", "ftlm"):              # one method's pair at a time: half the memory of all four at once
        contenders, losses, memory = {}, {}, {}
        for prec in PRECISIONS:
            model, opt, params = trainer(make_lm(cfg), method, L)
            losses[prec] = []
            contenders[prec] = (model, opt, _amp_step(model, opt, params, inputs, targets, prec, cfg.device,
                                                      losses[prec]), params)
        for prec, (model, opt, step, _) in contenders.items():
            step()                                              # warm-up: Adam state; the same first batch
            memory[prec] = peak_step_bytes(model, opt, step, cfg.device)
        dtypes = sorted({str(t.dtype) for _, _, _, params in contenders.values() for t in params}
                        | {str(v.dtype) for _, opt, _, _ in contenders.values() for st in opt.state.values()
                           for v in st.values() if hasattr(v, "dtype") and v.dim()})
        times = interleaved({p: c[2] for p, c in contenders.items()}, cfg.reps, cfg.device)
        del contenders
        r = ratio(times, "bf16", "fp32")
        first = {p: v[0] for p, v in losses.items()}        # same weights, same batch: the first-step losses
        rows.append({"id": f"precision.{regime}.{method}", "section": "precision",
                     "what": f"{shape}: {method.upper()} bf16 / fp32 step time (autocast; {cfg.device})",
                     "value": r["median"], "unit": "x", "ratio": r, "seconds": median_s(times),
                     "memory_ratio": memory["bf16"]["peak_bytes"] / memory["fp32"]["peak_bytes"],
                     "peak_mib": {p: m["peak_bytes"] / 2 ** 20 for p, m in memory.items()}, "memory": memory,
                     "first_loss": first, "loss_rel_diff": abs(first["bf16"] - first["fp32"]) / abs(first["fp32"]),
                     "trainable_dtypes": dtypes, "target": None, "met": None})
    return rows
