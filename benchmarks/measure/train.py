"""Rows 2-3: PT vs FT-LM step time and peak memory on the same batch (Adam state included), and Hugging Face
PEFT prefix tuning (``prefix_projection=False``) on a GPT-2 of the same layers/width/heads/vocabulary as a
peer: trainable parameters and step time vs ours. Plus a fresh-process RSS cross-check of the memory row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from s3prl_speechprompt.prompt.prompted import EOS, PAD, SEP, build_batch

from .common import (BenchConfig, interleaved, make_lm, median_s, peak_step_bytes, random_rows, ratio, step_fn,
                     trainer)

BENCHMARKS = str(Path(__file__).resolve().parents[1])        # the folder holding this package, for the RSS child


def _peft_model(cfg: BenchConfig, prompt_length: int, n_positions: int):
    """GPT-2 with our LM's layers/width/heads/FFN/vocabulary (ReLU, dropout 0 like the frozen LM), PEFT prefix."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    gcfg = GPT2Config(vocab_size=cfg.vocab, n_positions=n_positions, n_embd=cfg.dim, n_layer=cfg.layers,
                      n_head=cfg.heads, n_inner=cfg.ffn, activation_function="relu", resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=SEP, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(cfg.seed)
    base = GPT2LMHeadModel(gcfg)
    peft_cfg = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prompt_length,
                                  prefix_projection=False)
    model = get_peft_model(base, peft_cfg).to(cfg.device).train()
    return model, base.config._attn_implementation


def _separator_loss(logits, targets):
    """Our loss definition (cross entropy from <s> on, mean over scored tokens) for the PEFT model."""
    scored = (torch.cumsum(targets.eq(SEP).long(), 1) > 0) & targets.ne(PAD)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none") * scored
    return nll.sum() / scored.sum().clamp(min=1)


def bench_train(cfg: BenchConfig, regime: str) -> List[dict]:
    src_len, lab_len, L, B = ((cfg.asr_src, cfg.asr_label, cfg.asr_prompt, cfg.asr_train_batch)
                              if regime == "asr" else (cfg.ks_src, cfg.ks_label, cfg.ks_prompt, cfg.ks_batch))
    inputs, targets = build_batch(random_rows(cfg, B, src_len, 21), random_rows(cfg, B, lab_len, 22), cfg.device)
    T = inputs.size(1)
    contenders = {}
    # pt: SpeechPrompt's PT (trainable separator, prompt dropout 0.1); pt_as_peft: PEFT's configuration
    # (deep prefix only: no separator, no prompt dropout); FT-LM as the paper runs it (dropout 0.1) and with 0
    variants = (("pt", "pt", None, {}), ("pt_as_peft", "pt", None, dict(train_separator=False, prompt_dropout=0.0)),
                ("ftlm", "ftlm", None, {}), ("ftlm_dropout0", "ftlm", 0.0, {}))
    for name, method, drop, extra in variants:
        model, opt, params = trainer(make_lm(cfg), method, L, drop, **extra)
        contenders[name] = (model, opt, step_fn(opt, params, lambda m=model: m.loss(inputs, targets)), params)
    peft_model, attn_impl = _peft_model(cfg, L, n_positions=max(1024, L + T))
    p_params = [p for p in peft_model.parameters() if p.requires_grad]
    p_opt = torch.optim.Adam(p_params, lr=5e-3, betas=(0.9, 0.98), eps=1e-8)
    mask = inputs.ne(PAD).long()
    p_step = step_fn(p_opt, p_params, lambda: _separator_loss(
        peft_model(input_ids=inputs, attention_mask=mask).logits, targets))
    contenders["peft"] = (peft_model, p_opt, p_step, p_params)

    memory = {}
    for name, (model, opt, step, _) in contenders.items():
        step()                                                             # warm-up; creates Adam state
        memory[name] = peak_step_bytes(model, opt, step, cfg.device)
    times = interleaved({n: c[2] for n, c in contenders.items()}, cfg.reps, cfg.device)
    secs = median_s(times)
    mb = {n: m["peak_bytes"] / 2 ** 20 for n, m in memory.items()}
    shape = f"{regime.upper()}: B={B} x T={T}, L={L}"
    r_time = ratio(times, "pt", "ftlm")
    r_time0 = ratio(times, "pt", "ftlm_dropout0")
    r_peft = ratio(times, "pt_as_peft", "peft")
    r_peft_full = ratio(times, "pt", "peft")
    mem_ratio = memory["pt"]["peak_bytes"] / memory["ftlm"]["peak_bytes"]
    ours = contenders["pt"][0]
    n_ours = ours.num_trainable()
    n_as_peft = contenders["pt_as_peft"][0].num_trainable()
    n_peft = sum(p.numel() for p in p_params)
    sep = ours.separator.numel() if ours.separator is not None else 0
    rows = [
        {"id": f"train.{regime}.time", "section": "train", "what": f"{shape}: PT / FT-LM step time",
         "value": r_time["median"], "unit": "x", "ratio": r_time, "seconds": secs,
         "vs_ftlm_dropout0": r_time0, "target": "<= 0.75", "met": r_time["median"] <= 0.75},
        {"id": f"train.{regime}.memory", "section": "train", "what": f"{shape}: PT / FT-LM peak memory",
         "value": mem_ratio, "unit": "x", "peak_mib": mb, "memory": memory,
         "vs_ftlm_dropout0": memory["pt"]["peak_bytes"] / memory["ftlm_dropout0"]["peak_bytes"],
         "target": "<= 0.5", "met": mem_ratio <= 0.5},
        {"id": f"peft.{regime}.time", "section": "peft",
         "what": f"{shape}: ours / PEFT prefix tuning (GPT-2, {attn_impl}) step time, same configuration "
                 f"(deep prefix only, {n_as_peft} params each)",
         "value": r_peft["median"], "unit": "x", "ratio": r_peft, "seconds": secs,
         "with_separator_and_prompt_dropout": r_peft_full,
         "target": "<= 1.0", "met": r_peft["median"] <= 1.0},
        {"id": f"peft.{regime}.params", "section": "peft",
         "what": f"{regime.upper()} L={L}: trainable params ours / PEFT",
         "value": n_ours / n_peft, "unit": "x", "ours": n_ours, "peft": n_peft,
         "peft_formula": f"2*layers*L*d = 2*{cfg.layers}*{L}*{cfg.dim} = {2 * cfg.layers * L * cfg.dim}",
         "relation": f"ours = PEFT + separator ({sep}): {n_ours} = {n_peft} + {n_ours - n_peft}",
         "target": "ours - separator == PEFT", "met": n_ours - sep == n_as_peft == n_peft == 2 * cfg.layers * L * cfg.dim},
    ]
    return rows


def rss_child(spec: str) -> None:
    """Entry of the RSS cross-check subprocess: build one trainer, run 2 steps, print RSS numbers (JSON)."""
    args = json.loads(spec)
    cfg = BenchConfig(**args["cfg"])
    torch.set_num_threads(cfg.threads)

    def status(key):                  # VmHWM belongs to this process image (ru_maxrss survives exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    before = status("VmRSS")
    inputs, targets = build_batch(random_rows(cfg, cfg.asr_train_batch, cfg.asr_src, 21),
                                  random_rows(cfg, cfg.asr_train_batch, cfg.asr_label, 22), cfg.device)
    model, opt, params = trainer(make_lm(cfg), args["method"], cfg.asr_prompt, args.get("dropout"))
    step = step_fn(opt, params, lambda: model.loss(inputs, targets))
    step()
    step()
    hwm = status("VmHWM")
    print(json.dumps({"rss_before": before, "hwm": hwm, "delta": hwm - before}))


def bench_rss(cfg: BenchConfig) -> dict:
    out = {}
    for name, method in (("pt", "pt"), ("ftlm", "ftlm")):
        spec = json.dumps({"cfg": asdict(cfg), "method": method})
        res = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                              "from measure.train import rss_child; rss_child(sys.argv[2])", BENCHMARKS, spec],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(cfg.threads)})
        if res.returncode:
            raise RuntimeError(f"RSS child failed: {res.stderr[-2000:]}")
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return {"pt_mib": out["pt"]["delta"] / 2 ** 20, "ftlm_mib": out["ftlm"]["delta"] / 2 ** 20,
            "ratio": out["pt"]["delta"] / out["ftlm"]["delta"],
            "method": "fresh process: VmHWM after model build + 2 ASR steps minus VmRSS after imports"}
