"""Prompt-bank benchmark: N tasks over the same utterances, served in one pass vs N sequential passes.

    python benchmarks/prompt_bank.py                 # KS shapes: 4 tasks x 64 one-second utterances
    python benchmarks/prompt_bank.py --quick         # smoke run (tiny upstream / LM)

Contenders, both through the serving code of ``speechprompt predict`` (serve.Predictor), interleaved, median
of per-round ratios:

- **end to end** (audio -> upstream -> k-means -> prompted LM -> label): one ``Predictor`` over the 4 tasks
  (features and units once per file, one mixed-task LM pass per batch) vs 4 single-task ``Predictor`` s run
  one after the other (what serving each task separately does: each runs the upstream and its own LM pass);
- **LM only** (decoding the same unit sequences): ``decode`` through ``PromptBank.logits_fn`` over the 4 x 64
  rows vs ``decode`` through each task's own ``PromptedULM.logits_fn`` over its 64 rows. Identical outputs are
  asserted.

Memory: parameter/buffer bytes of what each way keeps loaded - one LM (+ upstream) plus the bank's
stacked prompts, vs 4 copies of LM + prompts (+ upstream) as 4 separately served tasks hold.
Shapes: random HuBERT Base (12 x 768) layer 6 -> 100 k-means units (~50 frames/s, deduplicated), a
GSLM-shaped 6 x 512 unit LM, learnable verbalizer over 12 KS classes, prompt lengths 3/6/9/12 (the bank
pads them to 12 and masks), decoding budget 2 (one label unit + ``</s>``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:                  # the checkout's package, whatever the venv has installed
    sys.path.insert(1, str(REPO))

import torch  # noqa: E402

from measure.audio import random_hubert, tones  # noqa: E402
from measure.common import LMShape, interleaved, tensor_bytes  # noqa: E402


@dataclass
class BankBenchConfig(LMShape):
    """Sizes of the prompt-bank run; the LM and repetitions as :class:`measure.common.LMShape`."""

    tasks: int = 4
    utterances: int = 64
    seconds: float = 1.0                  # KS: one-second clips
    prompt_lengths: tuple = (3, 6, 9, 12)
    classes: int = 12
    upstream: str = "base"                # random HuBERT Base shape; "tiny" for a smoke run
    upstream_layer: int = 6
    batch: int = 64                       # files per Predictor batch (rows = files x tasks)

    @classmethod
    def quick(cls, **kw) -> "BankBenchConfig":
        return cls(**{**LMShape.QUICK, "utterances": 8, "upstream": "tiny", "upstream_layer": 1, **kw})


def run_bank_bench(cfg: BankBenchConfig, log: Callable[[str], None] = print) -> List[dict]:
    """Rows: {name, value, unit, detail}; see the module docstring."""
    from s3prl_speechprompt.lm_ref import LMRef, weights_fingerprint
    from s3prl_speechprompt.prompt.decode import decode
    from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
    from s3prl_speechprompt.prompt.verbalizer import Verbalizer
    from s3prl_speechprompt import compat
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer
    from s3prl_speechprompt.serve import Predictor
    from s3prl_speechprompt.trained import AudioUnits, Decoding, Served, TrainedTask
    from s3prl_speechprompt.tasks.base import get_task
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM
    from s3prl_speechprompt.units.prepare import to_units
    from s3prl_speechprompt.units.quantizer import KMeansQuantizer

    if len(cfg.prompt_lengths) < cfg.tasks:
        raise ValueError(f"prompt_lengths: need {cfg.tasks} lengths, got {cfg.prompt_lengths}")
    compat.apply()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="speechprompt-bank-bench-") as tmp:
        ckpt = random_hubert(Path(tmp) / "hubert.pt", cfg.upstream)
        upstream = {"upstream": "hubert_local", "upstream_ckpt": str(ckpt), "upstream_model_config": None,
                    "upstream_feature_selection": "hidden_states", "upstream_layer_selection": cfg.upstream_layer,
                    "upstream_feature_normalize": False}
        featurize = runner_featurizer({**upstream, "device": "cpu"})
        wavs = [w.numpy() for w in tones(cfg.utterances, cfg.seconds, torch.Generator().manual_seed(cfg.seed))]
        names = [f"utt{i:03d}.wav" for i in range(len(wavs))]
        frames = torch.cat([featurize(w) for w in wavs[:4]]).float()
        quantizer = KMeansQuantizer(frames[torch.randperm(frames.size(0))[:cfg.units]])
        dictionary = Dictionary([str(k) for k in range(cfg.units)])
        lm = UnitLM(ULMConfig(vocab_size=len(dictionary), embed_dim=cfg.dim, ffn_dim=cfg.ffn, layers=cfg.layers,
                              heads=cfg.heads, arch=f"bench_{cfg.layers}x{cfg.dim}")).eval()
        fp = weights_fingerprint(lm.state_dict())
        verbalizer = Verbalizer("learnable", {str(c): (str(c),) for c in range(cfg.classes)})
        ks = get_task("ks")()
        tasks = []
        for i in range(cfg.tasks):
            model = PromptedULM(lm, PromptConfig(prompt_length=cfg.prompt_lengths[i], prompt_dropout=0.0,
                                                 learnable_classes=cfg.classes)).eval()
            with torch.no_grad():
                model.verbalizer_head.weight.add_(0.1 * torch.randn_like(model.verbalizer_head.weight))
            trained = TrainedTask(task="ks", method="pt", lm=LMRef("bench", fp), prompt=model.cfg.to_dict(), state={},
                                  verbalizer=verbalizer.to_dict(), decoding=Decoding(2),
                                  audio=AudioUnits(upstream, quantizer.centroids))
            tasks.append(Served(name=f"task{i}", trained=trained, model=model, dictionary=dictionary,
                                verbalizer=verbalizer, task=ks, quantizer=quantizer, lm_fingerprint=fp))
        shared = {"f": featurize}
        factory = lambda *_: shared["f"]              # noqa: E731 - built once above, not timed
        together = Predictor(tasks, featurizer_factory=factory)
        apart = [Predictor([t], featurizer_factory=factory) for t in tasks]

        def serve(predictors):
            out = []
            for p in predictors:
                for i in range(0, len(wavs), cfg.batch):
                    out += p.predict(names[i:i + cfg.batch], wavs[i:i + cfg.batch])
            return out

        seen: Dict[str, set] = {}

        def timed(name, predictors):
            def run():
                seen.setdefault(name, set()).add(tuple(sorted((p.file, p.checkpoint, p.prediction)
                                                              for p in serve(predictors))))
            return run

        log(f"end to end: {len(wavs)} utterances x {cfg.tasks} tasks, {cfg.reps} rounds ...")
        t = interleaved({"bank": timed("bank", [together]), "sequential": timed("sequential", apart)}, cfg.reps)
        if seen["bank"] != seen["sequential"] or len(seen["bank"]) != 1:
            raise AssertionError("bank and per-task serving disagree")
        rs = [s / b for s, b in zip(t["sequential"], t["bank"])]
        n_pred = len(wavs) * cfg.tasks
        rows.append({"name": "end to end (upstream + k-means + LM): bank throughput / sequential",
                     "value": statistics.median(rs), "unit": "x",
                     "detail": f"median of {len(rs)} rounds (min {min(rs):.2f}, max {max(rs):.2f}); "
                               f"{n_pred / statistics.median(t['bank']):.1f} vs "
                               f"{n_pred / statistics.median(t['sequential']):.1f} predictions/s"})

        sources = [dictionary.encode(to_units(quantizer, featurize(w))) for w in wavs]
        bank = together.groups[0].bank
        ids = torch.arange(cfg.tasks).repeat_interleave(len(sources))
        flat = sources * cfg.tasks

        def lm_bank():
            return decode(bank.logits_fn(ids), flat, 2).tokens

        def lm_apart():
            return [g for t_ in tasks for g in decode(t_.model.logits_fn(), sources, 2).tokens]

        if lm_bank() != lm_apart():
            raise AssertionError("bank decode and per-task decode disagree")
        log(f"LM only: {len(flat)} rows ({statistics.mean(map(len, sources)):.1f} units on average) ...")
        t = interleaved({"bank": lm_bank, "sequential": lm_apart}, cfg.reps)
        rs = [s / b for s, b in zip(t["sequential"], t["bank"])]
        rows.append({"name": "LM only (decode the same units): bank throughput / sequential",
                     "value": statistics.median(rs), "unit": "x",
                     "detail": f"median of {len(rs)} rounds (min {min(rs):.2f}, max {max(rs):.2f}); "
                               f"bank {statistics.median(t['bank']) * 1e3:.0f} ms vs "
                               f"{statistics.median(t['sequential']) * 1e3:.0f} ms"})

        lm_b = tensor_bytes(lm.parameters(), lm.buffers())
        prompt_b = [tensor_bytes(p for n, p in t_.model.named_parameters() if not n.startswith("lm.")) for t_ in tasks]
        from s3prl import hub
        up_module = hub.hubert_local(ckpt=str(ckpt))
        up_b = tensor_bytes(up_module.parameters(), up_module.buffers())
        bank_b = bank.bank_bytes()
        one = lm_b + bank_b + up_b
        four = cfg.tasks * (lm_b + up_b) + sum(prompt_b)
        rows.append({"name": f"memory: 1 upstream + 1 LM + bank vs {cfg.tasks} separately loaded copies",
                     "value": one / four, "unit": "x",
                     "detail": f"{one / 2**20:.1f} MiB vs {four / 2**20:.1f} MiB (LM {lm_b / 2**20:.1f} MiB, upstream "
                               f"{up_b / 2**20:.1f} MiB, bank {bank_b / 2**10:.1f} KiB for {cfg.tasks} tasks; "
                               f"the prompts themselves {sum(prompt_b) / 2**10:.1f} KiB)"})
        rows.append({"name": f"memory: 1 LM + bank vs {cfg.tasks} LM copies (LM side only)",
                     "value": (lm_b + bank_b) / (cfg.tasks * lm_b + sum(prompt_b)), "unit": "x",
                     "detail": f"{(lm_b + bank_b) / 2**20:.2f} MiB vs "
                               f"{(cfg.tasks * lm_b + sum(prompt_b)) / 2**20:.2f} MiB"})
    return rows


def format_rows(rows: List[dict]) -> str:
    lines = ["| measurement | value | detail |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.2f}{r['unit']} | {r['detail']} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/prompt_bank.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny upstream and LM, 8 utterances, 1 round (smoke run)")
    p.add_argument("--reps", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--utterances", type=int, default=None, help="utterances (default 64; 8 with --quick)")
    p.add_argument("--upstream", choices=("base", "tiny"), default=None,
                   help="random HuBERT: Base shape (default) or the 2 x 32 test model (LM-bound serving)")
    p.add_argument("--out", default=None, metavar="FILE", help="write rows and config as JSON")
    args = p.parse_args(argv)
    kw = {k: getattr(args, k) for k in ("reps", "utterances", "upstream") if getattr(args, k) is not None}
    if args.upstream == "tiny":
        kw["upstream_layer"] = 1
    kw["threads"] = args.threads
    cfg = BankBenchConfig.quick(**kw) if args.quick else BankBenchConfig(**kw)
    t0 = time.time()
    rows = run_bank_bench(cfg, log=lambda s: print(s, file=sys.stderr))
    print(format_rows(rows))
    print(f"\n{cfg.tasks} tasks x {cfg.utterances} utterances, {cfg.threads} thread(s), {time.time() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": asdict(cfg), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
