"""GPU smoke test: the real s3prl path, a few minutes, before a day of GPU time.

One command a GPU owner runs first. It synthesizes a small Speech Commands corpus (``speechprompt synth
ks``), writes a randomly initialised HuBERT in s3prl's ``hubert_local`` format (HuBERT Base shape; nothing
is downloaded), and trains KS with prompt tuning (``-d speechprompt_ks``) and FT-LM
(``-d speechprompt_ks_ftlm``) through s3prl's own runner (``speechprompt-run-downstream``), in fp32 and bf16
(``downstream_expert.precision``), for a few hundred steps each: k-means fitted on the training features,
then training, then one dev evaluation. It prints time, peak memory and whether the training loss fell,
and exits 1 if it did not for any run (2 if a run failed).

The unit LM is a random GSLM-shaped ``transformer_lm_big`` by default (151M parameters, as the real
``hubert100`` LM); ``--ulm hubert100`` uses GSLM's released LM (downloaded once into the s3prl cache).
Memory: CUDA ``torch.cuda.max_memory_allocated`` per run; CPU peak RSS (VmHWM, reset per run).

    python benchmarks/gpu_smoke.py                                   # CUDA, full size, ~5 min on one GPU
    python benchmarks/gpu_smoke.py --device cpu --size tiny          # the same path on CPU in about a minute
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):      # the checkout's package; measure/ next to this file (also when imported)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from measure import peak_rss_mib, reset_peak_rss  # noqa: E402

SIZES = {   # corpus, upstream, LM and run lengths per --size
    "full": dict(per_class=24, upstream="base", layer=6, ulm_arch="transformer_lm_big", n_clusters=100, steps=300,
                 batch=32, lr={"pt": 5e-3, "ftlm": 5e-4}, log_step=25, fit_max_frames=50_000),
    "tiny": dict(per_class=3, upstream="tiny", layer=1, ulm_arch="ulm_tiny", n_clusters=20, steps=30,
                 batch=8, lr={"pt": 5e-2, "ftlm": 5e-3}, log_step=5, fit_max_frames=5_000),
}
DOWNSTREAMS = {"pt": "speechprompt_ks", "ftlm": "speechprompt_ks_ftlm"}
FALL = 0.9      # "the loss fell": mean of the last logged window <= 90% of the first one


def write_config(path: Path, method: str, prec: str, size: dict, steps: int, corpus: Path, ulm: str,
                 cache: Path) -> Path:
    import yaml

    from s3prl_speechprompt.s3prl_plugin.registry import default_config_path

    name = DOWNSTREAMS[method]
    cfg = yaml.safe_load(Path(default_config_path(name)).read_text())
    cfg["runner"].update(total_steps=steps, log_step=size["log_step"], eval_step=steps, save_step=steps,
                         max_keep=1, eval_dataloaders=["dev"], fp16=prec == "fp16")
    cfg["optimizer"]["lr"] = size["lr"][method]
    if "scheduler" in cfg:
        cfg["scheduler"]["num_warmup_steps"] = max(steps // 10, 1)
    de = cfg["downstream_expert"]
    de.update(ulm=ulm, km=None, n_clusters=size["n_clusters"], fit_max_frames=size["fit_max_frames"],
              cache_dir=str(cache), precision=prec)
    de["datarc"].update(speech_commands_root=str(corpus / "speech_commands_v0.01"),
                        speech_commands_test_root=str(corpus / "speech_commands_test_set_v0.01"),
                        batch_size=size["batch"], eval_batch_size=size["batch"], num_workers=0)
    path.write_text(yaml.safe_dump(cfg))
    return path


def child(runs: list) -> list:
    """Run each ``{"name", "argv"}`` through the runner wrapper in this process; record the train losses the
    expert logs (s3prl calls ``log_records`` every ``log_step``), wall time and peak memory per run."""
    import gc

    import torch

    from s3prl_speechprompt.s3prl_plugin.records import RunRecorder
    from s3prl_speechprompt.s3prl_plugin.run_downstream import main

    seen = []
    original = RunRecorder.log

    def log(self, split, records, logger, global_step, best_score):     # the experts' log_records call this
        if split == "train" and records["loss"]:
            seen.append((global_step, sum(records["loss"]) / len(records["loss"])))
        return original(self, split, records, logger, global_step, best_score)

    RunRecorder.log = log
    results = []
    for run in runs:
        cuda = run["device"].startswith("cuda")
        seen.clear()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()
        t0 = time.perf_counter()
        try:
            main(run["argv"])
        except BaseException as e:                  # s3prl exits through SystemExit on some errors
            results.append({"name": run["name"], "error": f"{type(e).__name__}: {e}"})
            continue
        secs = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else peak_rss_mib()
        results.append({"name": run["name"], "seconds": secs, "peak_mib": peak, "losses": list(seen),
                        "memory": "cuda.max_memory_allocated" if cuda else "VmHWM (process peak RSS)"})
    return results


def summarize(result: dict, steps: int) -> dict:
    losses = [loss for _, loss in result.get("losses", [])]
    if len(losses) < 2:
        return {**result, "fell": False, "why": f"only {len(losses)} logged training loss(es)"}
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {**result, "first_loss": first, "last_loss": last, "fell": last <= FALL * first,
            "s_per_step": result["seconds"] / steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full: HuBERT Base-shaped upstream, transformer_lm_big LM, batch 32, 300 steps; "
                        "tiny: 2x32 HuBERT, ulm_tiny LM, batch 8, 30 steps (the CPU test)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the size's)")
    p.add_argument("--methods", default="pt,ftlm", help="comma-separated subset of pt,ftlm")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="comma-separated subset of fp32,bf16,fp16 (fp16: CUDA only, uses s3prl's runner.fp16 scaler)")
    p.add_argument("--ulm", default=None, help="unit LM: a directory, or hubert100 (GSLM's, downloaded); "
                                               "default: a random LM of the size's architecture")
    p.add_argument("--out", default=None, help="keep everything here (default: a temporary directory, removed)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(Path(args.child).read_text()))))
        return 0

    from s3prl_speechprompt import precision
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(DOWNSTREAMS):
        p.error(f"--methods: pt and/or ftlm, got {args.methods!r}")
    precs = [precision.check(x, "--precisions") for x in args.precisions.split(",") if x]
    if "fp16" in precs and not args.device.startswith("cuda"):
        p.error("--precisions fp16 needs --device cuda (s3prl's fp16 loss scaler is CUDA-only)")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            p.error("--device cuda but torch sees no CUDA device; run with --device cpu (add --size tiny to "
                    "keep it short)")
    size = SIZES[args.size]
    steps = args.steps or size["steps"]

    tmp = None
    if args.out:
        root = Path(args.out)
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="speechprompt-gpu-smoke-")
        root = Path(tmp.name)
    t_start = time.perf_counter()
    from s3prl_speechprompt import compat
    compat.apply()
    import torch

    from measure import random_hubert
    from s3prl_speechprompt.synth import make_ks
    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    corpus = root / "corpus"
    if not (corpus / "speech_commands_v0.01").is_dir():
        make_ks(corpus, seed=0, per_class=size["per_class"], progress=False)
    hubert = root / "hubert_random.pt"
    if not hubert.is_file():
        random_hubert(hubert, size["upstream"])
    ulm = args.ulm
    if ulm is None:
        ulm_dir = root / f"ulm_random_{size['ulm_arch']}"
        if not (ulm_dir / "dict.txt").is_file():
            torch.manual_seed(0)
            d = Dictionary([str(k) for k in range(size["n_clusters"])])
            save_ulm(UnitLM(ULMConfig.from_arch(size["ulm_arch"], len(d))), d, ulm_dir)
        ulm = str(ulm_dir)
    prep_s = time.perf_counter() - t_start
    print(f"gpu_smoke: corpus, random hubert_local ({size['upstream']}) and LM ({ulm}) ready in {prep_s:.0f} s; "
          f"{len(methods) * len(precs)} runs of {steps} steps on {args.device}", flush=True)

    runs = []
    for method in methods:
        for prec in precs:
            name = f"{method}_{prec}"
            cfg = write_config(root / f"{name}.yaml", method, prec, size, steps, corpus, ulm, root / "unit_cache")
            runs.append({"name": name, "device": args.device, "argv": [
                "-m", "train", "-u", "hubert_local", "-k", str(hubert), "-l", str(size["layer"]),
                "-d", DOWNSTREAMS[method], "-c", str(cfg), "-p", str(root / "exp" / name), "--device", args.device]})
    spec = root / "runs.json"
    spec.write_text(json.dumps(runs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(spec)], env=env,
                         capture_output=True, text=True)
    if res.returncode:
        print(res.stdout[-3000:], res.stderr[-5000:], sep="\n", file=sys.stderr)
        print("gpu_smoke: the runner process failed (output above)", file=sys.stderr)
        return 2
    results = [summarize(r, steps) for r in json.loads(res.stdout.strip().splitlines()[-1])]
    (root / "gpu_smoke.json").write_text(json.dumps(results, indent=1))

    print(f"\n{'run':<12} {'time s':>8} {'s/step':>7} {'peak MiB':>9} {'first loss':>10} {'last loss':>10}  loss fell")
    failed = broken = False
    for r in results:
        if "error" in r:
            print(f"{r['name']:<12} ERROR {r['error']}")
            broken = True
            continue
        if "first_loss" not in r:
            print(f"{r['name']:<12} {r['seconds']:>8.1f} {'-':>7} {r['peak_mib']:>9,.0f} {'-':>10} {'-':>10}  "
                  f"NO ({r['why']})")
            failed = True
            continue
        print(f"{r['name']:<12} {r['seconds']:>8.1f} {r['s_per_step']:>7.3f} {r['peak_mib']:>9,.0f} "
              f"{r['first_loss']:>10.4f} {r['last_loss']:>10.4f}  {'yes' if r['fell'] else 'NO'}")
        failed |= not r["fell"]
    mem = results[0].get("memory", "") if results else ""
    print(f"\npeak memory: {mem}; time per run includes one dev evaluation, and for the first run fitting the "
          f"k-means (cached for the others); total {time.perf_counter() - t_start:.0f} s; "
          f"files: {root if args.out else '(removed)'}")
    if tmp is not None:
        tmp.cleanup()
    if broken:
        return 2
    if failed:
        print(f"gpu_smoke: the training loss did not fall (last window > {FALL:.0%} of the first) in a run above",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
