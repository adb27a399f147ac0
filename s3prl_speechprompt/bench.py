"""Efficiency benchmark: decoding, training cost, a PEFT peer, the unit cache, and matmul efficiency.

Every comparison is a *ratio measured pair by pair in one process*: the contenders run interleaved
(the order rotates every repetition), each repetition gives one ratio, and the table reports the
median ratio and how many repetitions it came from. Absolute seconds are printed for orientation
only: on a shared machine they move with the load, the ratios much less.

Sections (``speechprompt bench --help`` for the sizes):

1. decode   KV-cached greedy decoding vs the reference's full recomputation every step
            (``greedy_decode(use_cache=False)``), ASR-like and KS-like lengths, outputs compared.
            ``</s>`` is suppressed so a random LM generates the whole budget.
2. train    PT vs FT-LM step time and peak memory on the same batch (Adam state included).
3. peft     Hugging Face PEFT prefix tuning (``prefix_projection=False``) on a GPT-2 of the same
            layers/width/heads/vocabulary: trainable parameters and step time vs ours.
4. units    epoch time of the expert path quantizing upstream features on the fly (wav read,
            s3prl upstream + Featurizer, k-means, dedup) vs reading precomputed units, PT step included.
5. flops    achieved FLOP/s of the LM forward at batch 32 vs plain torch.mm/bmm of the same shapes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from s3prl_speechprompt.prompt.prompted import EOS, PAD, SEP, PromptConfig, PromptedULM, build_batch, greedy_decode
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

N_SPECIALS = 4


@dataclass
class BenchConfig:
    """Sizes of one benchmark run. The full run's LM is GSLM's ``transformer_lm`` shape (``ulm_base``)."""

    quick: bool = False
    device: str = "cpu"
    threads: int = 1
    reps: int = 3
    seed: int = 0
    # the LM (GSLM transformer_lm_big is 12 x 1024, 16 heads, FFN 4096; scaled down to fit a CPU)
    layers: int = 6
    dim: int = 512
    heads: int = 8
    ffn: int = 2048
    units: int = 100
    # ASR-like lengths: ~500 deduplicated HuBERT units, ~175 characters; prompt length of the paper's ASR
    asr_src: int = 500
    asr_label: int = 175
    asr_prompt: int = 176
    asr_decode_batch: int = 1
    asr_train_batch: int = 6          # the reference's max-tokens 4096 at ~677 tokens a row
    # KS-like lengths: ~25 units, 1 label unit; the paper's KS prompt length; batch 32
    ks_src: int = 25
    ks_label: int = 1
    ks_prompt: int = 3
    ks_batch: int = 32
    flops_batch: int = 32
    # unit cache: synthetic wavs through a random HuBERT (hubert_local)
    upstream: str = "base"            # base: HuBERT Base shape (12 x 768, 512-channel CNN) | tiny: 2 x 32
    upstream_layer: int = 6
    utterances: int = 64
    utterance_seconds: float = 1.0
    unit_batch: int = 32
    unit_epochs: int = 3
    rss: bool = True                  # RSS high-water of a fresh process per method (cross-check)

    @classmethod
    def quick_config(cls, **overrides) -> "BenchConfig":
        """Small enough for a smoke test: every row, tiny sizes, one repetition."""
        kw = dict(quick=True, reps=1, layers=2, dim=64, heads=4, ffn=256, asr_src=120, asr_label=40,
                  asr_prompt=16, asr_train_batch=4, ks_batch=16, flops_batch=32, upstream="tiny",
                  upstream_layer=1, utterances=8, utterance_seconds=0.5, unit_batch=4, unit_epochs=1, rss=False)
        kw.update(overrides)
        return cls(**kw)

    @property
    def vocab(self) -> int:
        return self.units + N_SPECIALS


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: Dict[str, Callable[[], object]], reps: int, device: str = "cpu") -> Dict[str, List[float]]:
    """Seconds per call of each function, ``reps`` rounds, the order rotated every round."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def ratio(times: Dict[str, List[float]], num: str, den: str) -> dict:
    """Median of the per-round ratios num/den, with the count and the spread."""
    rs = [a / b for a, b in zip(times[num], times[den])]
    return {"median": statistics.median(rs), "n": len(rs), "min": min(rs), "max": max(rs)}


def _median_s(times: Dict[str, List[float]]) -> Dict[str, float]:
    return {n: statistics.median(t) for n, t in times.items()}


# ---------------------------------------------------------------------------------------------- models and data
def make_lm(cfg: BenchConfig) -> UnitLM:
    torch.manual_seed(cfg.seed)
    lm = UnitLM(ULMConfig(vocab_size=cfg.vocab, embed_dim=cfg.dim, ffn_dim=cfg.ffn, layers=cfg.layers,
                          heads=cfg.heads, activation="relu", arch=f"bench_{cfg.layers}x{cfg.dim}"))
    return lm.to(cfg.device)


def random_rows(cfg: BenchConfig, n: int, length: int, seed: int) -> List[List[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(N_SPECIALS, cfg.vocab, (n, length), generator=g).tolist()


class _NoEOS(PromptedULM):
    """Decoding-only view of a prompted LM that never emits ``</s>``: a random LM would stop at random,
    so both decoders are made to generate the whole budget (a min-length of ``max_new_tokens``)."""

    def logits(self, tokens, cache=None):
        out = super().logits(tokens, cache)
        out[..., EOS] = float("-inf")
        return out


def tensor_bytes(*groups) -> int:
    """Bytes of the distinct storages among tensors (parameters, buffers, optimizer state)."""
    seen, total = set(), 0
    for group in groups:
        for t in group:
            if torch.is_tensor(t) and t.numel():
                s = t.untyped_storage()
                if s.data_ptr() not in seen:
                    seen.add(s.data_ptr())
                    total += s.nbytes()
    return total


def _opt_tensors(opt) -> list:
    return [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]


def peak_step_bytes(model, opt, step: Callable[[], None], device: str) -> dict:
    """Peak bytes held by tensors during one training step (gradients freed before it).

    CPU: tensors alive at the start (parameters, buffers, optimizer state) + the peak of the running sum
    of torch's CPU-allocator events during the step (activations, gradients, temporaries), from
    ``torch.profiler(profile_memory=True)``. tracemalloc cannot see these allocations (they bypass
    Python's allocator). CUDA: ``torch.cuda.max_memory_allocated`` over the step.
    """
    opt.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return {"peak_bytes": int(torch.cuda.max_memory_allocated()), "method": "cuda.max_memory_allocated"}
    from torch.profiler import ProfilerActivity, profile

    live = tensor_bytes(model.parameters(), model.buffers(), _opt_tensors(opt))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return {"peak_bytes": live + peak, "live_at_start": live, "transient_peak": peak,
            "method": "tensors alive + profiler allocator peak"}


def _trainer(lm: UnitLM, method: str, prompt_length: int, lm_dropout=None, **prompt):
    """(model, optimizer, trainable params) as the engine trains: Adam(0.9, 0.98), clip-norm 1.0 in the step."""
    cfg = PromptConfig(method=method, prompt_length=prompt_length, lm_dropout=lm_dropout, **prompt)
    torch.manual_seed(1)
    model = PromptedULM(lm, cfg).to(next(lm.parameters()).device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-3 if method == "pt" else 5e-4, betas=(0.9, 0.98), eps=1e-8)
    return model, opt, params


def _step_fn(opt, params, loss_fn):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step


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


# ---------------------------------------------------------------------------------------------- 1. decoding
def bench_decode(cfg: BenchConfig, regime: str) -> dict:
    src_len, budget, L, B = ((cfg.asr_src, cfg.asr_label + 1, cfg.asr_prompt, cfg.asr_decode_batch)
                             if regime == "asr" else (cfg.ks_src, cfg.ks_label + 1, cfg.ks_prompt, cfg.ks_batch))
    model = _NoEOS(make_lm(cfg), PromptConfig(method="pt", prompt_length=L)).to(cfg.device).eval()
    sources = random_rows(cfg, B, src_len, seed=11)
    outs = {"cached": [], "full": []}

    def run(kind):
        return lambda: outs[kind].append(greedy_decode(model, sources, budget, use_cache=kind == "cached"))

    greedy_decode(model, sources, min(budget, 2))                          # warm-up
    times = interleaved({"cached": run("cached"), "full": run("full")}, cfg.reps, cfg.device)
    identical = all(o == outs["cached"][0] for o in outs["cached"] + outs["full"])
    lengths = sorted({len(r) for o in outs["cached"] for r in o})
    r = ratio(times, "full", "cached")
    return {"id": f"decode.{regime}", "section": "decode",
            "what": f"{regime.upper()}: B={B}, {src_len} src + {budget} new tokens, L={L}: full recompute / KV cache",
            "value": r["median"], "unit": "x faster", "ratio": r, "seconds": _median_s(times),
            "identical_outputs": identical, "generated_lengths": lengths,
            "target": ">= 10" if regime == "asr" else None,
            "met": (r["median"] >= 10 and identical) if regime == "asr" else None}


# ---------------------------------------------------------------------------------------------- 2+3. training, PEFT
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
        model, opt, params = _trainer(make_lm(cfg), method, L, drop, **extra)
        contenders[name] = (model, opt, _step_fn(opt, params, lambda m=model: m.loss(inputs, targets)), params)
    peft_model, attn_impl = _peft_model(cfg, L, n_positions=max(1024, L + T))
    p_params = [p for p in peft_model.parameters() if p.requires_grad]
    p_opt = torch.optim.Adam(p_params, lr=5e-3, betas=(0.9, 0.98), eps=1e-8)
    mask = inputs.ne(PAD).long()
    p_step = _step_fn(p_opt, p_params, lambda: _separator_loss(
        peft_model(input_ids=inputs, attention_mask=mask).logits, targets))
    contenders["peft"] = (peft_model, p_opt, p_step, p_params)

    memory = {}
    for name, (model, opt, step, _) in contenders.items():
        step()                                                             # warm-up; creates Adam state
        memory[name] = peak_step_bytes(model, opt, step, cfg.device)
    times = interleaved({n: c[2] for n, c in contenders.items()}, cfg.reps, cfg.device)
    secs = _median_s(times)
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
    model, opt, params = _trainer(make_lm(cfg), args["method"], cfg.asr_prompt, args.get("dropout"))
    step = _step_fn(opt, params, lambda: model.loss(inputs, targets))
    step()
    step()
    hwm = status("VmHWM")
    print(json.dumps({"rss_before": before, "hwm": hwm, "delta": hwm - before}))


def bench_rss(cfg: BenchConfig) -> dict:
    out = {}
    for name, method in (("pt", "pt"), ("ftlm", "ftlm")):
        spec = json.dumps({"cfg": asdict(cfg), "method": method})
        res = subprocess.run([sys.executable, "-c", "import sys; from s3prl_speechprompt.bench import rss_child; "
                              "rss_child(sys.argv[1])", spec], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(cfg.threads)})
        if res.returncode:
            raise RuntimeError(f"RSS child failed: {res.stderr[-2000:]}")
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return {"pt_mib": out["pt"]["delta"] / 2 ** 20, "ftlm_mib": out["ftlm"]["delta"] / 2 ** 20,
            "ratio": out["pt"]["delta"] / out["ftlm"]["delta"],
            "method": "fresh process: VmHWM after model build + 2 ASR steps minus VmRSS after imports"}


# ---------------------------------------------------------------------------------------------- 4. unit cache
def random_hubert(path: Path, size: str) -> Path:
    """A randomly initialised HuBERT in s3prl's converted ``hubert_local`` checkpoint format (no download)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    if size == "tiny":
        model_cfg = HubertConfig(label_rate=50, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                 encoder_attention_heads=2, final_dim=16,
                                 conv_feature_layers="[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2")
    elif size == "base":                       # HuBERT Base: 12 x 768, FFN 3072, 512-channel CNN
        model_cfg = HubertConfig(label_rate=50)
    else:
        raise ValueError(f"upstream must be 'tiny' or 'base', got {size!r}")
    task_cfg = HubertPretrainingConfig(label_rate=50)
    torch.manual_seed(0)
    symbols = [list(map(str, range(10)))]
    model = HubertModel(model_cfg, task_cfg, symbols)
    torch.save({"task_cfg": asdict(task_cfg), "model_cfg": asdict(model_cfg), "model_weight": model.state_dict(),
                "dictionaries_symbols": symbols}, path)
    return path


def bench_units(cfg: BenchConfig) -> dict:
    import soundfile as sf

    from s3prl_speechprompt import compat
    compat.apply()
    from s3prl import hub
    from s3prl.upstream.interfaces import Featurizer

    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.units.manifest import UnitRecord, read_unit_file, write_unit_manifest
    from s3prl_speechprompt.units.prepare import to_units
    from s3prl_speechprompt.units.quantizer import KMeansQuantizer

    sr = 16000
    with tempfile.TemporaryDirectory(prefix="speechprompt-bench-") as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(cfg.seed)
        n = int(cfg.utterance_seconds * sr)
        wavs = []
        for i in range(cfg.utterances):        # a few tones + noise, so frames differ
            t = torch.arange(n) / sr
            f = 100 + 400 * torch.rand(3, generator=g)
            w = sum(torch.sin(2 * math.pi * fi * t * (1 + 0.3 * t)) for fi in f) / 3
            w = (w + 0.05 * torch.randn(n, generator=g)).clamp(-1, 1)
            p = tmp / f"utt{i:04d}.wav"
            sf.write(p, w.numpy(), sr)
            wavs.append(p)
        labels = [(str(i % 12),) for i in range(cfg.utterances)]
        ckpt = random_hubert(tmp / "hubert.pt", cfg.upstream)
        upstream = hub.hubert_local(ckpt=str(ckpt)).to(cfg.device).eval()
        featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device=cfg.device,
                                layer_selection=cfg.upstream_layer).to(cfg.device).eval()
        dictionary = Dictionary([str(k) for k in range(cfg.units)])
        verbal = {str(c): str(c) for c in range(12)}          # label -> unit (identity), as a verbalizer would

        def read(paths):
            return [torch.as_tensor(sf.read(p, dtype="float32")[0], device=cfg.device) for p in paths]

        @torch.no_grad()
        def features(paths) -> List[torch.Tensor]:
            w = read(paths)
            return featurizer(w, upstream(w))

        # k-means centroids: random frames of the features (assignment cost is what is measured)
        frames = torch.cat([f for f in features(wavs[:4])]).float()
        pick = torch.randperm(frames.size(0), generator=g)[:cfg.units]
        quantizer = KMeansQuantizer(frames[pick].cpu()).to(cfg.device)
        # the precomputed unit manifest (what units/prepare.py caches for the train split)
        records = []
        for i in range(0, cfg.utterances, cfg.unit_batch):
            for j, f in enumerate(features(wavs[i:i + cfg.unit_batch])):
                records.append(UnitRecord(f"utt{i + j:04d}", tuple(to_units(quantizer, f)), labels[i + j]))
        manifest = tmp / "units.tsv"
        write_unit_manifest(manifest, records)

        lm = make_lm(cfg)
        model, opt, params = _trainer(lm, "pt", cfg.ks_prompt)
        batches = [range(i, min(i + cfg.unit_batch, cfg.utterances)) for i in range(0, cfg.utterances, cfg.unit_batch)]
        data_time = {"on_the_fly": 0.0, "cached": 0.0}

        def train_on(sources, labs):
            codes = [dictionary.encode([verbal[y] for y in lab]) for lab in labs]
            inputs, targets = build_batch(sources, codes, cfg.device)
            opt.zero_grad(set_to_none=True)
            model.loss(inputs, targets).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        def epoch_on_the_fly():
            for b in batches:
                t0 = time.perf_counter()
                feats = features([wavs[i] for i in b])
                sources = [dictionary.encode(to_units(quantizer, f.detach())) for f in feats]
                _sync(cfg.device)
                data_time["on_the_fly"] += time.perf_counter() - t0
                train_on(sources, [labels[i] for i in b])

        def epoch_cached():
            t0 = time.perf_counter()
            recs = read_unit_file(manifest)
            data_time["cached"] += time.perf_counter() - t0
            for b in batches:
                t0 = time.perf_counter()
                sources = [dictionary.encode(recs[i].units) for i in b]
                data_time["cached"] += time.perf_counter() - t0
                train_on(sources, [recs[i].labels for i in b])

        epoch_cached()                                                     # warm-up
        reps = max(cfg.unit_epochs, 1)
        data_time.update(on_the_fly=0.0, cached=0.0)
        times = interleaved({"on_the_fly": epoch_on_the_fly, "cached": epoch_cached}, reps, cfg.device)
        unit_lens = [len(r.units) for r in records]
    r = ratio(times, "on_the_fly", "cached")
    data_ratio = data_time["on_the_fly"] / max(data_time["cached"], 1e-9)
    up_params = sum(p.numel() for p in upstream.parameters())
    return {"id": "units.epoch", "section": "units",
            "what": (f"epoch of {cfg.utterances} x {cfg.utterance_seconds:g}s wavs, batch {cfg.unit_batch}, "
                     f"hubert_local {cfg.upstream} ({up_params / 1e6:.2f}M, layer {cfg.upstream_layer}) "
                     f"+ PT step: on-the-fly / precomputed units"),
            "value": r["median"], "unit": "x", "ratio": r, "seconds": _median_s(times),
            "data_path_ratio": data_ratio, "data_seconds_per_epoch": {k: v / reps for k, v in data_time.items()},
            "mean_units_per_utterance": statistics.mean(unit_lens), "target": None, "met": None}


# ---------------------------------------------------------------------------------------------- 5. FLOP/s
def lm_matmul_shapes(cfg: BenchConfig, B: int, T: int, L: int) -> List[tuple]:
    """The matmuls of one prompted-LM forward: ("mm", m, k, n) or ("bmm", b, m, k, n)."""
    d, f, H = cfg.dim, cfg.ffn, cfg.heads
    hd, S, N = d // H, L + T, B * T
    # q, k, v; the L prefix k/v inputs through k/v_proj count once (their projection is the same for every row)
    layer = [("mm", N, d, d)] * 3 + [("mm", L, d, d)] * 2 + [
        ("bmm", B * H, T, hd, S), ("bmm", B * H, T, S, hd),          # scores, weighted values (unmasked count)
        ("mm", N, d, d), ("mm", N, d, f), ("mm", N, f, d)]           # out_proj, fc1, fc2
    return layer * cfg.layers + [("mm", N, d, cfg.vocab)]             # tied output projection


def shape_flops(shapes) -> int:
    return sum(2 * math.prod(s[1:]) for s in shapes)


def bench_flops(cfg: BenchConfig, regime: str) -> dict:
    src_len, lab_len, L = ((cfg.asr_src, cfg.asr_label, cfg.asr_prompt) if regime == "asr"
                           else (cfg.ks_src, cfg.ks_label, cfg.ks_prompt))
    B = cfg.flops_batch
    model = PromptedULM(make_lm(cfg), PromptConfig(method="pt", prompt_length=L)).to(cfg.device).eval()
    inputs, _ = build_batch(random_rows(cfg, B, src_len, 31), random_rows(cfg, B, lab_len, 32), cfg.device)
    T = inputs.size(1)
    shapes = lm_matmul_shapes(cfg, B, T, L)
    flops = shape_flops(shapes)
    g = torch.Generator(device=cfg.device).manual_seed(0)
    operands = {}
    for s in set(shapes):
        a_shape, b_shape = ((s[1], s[2]), (s[2], s[3])) if s[0] == "mm" else ((s[1], s[2], s[3]), (s[1], s[3], s[4]))
        operands[s] = (torch.randn(a_shape, generator=g, device=cfg.device),
                       torch.randn(b_shape, generator=g, device=cfg.device))

    @torch.no_grad()
    def forward():
        model.logits(inputs)

    def matmuls():
        for s in shapes:
            a, b = operands[s]
            (torch.mm if s[0] == "mm" else torch.bmm)(a, b)

    forward()
    matmuls()
    times = interleaved({"forward": forward, "matmuls": matmuls}, cfg.reps, cfg.device)
    r = ratio(times, "matmuls", "forward")                      # = achieved FLOP/s / matmul FLOP/s
    secs = _median_s(times)
    return {"id": f"flops.{regime}", "section": "flops",
            "what": f"{regime.upper()} B={B} x T={T}, L={L}: LM forward FLOP/s / torch.mm FLOP/s (same shapes)",
            "value": r["median"], "unit": "fraction", "ratio": r, "seconds": secs, "gflop": flops / 1e9,
            "gflops_per_s": {k: flops / v / 1e9 for k, v in secs.items()},
            "target": ">= 0.5", "met": r["median"] >= 0.5}


# ---------------------------------------------------------------------------------------------- driver
SECTIONS = ("decode", "train", "units", "flops")


def run_bench(cfg: BenchConfig, sections=SECTIONS, log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(cfg.threads)
    lm = make_lm(cfg)
    info = {"config": asdict(cfg), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "lm_parameters": lm.num_parameters(), "load_average_start": os.getloadavg(),
            "lm": f"{cfg.layers} layers, d={cfg.dim}, {cfg.heads} heads, FFN {cfg.ffn}, vocab {cfg.vocab} "
                  f"({lm.num_parameters() / 1e6:.2f}M parameters)"}
    del lm
    log(f"speechprompt bench: LM {info['lm']}; {cfg.threads} thread(s); {cfg.reps} interleaved repetition(s); "
        f"device {cfg.device}")
    rows: List[dict] = []
    t_start = time.perf_counter()

    def add(new):
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            log(f"  {row['id']:<20} {format_value(row):>10}   {row['what']}")

    if "decode" in sections:
        for regime in ("ks", "asr"):
            add(bench_decode(cfg, regime))
    if "train" in sections:
        for regime in ("ks", "asr"):
            add(bench_train(cfg, regime))
        if cfg.rss and not cfg.device.startswith("cuda") and Path("/proc/self/status").exists():
            rss = bench_rss(cfg)
            for row in rows:
                if row["id"] == "train.asr.memory":
                    row["rss_cross_check"] = rss
    if "units" in sections:
        add(bench_units(cfg))
    if "flops" in sections:
        for regime in ("ks", "asr"):
            add(bench_flops(cfg, regime))
    info.update(rows=rows, seconds_total=time.perf_counter() - t_start, load_average_end=os.getloadavg())
    return info


def format_value(row: dict) -> str:
    v = row["value"]
    if row["unit"] == "x faster":
        return f"{v:.1f}x"
    if row["unit"] == "fraction":
        return f"{v:.2f}"
    return f"{v:.3g}x" if v < 10 else f"{v:.1f}x"


def format_table(result: dict) -> str:
    head = ("row", "result", "reps", "target", "met", "measurement")
    lines = []
    for row in result["rows"]:
        n = str(row["ratio"]["n"]) if "ratio" in row else "-"
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        extra = ""
        if "identical_outputs" in row:
            extra = f"; outputs identical: {row['identical_outputs']}"
        if "peak_mib" in row:
            extra = "; peak MiB " + ", ".join(f"{k} {v:.0f}" for k, v in row["peak_mib"].items())
        if "with_separator_and_prompt_dropout" in row:
            extra = f"; SpeechPrompt's PT (+separator, prompt dropout) / PEFT: " \
                    f"{row['with_separator_and_prompt_dropout']['median']:.3g}x"
        if row["id"].endswith(".params"):
            extra = f"; {row['relation']}"
        if "data_seconds_per_epoch" in row:
            d = row["data_seconds_per_epoch"]
            extra = (f"; data path alone: upstream+quantize {d['on_the_fly']:.2f} s vs reading units "
                     f"{d['cached'] * 1e3:.1f} ms per epoch")
        if "gflops_per_s" in row:
            extra = "; GFLOP/s " + ", ".join(f"{k} {v:.1f}" for k, v in row["gflops_per_s"].items())
        lines.append((row["id"], format_value(row), n, row["target"] or "-", met, row["what"] + extra))
    widths = [max(len(str(x[i])) for x in lines + [head]) for i in range(5)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head[:5], widths)) + "  " + head[5]]
    out.append("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    for x in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(x[:5], widths)) + "  " + x[5])
    return "\n".join(out)
