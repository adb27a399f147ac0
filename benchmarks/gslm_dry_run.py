"""Full-size dry run: GSLM's hubert100 unit LM path, with random weights, at the shapes a real job uses.

What a user's first GPU job does with ``ulm: hubert100``, minus the download: this script builds GSLM's
``transformer_lm_big`` (151,263,232 parameters, random weights) in the container of GSLM's release (a
fairseq-0.10-era ``checkpoint_best.pt``: ``args`` is an ``argparse.Namespace`` with the fields
``fairseq-train --task language_modeling --arch transformer_lm_big ... --fp16`` stores, no ``cfg``; weights in
fp16 as ``--fp16`` training saves them), packs it with ``dict.txt`` into a tarball laid out like
``hubert100_lm.tgz`` (one top directory ``hubert100_lm/``), places it in an s3prl-style cache under the name
``ulm: hubert100`` resolves to (``$S3PRL_CACHE/download/<sha256(url)>.hubert100_lm.tgz``), and then, in a fresh
process per measurement, runs the real code path: ``resolve_ulm("hubert100")`` (extraction, first time) ->
``load_ulm`` -> ``PromptedULM`` (PT or FT-LM) -> one training step (Adam, clip 1.0, the precision module's
autocast / scaler) -> one greedy decode (KV cache; ``</s>`` suppressed so a random LM uses the whole budget).

Shapes: KS (~50 source units, 1 label unit, L=3) at batch 1/8/32 and ASR (~500 source units + 176 label
tokens, L=176) at batch 1/8 (add ``asr:32`` to ``--shapes`` if the machine has the memory and the time).

Memory per process: CPU, peak RSS (``VmHWM``; reset between phases through ``/proc/self/clear_refs`` where the
kernel allows it, else ``ru_maxrss``, which then includes the earlier phases); CUDA,
``torch.cuda.max_memory_allocated`` per phase. Nothing is written to the user's cache unless ``--cache-dir``
points there: by default HOME and S3PRL_CACHE are a temporary directory.

    python benchmarks/gslm_dry_run.py --out dry_run                      # full size, CPU (slow: ~1 h on 2 cores)
    python benchmarks/gslm_dry_run.py --device cuda --shapes ks:1,ks:8,ks:32,asr:1,asr:8,asr:32
    python benchmarks/gslm_dry_run.py --size tiny --out /tmp/dry          # the same path in seconds
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from argparse import Namespace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):      # the checkout's package; measure/ next to this file (also when imported)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from measure import peak_rss_mib, reset_peak_rss  # noqa: E402

N_UNITS = 100
GSLM_PARAMS = 151_263_232
SHAPES = {"ks": dict(src=50, label=1, prompt=3), "asr": dict(src=500, label=176, prompt=176)}
DEFAULT_SHAPES = "ks:1,ks:8,ks:32,asr:1,asr:8"
MEASURE_THREADS = 1


# --------------------------------------------------------------------------------------------- the release
def release_args(size: str, data_dir: str = "data-bin/") -> Namespace:
    """The ``args`` of a fairseq 0.10 ``fairseq-train`` run with GSLM's ULM recipe (examples/textless_nlp/gslm/
    ulm/README.md): task, model and optimisation fields as fairseq 0.10's parser and ``transformer_lm_big``
    fill them (reconstructed: the released file itself cannot be downloaded here). ``tiny`` keeps every field
    and shrinks the model through the explicit ``decoder_*`` sizes (arch ``transformer_lm``)."""
    big = size == "big"
    d, ffn, layers, heads = (1024, 4096, 12, 16) if big else (64, 256, 2, 4)
    fields = dict(
        # common / distributed / dataset (fairseq 0.10 options.py)
        no_progress_bar=False, log_interval=100, log_format=None, tensorboard_logdir=None, wandb_project=None,
        seed=100501, cpu=False, tpu=False, bf16=False, memory_efficient_bf16=False, fp16=True,
        memory_efficient_fp16=False, fp16_no_flatten_grads=False, fp16_init_scale=128, fp16_scale_window=None,
        fp16_scale_tolerance=0.0, min_loss_scale=0.0001, threshold_loss_scale=None, user_dir=None,
        empty_cache_freq=0, all_gather_list_size=16384, model_parallel_size=1, checkpoint_suffix="",
        checkpoint_shard_count=1, quantization_config_path=None, profile=False, criterion="cross_entropy",
        tokenizer=None, bpe=None, optimizer="adam", lr_scheduler="inverse_sqrt", scoring="bleu",
        task="language_modeling", num_workers=1, skip_invalid_size_inputs_valid_test=False, max_tokens=4096,
        batch_size=None, required_batch_size_multiple=8, required_seq_len_multiple=1, dataset_impl=None,
        data_buffer_size=10, train_subset="train", valid_subset="valid", validate_interval=1,
        validate_interval_updates=0, validate_after_updates=0, fixed_validation_seed=None,
        disable_validation=False, max_tokens_valid=4096, batch_size_valid=None, curriculum=0,
        gen_subset="test", num_shards=1, shard_id=0, distributed_world_size=8, distributed_rank=0,
        distributed_backend="nccl", distributed_init_method=None, distributed_port=-1, device_id=0,
        distributed_no_spawn=False, ddp_backend="c10d", bucket_cap_mb=25, fix_batches_to_gpus=False,
        find_unused_parameters=False, fast_stat_sync=False, broadcast_buffers=False, distributed_wrapper="DDP",
        slowmo_momentum=None, slowmo_algorithm="LocalSGD", localsgd_frequency=3, nprocs_per_node=8,
        pipeline_model_parallel=False, pipeline_balance=None, pipeline_devices=None, pipeline_chunks=0,
        pipeline_encoder_balance=None, pipeline_encoder_devices=None, pipeline_decoder_balance=None,
        pipeline_decoder_devices=None, pipeline_checkpoint="never", zero_sharding="none",
        # optimisation / checkpointing
        arch="transformer_lm_big" if big else "transformer_lm", max_epoch=0, max_update=500000,
        stop_time_hours=0, clip_norm=1.0, sentence_avg=False, update_freq=[16], lr=[0.0005], min_lr=-1.0,
        use_bmuf=False, save_dir="checkpoints", restore_file="checkpoint_last.pt", finetune_from_model=None,
        reset_dataloader=False, reset_lr_scheduler=False, reset_meters=False, reset_optimizer=False,
        optimizer_overrides="{}", save_interval=1, save_interval_updates=0, keep_interval_updates=-1,
        keep_last_epochs=-1, keep_best_checkpoints=-1, no_save=False, no_epoch_checkpoints=False,
        no_last_checkpoints=False, no_save_optimizer_state=False, best_checkpoint_metric="loss",
        maximize_best_checkpoint_metric=False, patience=-1, adam_betas="(0.9, 0.98)", adam_eps=1e-08,
        weight_decay=0.0, use_old_adam=False, warmup_updates=4000, warmup_init_lr=1e-07,
        # task: language_modeling
        data=data_dir, sample_break_mode="eos", tokens_per_sample=3072, output_dictionary_size=-1,
        self_target=False, future_target=False, past_target=False, add_bos_token=False,
        max_target_positions=3072, shorten_method="none", shorten_data_split_list="",
        # model: transformer_lm (+ transformer_lm_big / base_lm_architecture defaults)
        activation_fn="relu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, relu_dropout=0.0,
        decoder_embed_dim=d, decoder_output_dim=d, decoder_input_dim=d, decoder_ffn_embed_dim=ffn,
        decoder_layers=layers, decoder_attention_heads=heads, decoder_normalize_before=True,
        no_decoder_final_norm=False, adaptive_softmax_cutoff=None, adaptive_softmax_dropout=0,
        adaptive_softmax_factor=4, no_token_positional_embeddings=False, share_decoder_input_output_embed=True,
        character_embeddings=False, character_filters="[(1, 64), (2, 128), (3, 192), (4, 256), (5, 256), "
                                                       "(6, 256), (7, 256)]",
        character_embedding_dim=4, char_embedder_highway_layers=2, adaptive_input=False,
        adaptive_input_factor=4, adaptive_input_cutoff=None, tie_adaptive_weights=False, tie_adaptive_proj=False,
        decoder_learned_pos=False, layernorm_embedding=False, no_scale_embedding=False,
        checkpoint_activations=False, decoder_layerdrop=0.0, decoder_layers_to_keep=None, quant_noise_pq=0.0,
        quant_noise_pq_block_size=8, quant_noise_scalar=0.0,
    )
    return Namespace(**fields)


def release_state(size: str, seed: int = 0, weights_dtype: str = "fp16") -> dict:
    """A checkpoint dict as fairseq 0.10's ``save_state`` wrote it for this model (random weights)."""
    import torch

    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    torch.manual_seed(seed)
    arch = "transformer_lm_big" if size == "big" else "ulm_tiny"
    lm = UnitLM(ULMConfig.from_arch(arch, N_UNITS + 4))
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[weights_dtype]
    model = {k: v.detach().to(dtype) for k, v in lm.state_dict().items()}
    model["decoder.version"] = torch.tensor([3.0])                         # fairseq's buffers, in its names
    model["decoder.embed_positions._float_tensor"] = torch.tensor([1.0])
    return {
        "args": release_args(size),
        "model": model,
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FP16Optimizer",
                               "lr_scheduler_state": {"best": 1.88}, "num_updates": 100000}],
        "extra_state": {"metrics": {}, "previous_training_time": 1.0e5, "best": 1.88, "val_loss": 1.88,
                        "train_iterator": {"epoch": 40, "iterations_in_epoch": 0, "shuffle": True}},
        "last_optimizer_state": None,
    }


def build_release_tarball(out: Path, size: str = "big", seed: int = 0, weights_dtype: str = "fp16") -> Path:
    """``out`` = a ``.tgz`` holding ``hubert100_lm/{checkpoint_best.pt,dict.txt}``; returns ``out``."""
    import torch

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        d = Path(tmp) / "hubert100_lm"
        d.mkdir()
        torch.save(release_state(size, seed, weights_dtype), d / "checkpoint_best.pt")
        (d / "dict.txt").write_text("".join(f"{u} {1000 - u}\n" for u in range(N_UNITS)))
        with tarfile.open(out, "w:gz", compresslevel=1) as tar:
            tar.add(d, arcname="hubert100_lm")
    return out


def place_in_cache(tarball: Path, cache: Path) -> Path:
    """Put ``tarball`` where ``resolve_ulm("hubert100")`` looks with ``S3PRL_CACHE=cache``."""
    from s3prl_speechprompt.ulm.pretrained import ULM_URLS

    url = ULM_URLS["hubert100"]
    dest = cache / "download" / f"{hashlib.sha256(url.encode()).hexdigest()}.{url.rsplit('/', 1)[-1]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tarball, dest)                 # --cache-dir may be on another filesystem than the temp dir
    return dest


# --------------------------------------------------------------------------------------------- measuring
def memory_cap_bytes(max_gib: float) -> int:
    """``max_gib``, lowered to what the machine has available now minus 1 GiB (``MemAvailable``): on a shared
    machine a measurement must fail cleanly rather than push others into the OOM killer."""
    cap = int(max_gib * 2 ** 30)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        cap = min(cap, max(avail - 2 ** 30, 2 ** 30))
    except (OSError, StopIteration):
        pass
    return cap


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process: resolve + load, one training step, one greedy decode."""
    import torch

    from s3prl_speechprompt import precision
    from s3prl_speechprompt.prompt.decode import decode
    from s3prl_speechprompt.prompt.prompted import EOS, PromptConfig, PromptedULM, build_batch
    from s3prl_speechprompt.ulm.checkpoint import load_ulm
    from s3prl_speechprompt.ulm.pretrained import resolve_ulm

    torch.set_num_threads(spec["threads"])
    dev, prec, method = spec["device"], spec["precision"], spec["method"]
    cuda = dev.startswith("cuda")
    out = {k: spec[k] for k in ("method", "precision", "task", "batch", "device")}
    resettable = not cuda and reset_peak_rss()

    def phase_start():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif resettable:
            reset_peak_rss()
        return time.perf_counter()

    def phase_end(name, t0):
        if cuda:
            torch.cuda.synchronize()
            out[f"{name}_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            out[f"{name}_mib"] = peak_rss_mib()
        out[f"{name}_s"] = time.perf_counter() - t0

    out["baseline_mib"] = peak_rss_mib()
    if not cuda and spec.get("max_gib"):        # a clean MemoryError instead of the OOM killer on a shared box
        import resource
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        out["cap_mib"] = memory_cap_bytes(spec["max_gib"]) / 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (vm + int(out["cap_mib"] * 2 ** 20), resource.RLIM_INFINITY))
    t0 = phase_start()
    path = resolve_ulm("hubert100")
    lm, dictionary, info = load_ulm(path)
    lm = lm.to(dev)
    phase_end("load", t0)
    out.update(params=lm.num_parameters(), resolved=str(path), arch=lm.cfg.arch)

    shape = SHAPES[spec["task"]]
    B = spec["batch"]
    g = torch.Generator().manual_seed(1)
    sources = torch.randint(4, len(dictionary), (B, shape["src"]), generator=g).tolist()
    labels = torch.randint(4, len(dictionary), (B, shape["label"]), generator=g).tolist()
    pcfg = PromptConfig(method=method, prompt_length=shape["prompt"])
    torch.manual_seed(0)
    model = PromptedULM(lm, pcfg).to(dev).train()
    params = list(model.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=5e-3 if method == "pt" else 5e-4, betas=(0.9, 0.98), eps=1e-8)
    scaler = precision.grad_scaler(prec, dev)
    inputs, targets = build_batch(sources, labels, dev)
    out.update(trainable=model.num_trainable(), tokens_per_row=int(inputs.size(1)))

    t0 = phase_start()
    with precision.autocast(prec, dev):
        loss = model.loss(inputs, targets)
    precision.optimizer_step(loss, opt, params, scaler, clip_norm=1.0)
    opt.zero_grad(set_to_none=True)
    phase_end("step", t0)
    out["loss"] = loss.detach().item()
    del loss

    orig_logits = model.logits

    def no_eos_logits(tokens, cache=None):              # a random LM would stop at random: use the budget
        x = orig_logits(tokens, cache)
        x[..., EOS] = float("-inf")
        return x

    model.logits = no_eos_logits
    t0 = phase_start()
    gen = decode(model.logits_fn(), sources, shape["label"] + 1, precision=prec).tokens
    phase_end("decode", t0)
    out["generated"] = len(gen[0])
    out["memory_method"] = ("cuda.max_memory_allocated per phase" if cuda else
                            "VmHWM per phase (reset via /proc/self/clear_refs)" if resettable else
                            "ru_maxrss (cumulative: includes earlier phases)")
    return out


def run_child(spec: dict, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s"}
    if res.returncode == -9:
        return {**spec, "error": "killed (SIGKILL: the OOM killer, the machine ran out of memory)"}
    if res.returncode:
        tail = (res.stderr.strip().splitlines()[-1:] or ["(no stderr)"])[0]
        if "allocate" in tail or "MemoryError" in tail:
            return {**spec, "error": f"stopped by the address-space cap (--max-gib {spec.get('max_gib')}, lowered to "
                                     f"the available memory - 1 GiB; virtual reservations count): {tail[:120]}"}
        return {**spec, "error": f"exit {res.returncode}: {tail[:300]}"}
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def _key(row: dict) -> tuple:
    return row["task"], row["batch"], row["method"], row["precision"]


def markdown(rows, header: str) -> str:
    lines = [header, "",
             "| task | batch | tokens/row | method | precision | trainable | imports MiB | load s | load MiB | step s "
             "| step MiB | decode s | decode MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task'].upper()} | {r['batch']} | - | {r['method']} | {r['precision']} | - | "
                         f"- | {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['task'].upper()} | {r['batch']} | {r['tokens_per_row']} | {r['method']} | {r['precision']} | "
            f"{r['trainable']:,} | {r['baseline_mib']:,.0f} | {r['load_s']:.1f} | {r['load_mib']:,.0f} | {r['step_s']:.1f} | "
            f"{r['step_mib']:,.0f} | {r['decode_s']:.1f} | {r['decode_mib']:,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("big", "tiny"), default="big",
                   help="big: GSLM's transformer_lm_big (151M); tiny: the same container with a 2x64 LM (seconds)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (CUDA memory = max_memory_allocated)")
    p.add_argument("--shapes", default=DEFAULT_SHAPES,
                   help=f"comma-separated task:batch items, task in {sorted(SHAPES)} (default {DEFAULT_SHAPES})")
    p.add_argument("--methods", default="pt,ftlm", help="comma-separated subset of pt,ftlm")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated subset of fp32,bf16,fp16")
    p.add_argument("--threads", type=int, default=MEASURE_THREADS, help="torch threads per measurement process")
    p.add_argument("--weights-dtype", choices=("fp16", "fp32"), default="fp16",
                   help="dtype of the stored weights (fairseq --fp16 training stores fp16; the loader upcasts)")
    p.add_argument("--cache-dir", default=None, help="S3PRL_CACHE to place the tarball in (default: a temporary "
                                                    "directory, also used as HOME; never the user's cache)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement process")
    p.add_argument("--max-gib", type=float, default=10.0,
                   help="CPU only: cap on the address space a measurement may add after its imports (RLIMIT_AS; "
                        "lowered to the available memory - 1 GiB), so a shape over it stops with a MemoryError instead "
                        "of waking the OOM killer. Reserved virtual memory counts too (bf16 kernels reserve a lot), so "
                        "a capped failure is not proof of the RSS need: use 0 (no cap) when memory is to spare")
    p.add_argument("--out", default="gslm_dry_run", help="directory for results.json and table.md")
    p.add_argument("--resume", action="store_true",
                   help="keep the successful measurements in OUT/results.json and run only the missing/failed ones")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from s3prl_speechprompt import precision
    shapes = []
    for item in filter(None, (s.strip() for s in args.shapes.split(","))):
        task, _, batch = item.partition(":")
        if task not in SHAPES or not batch.isdigit():
            p.error(f"--shapes: expected task:batch with task in {sorted(SHAPES)}, got {item!r}")
        shapes.append((task, int(batch)))
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - {"pt", "ftlm"}:
        p.error(f"--methods: pt and/or ftlm, got {args.methods!r}")
    precs = [precision.check(x, "--precisions") for x in args.precisions.split(",") if x]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="gslm-dry-run-")
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else Path(tmp.name) / "s3prl_cache"
    env = {**os.environ, "S3PRL_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if not args.cache_dir:
        env["HOME"] = tmp.name
    t0 = time.perf_counter()
    tarball = build_release_tarball(Path(tmp.name) / "hubert100_lm.tgz", args.size, weights_dtype=args.weights_dtype)
    size_mib = tarball.stat().st_size / 2 ** 20
    placed = place_in_cache(tarball, cache)
    build_s = time.perf_counter() - t0
    print(f"release-shaped tarball ({args.size}, {args.weights_dtype} weights): {size_mib:,.0f} MiB, built in "
          f"{build_s:.0f} s, placed at {placed}", flush=True)

    first = run_child({"method": methods[0], "precision": "fp32", "task": shapes[0][0], "batch": 1,
                       "device": args.device, "threads": args.threads, "max_gib": args.max_gib}, env,
                      args.timeout)   # extracts the tarball
    if "error" in first:
        print(f"first resolve/load failed: {first['error']}", file=sys.stderr)
        return 1
    print(f"resolve (extract) + load: {first['load_s']:.1f} s; {first['params']:,} parameters; "
          f"{first['resolved']}", flush=True)
    done = {}
    if args.resume and (out / "results.json").is_file():      # keep the finished measurements of an earlier run
        old = json.loads((out / "results.json").read_text())
        if (old["size"], old["device"]) == (args.size, args.device):
            done = {_key(r): r for r in old["rows"] if "error" not in r}
    rows = []
    for task, batch in shapes:
        for method in methods:
            for prec in precs:
                spec = {"method": method, "precision": prec, "task": task, "batch": batch, "device": args.device,
                        "threads": args.threads, "max_gib": args.max_gib}
                if _key(spec) in done:
                    rows.append(done[_key(spec)])
                    continue
                row = run_child(spec, env, args.timeout)
                rows.append(row)
                msg = row.get("error") or (f"load {row['load_s']:.1f} s / {row['load_mib']:,.0f} MiB, step "
                                           f"{row['step_s']:.1f} s / {row['step_mib']:,.0f} MiB, decode "
                                           f"{row['decode_s']:.1f} s / {row['decode_mib']:,.0f} MiB")
                print(f"{task}:{batch} {method} {prec}: {msg}", flush=True)
                (out / "results.json").write_text(json.dumps({
                    "size": args.size, "device": args.device, "threads": args.threads,
                    "weights_dtype": args.weights_dtype, "tarball_mib": size_mib, "first_resolve": first,
                    "rows": rows}, indent=1))
    header = (f"{args.size} ({first['params']:,} parameters), device {args.device}, {args.threads} thread(s), "
              f"memory: {rows[0].get('memory_method', '?') if rows else '?'}")
    table = markdown(rows, header)
    (out / "table.md").write_text(table + "\n")
    print(table)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
