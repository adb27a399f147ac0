"""The whole SpeechPrompt pipeline on an embedded default, offline, on CPU, in minutes.

1. synthesize a small Speech Commands v0.01 corpus (espeak-ng voices, real on-disk layout);
2. features from the s3prl upstream (default fbank, no download) -> k-means -> deduplicated units;
3. pretrain a small GSLM-format unit LM on the training units (stands in for GSLM's HuBERT-100 uLM,
   which cannot be downloaded here);
4. prompt-tune it with s3prl's own runner (``-d speechprompt_ks``), then ``-m evaluate -e`` on test.
Prints the test accuracy (with its 95% Wilson interval: ~120 test clips, one clip is ~0.8 points) and the
trainable-parameter count; everything lands under ``--out``.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from s3prl_speechprompt.errors import ConfigError

NAME = "demo"
HELP = "run the embedded default end to end (synthetic KS, fbank, small unit LM, s3prl runner)"


def add_arguments(parser):
    parser.add_argument("--out", default="speechprompt_demo", help="working directory for corpus, LM and runs")
    parser.add_argument("--task", default="ks", choices=["ks"], help="task of the embedded default")
    parser.add_argument("--method", default="pt", choices=["pt", "ftlm"], help="prompt tuning or LM fine-tuning")
    parser.add_argument("--upstream", "-u", default="fbank", help="s3prl upstream (offline ones: fbank, mfcc, mel)")
    parser.add_argument("--per-class", type=int, default=40, help="synthetic training utterances per keyword")
    parser.add_argument("--n-clusters", type=int, default=50, help="k-means clusters = unit vocabulary")
    parser.add_argument("--lm-arch", default="ulm_tiny", help="unit-LM architecture to pretrain (ulm_tiny, ulm_small, ...)")
    parser.add_argument("--lm-updates", type=int, default=300, help="unit-LM pretraining updates")
    parser.add_argument("--prompt-length", type=int, default=16, help="deep prompt length L")
    parser.add_argument("--verbalizer", default="learnable",
                        help="label -> unit mapping: learnable (v2's linear head; what a 2-layer LM needs), freq (v1), ...")
    parser.add_argument("--steps", type=int, default=1000,
                        help="s3prl runner total_steps (PT and FT-LM alike); dev is scored at 1/3, 2/3 and the end")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-2 PT, 1e-3 FT-LM)")
    parser.add_argument("--seed", type=int, default=0, help="seed for corpus, k-means and training")


def _run(cmd, log_path: Path):
    """Run a step in a subprocess, teeing its output to a log; a failure shows the log's tail."""
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"step failed ({' '.join(map(str, cmd[:6]))} ...), exit {proc.returncode}; "
                           f"log {log_path}:\n{tail}")
    return log_path.read_text(errors="replace")


def run(args) -> int:
    from s3prl_speechprompt.runlock import RunLock
    with RunLock(Path(args.out).resolve(), "speechprompt demo"):    # one demo per --out
        return _demo(args)


def _demo(args) -> int:
    import torch
    from s3prl_speechprompt import compat
    compat.apply()
    from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.synth import make_ks
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import prepare_units, to_units

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    if not (corpus / "speech_commands_v0.01").is_dir():
        print(f"[1/4] synthesizing Speech Commands v0.01 -> {corpus}", flush=True)
        make_ks(corpus, seed=args.seed, per_class=args.per_class, progress=False)
    _check_reuse(corpus / "speechprompt_synth_ks.json", {"seed": args.seed, "per_class": args.per_class},
                 lambda info: {"seed": info.get("seed"), "per_class": info.get("params", {}).get("per_class")})
    datarc = {"speech_commands_root": str(corpus / "speech_commands_v0.01"),
              "speech_commands_test_root": str(corpus / "speech_commands_test_set_v0.01")}
    task = get_task(args.task)(**datarc)

    print(f"[2/4] {args.upstream} features -> k-means ({args.n_clusters}) -> units", flush=True)
    runner_args = {"upstream": args.upstream, "upstream_feature_selection": "hidden_states", "device": "cpu"}
    featurize = runner_featurizer(runner_args)
    cache = out / "cache"
    quantizer, train_units = prepare_units(task.read_split("train"), featurize, read_item_audio,
                                           key_parts=upstream_key(runner_args), n_clusters=args.n_clusters,
                                           seed=args.seed, cache_dir=cache)
    dev_units = [UnitRecord(it.id, tuple(to_units(quantizer, featurize(read_item_audio(it)))), it.labels)
                 for it in task.read_split("dev")]
    # the expert must quantize with this very k-means: the LM below is pretrained on its unit ids, and a
    # k-means refitted inside the runner (its own seed) numbers the clusters differently
    km_path = out / "units" / "kmeans.pt"
    km_path.parent.mkdir(parents=True, exist_ok=True)
    quantizer.save(km_path)
    write_unit_manifest(out / "units" / "train.tsv", train_units)
    write_unit_manifest(out / "units" / "dev.tsv", dev_units)
    dict_path = out / "units" / "dict.txt"
    dict_path.write_text("".join(f"{k} 1\n" for k in range(args.n_clusters)))

    lm_dir = out / "ulm"
    lm_stamp = {"arch": args.lm_arch, "updates": args.lm_updates, "seed": args.seed,
                "kmeans": hashlib.sha1(quantizer.centroids.cpu().numpy().tobytes()).hexdigest()[:16]}
    if (lm_dir / "checkpoint_best.pt").is_file():
        _check_reuse(lm_dir / "demo_lm.json", lm_stamp, lambda info: info)
    else:
        print(f"[3/4] pretraining a {args.lm_arch} unit LM for {args.lm_updates} updates -> {lm_dir}", flush=True)
        pretrain_ulm(out / "units" / "train.tsv", lm_dir, valid_path=out / "units" / "dev.tsv", dict_path=dict_path,
                     cfg=PretrainConfig(arch=args.lm_arch, max_updates=args.lm_updates, max_tokens=2048,
                                        warmup_updates=50, valid_interval=max(args.lm_updates // 3, 1), seed=args.seed,
                                        threads=torch.get_num_threads()),   # honours OMP_NUM_THREADS
                     log=lambda *a: None)
        (lm_dir / "demo_lm.json").write_text(json.dumps(lm_stamp))

    config = yaml.safe_load(_packaged_config(f"speechprompt_{args.task}" + ("_ftlm" if args.method == "ftlm" else "")))
    rc = config["runner"]
    rc.update(total_steps=args.steps, log_step=50, eval_step=max(args.steps // 3, 1), save_step=max(args.steps // 3, 1),
              eval_dataloaders=["dev"])
    config["optimizer"]["lr"] = args.lr or (3e-2 if args.method == "pt" else 1e-3)
    if "scheduler" in config:
        config["scheduler"]["num_warmup_steps"] = max(args.steps // 10, 1)
    de = config["downstream_expert"]
    de.update(ulm=str(lm_dir), km=str(km_path), n_clusters=args.n_clusters, cache_dir=str(cache), verbalizer=args.verbalizer)
    de["datarc"].update(datarc, batch_size=32, eval_batch_size=64, num_workers=0)
    if args.method == "pt":
        de["prompt"] = {**de.get("prompt", {}), "prompt_length": args.prompt_length}
    cfg_path = out / f"{args.task}_{args.method}.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))

    expdir = out / "runs" / f"{args.task}_{args.method}"
    runner = [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream"]
    print(f"[4/4] s3prl runner: -m train -u {args.upstream} -d speechprompt_{args.task} ({args.steps} steps) -> {expdir}",
          flush=True)
    _run(runner + ["-m", "train", "-u", args.upstream, "-d", f"speechprompt_{args.task}", "-c", str(cfg_path),
                   "-p", str(expdir), "--device", "cpu", "--seed", str(args.seed)], out / "train.log")
    ckpt = expdir / "dev-best.ckpt"
    _run(runner + ["-m", "evaluate", "-t", "test", "-e", str(ckpt), "--device", "cpu"], out / "evaluate.log")
    from s3prl_speechprompt.record import RunRecord
    record = RunRecord.load(expdir)            # the run record the expert wrote (run.json)
    test = record.latest("test")
    correct, total = _count_correct(expdir / "test_predict.txt", expdir / "test_truth.txt")
    low, high = _wilson(correct, total)
    result = {"task": args.task, "method": args.method, "upstream": args.upstream, "test_accuracy": test.metrics.get("accuracy"),
              "test_correct": correct, "test_clips": total, "test_accuracy_wilson95": [round(low, 4), round(high, 4)],
              "trainable_params": record.trainable_params, "checkpoint_bytes": record.bytes_per_task,
              "expdir": str(expdir)}
    print(f"test accuracy: {result['test_accuracy']:.4f} ({correct}/{total}, 95% Wilson interval {low:.3f}-{high:.3f})"
          f"   trainable parameters: {result['trainable_params']:,}   checkpoint: {result['checkpoint_bytes']:,} bytes")
    print(json.dumps(result))
    return 0


def _check_reuse(stamp: Path, wanted: dict, read) -> None:
    """``--out`` is reused (corpus, LM) only when it was made with the same settings; else a ConfigError saying
    how to fix it."""
    have = read(json.loads(stamp.read_text())) if stamp.is_file() else None
    if have != wanted:
        raise ConfigError(f"--out: {stamp.parent} was made with {have or 'unknown settings'}, this run asks for "
                          f"{wanted}; use a fresh --out (or delete {stamp.parent})")


def _count_correct(predict: Path, truth: Path):
    """(correct, total) over the clips of ``<split>_predict.txt`` / ``<split>_truth.txt`` (``id label`` lines)."""
    def read(path):
        return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())
    hyp, ref = read(predict), read(truth)
    if set(hyp) != set(ref):
        raise ValueError(f"{predict} and {truth} list different clips ({len(set(hyp) ^ set(ref))} differ)")
    return sum(hyp[k] == ref[k] for k in ref), len(ref)


def _wilson(correct: int, total: int, confidence: float = 0.95):
    """Wilson score interval of an accuracy: with ~100 test clips one clip moves accuracy by a point."""
    from scipy.stats import binomtest
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _packaged_config(name: str) -> str:
    from importlib import resources
    return (resources.files("s3prl_speechprompt.downstream_configs") / f"{name}.yaml").read_text()

