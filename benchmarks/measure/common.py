"""What every benchmark shares: the sizes (:class:`LMShape`, :class:`BenchConfig`), interleaved timing and ratios,
the benchmark LM, random token rows, tensor bytes, and peak-memory measurement of one training step."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

N_SPECIALS = 4


@dataclass
class LMShape:
    """The benchmark LM and how a run repeats: GSLM's ``transformer_lm`` shape (``ulm_base``; the released
    ``transformer_lm_big`` is 12 x 1024, 16 heads, FFN 4096, scaled down here to fit a CPU) over ``units`` units."""

    layers: int = 6
    dim: int = 512
    heads: int = 8
    ffn: int = 2048
    units: int = 100
    reps: int = 3
    threads: int = 1
    seed: int = 0

    QUICK = dict(layers=2, dim=64, heads=4, ffn=256, reps=1)     # a smoke run's LM: 0.11M parameters


@dataclass
class BenchConfig(LMShape):
    """Sizes of one efficiency run (benchmarks/efficiency.py)."""

    quick: bool = False
    device: str = "cpu"
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
        kw = dict(LMShape.QUICK, quick=True, asr_src=120, asr_label=40,
                  asr_prompt=16, asr_train_batch=4, ks_batch=16, flops_batch=32, upstream="tiny",
                  upstream_layer=1, utterances=8, utterance_seconds=0.5, unit_batch=4, unit_epochs=1, rss=False)
        kw.update(overrides)
        return cls(**kw)

    @property
    def vocab(self) -> int:
        return self.units + N_SPECIALS


# ---------------------------------------------------------------------------------------------- timing
def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (``VmHWM``) so the next reading covers only what follows;
    False where the kernel does not allow it (then the peak covers the whole process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set of this process in MiB (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: Dict[str, Callable[[], object]], reps: int, device: str = "cpu") -> Dict[str, List[float]]:
    """Seconds per call of each function, ``reps`` rounds, the order rotated every round."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def ratio(times: Dict[str, List[float]], num: str, den: str) -> dict:
    """Median of the per-round ratios num/den, with the count and the spread."""
    rs = [a / b for a, b in zip(times[num], times[den])]
    return {"median": statistics.median(rs), "n": len(rs), "min": min(rs), "max": max(rs)}


def median_s(times: Dict[str, List[float]]) -> Dict[str, float]:
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


def tensor_bytes(*groups) -> int:
    """Bytes of the distinct storages among groups of tensors (parameters, buffers, optimizer state)."""
    seen, total = set(), 0
    for group in groups:
        for t in group:
            if torch.is_tensor(t) and t.numel():
                s = t.untyped_storage()
                if s.data_ptr() not in seen:
                    seen.add(s.data_ptr())
                    total += s.nbytes()
    return total


def opt_tensors(opt) -> list:
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

    live = tensor_bytes(model.parameters(), model.buffers(), opt_tensors(opt))
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


def trainer(lm: UnitLM, method: str, prompt_length: int, lm_dropout=None, **prompt):
    """(model, optimizer, trainable params) as the engine trains: Adam(0.9, 0.98), clip-norm 1.0 in the step."""
    cfg = PromptConfig(method=method, prompt_length=prompt_length, lm_dropout=lm_dropout, **prompt)
    torch.manual_seed(1)
    model = PromptedULM(lm, cfg).to(next(lm.parameters()).device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-3 if method == "pt" else 5e-4, betas=(0.9, 0.98), eps=1e-8)
    return model, opt, params


def step_fn(opt, params, loss_fn):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step
