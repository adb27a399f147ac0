"""Row 6: bf16 vs fp32 autocast of the LM (``s3prl_speechprompt.precision``): PT and FT-LM step time and peak
memory on the same batch, trained as the engine does (Adam, clip 1.0, parameters and Adam state in fp32).

On CPU, bf16 matmuls are fast only where the CPU has bf16 instructions (AVX512-BF16 / AMX); elsewhere they
may be slower than fp32, and autocast adds a bf16 copy of every weight it casts per step. The same command
with ``--device cuda`` measures the GPU, where bf16 is what a sizing decision needs.
"""
from __future__ import annotations

from typing import List

from s3prl_speechprompt import precision
from s3prl_speechprompt.bench.common import (BenchConfig, interleaved, make_lm, median_s, peak_step_bytes,
                                             random_rows, ratio, trainer)
from s3prl_speechprompt.prompt.prompted import build_batch

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
    contenders, losses = {}, {}
    for method in ("pt", "ftlm"):
        for prec in PRECISIONS:
            name = f"{method}_{prec}"
            model, opt, params = trainer(make_lm(cfg), method, L)
            losses[name] = []
            contenders[name] = (model, opt, _amp_step(model, opt, params, inputs, targets, prec, cfg.device,
                                                      losses[name]), params)
    memory = {}
    for name, (model, opt, step, params) in contenders.items():
        step()                                                  # warm-up: Adam state; the same first batch
        memory[name] = peak_step_bytes(model, opt, step, cfg.device)
    dtypes = sorted({str(t.dtype) for _, opt, _, params in contenders.values() for t in params}
                    | {str(v.dtype) for _, opt, _, _ in contenders.values() for st in opt.state.values()
                       for v in st.values() if hasattr(v, "dtype") and v.dim()})
    times = interleaved({n: c[2] for n, c in contenders.items()}, cfg.reps, cfg.device)
    secs = median_s(times)
    mb = {n: m["peak_bytes"] / 2 ** 20 for n, m in memory.items()}
    shape = f"{regime.upper()}: B={B} x T={inputs.size(1)}, L={L}"
    first_loss = {n: v[0] for n, v in losses.items()}          # same weights, same batch: fp32 vs bf16 loss
    rows = []
    for method in ("pt", "ftlm"):
        r = ratio(times, f"{method}_bf16", f"{method}_fp32")
        mem = memory[f"{method}_bf16"]["peak_bytes"] / memory[f"{method}_fp32"]["peak_bytes"]
        rel = abs(first_loss[f"{method}_bf16"] - first_loss[f"{method}_fp32"]) / abs(first_loss[f"{method}_fp32"])
        rows.append({"id": f"precision.{regime}.{method}", "section": "precision",
                     "what": f"{shape}: {method.upper()} bf16 / fp32 step time (autocast; {cfg.device})",
                     "value": r["median"], "unit": "x", "ratio": r, "seconds": secs,
                     "memory_ratio": mem, "peak_mib": {k: v for k, v in mb.items() if k.startswith(method)},
                     "memory": {k: v for k, v in memory.items() if k.startswith(method)},
                     "first_loss": {k: v for k, v in first_loss.items() if k.startswith(method)},
                     "loss_rel_diff": rel, "trainable_dtypes": dtypes, "target": None, "met": None})
    return rows
