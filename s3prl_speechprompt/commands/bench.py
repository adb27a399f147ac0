"""Efficiency benchmark (see docs/bench.md): KV-cached decoding vs full recomputation, PT vs FT-LM step time and
peak memory, PEFT prefix tuning on GPT-2 as a peer, on-the-fly quantization vs precomputed units, LM
forward FLOP/s vs plain matmuls, and bf16 vs fp32 autocast (step time and peak memory).

Contenders run interleaved in one process; each row is the median of per-repetition ratios (the count is
printed). Absolute seconds depend on the machine's load and are only shown for orientation. Uses one
thread by default (--threads) so runs on a shared machine stay comparable.
"""
import json

from s3prl_speechprompt.errors import ConfigError

NAME = "bench"
HELP = "efficiency benchmark: decoding, PT vs FT-LM, PEFT peer, unit cache, FLOP/s, bf16 vs fp32 (table + JSON)"


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repetition (a smoke run: every row, numbers not meaningful)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the full results as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the whole run")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions per comparison "
                        "(default 3; 1 with --quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA peak memory via max_memory_allocated)")
    parser.add_argument("--sections", default="decode,train,units,flops,precision",
                        help="comma-separated subset of decode,train,units,flops,precision")
    parser.add_argument("--layers", type=int, default=None, help="LM layers (default 6; 2 with --quick)")
    parser.add_argument("--dim", type=int, default=None, help="LM width (default 512; 64 with --quick)")
    parser.add_argument("--heads", type=int, default=None, help="LM heads (default 8; 4 with --quick)")
    parser.add_argument("--ffn", type=int, default=None, help="LM FFN width (default 2048; 256 with --quick)")
    parser.add_argument("--upstream", choices=("base", "tiny"), default=None,
                        help="random HuBERT for the unit-cache row: HuBERT Base shape or the 2x32 test model "
                             "(default base; tiny with --quick)")
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS cross-check")


def run(args) -> int:
    from s3prl_speechprompt.bench import SECTIONS, BenchConfig, format_table, run_bench

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--sections: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    overrides = {k: getattr(args, k) for k in ("reps", "layers", "dim", "heads", "ffn", "upstream")
                 if getattr(args, k) is not None}
    if args.upstream == "tiny" and not args.quick:
        overrides["upstream_layer"] = 1
    if args.no_rss:
        overrides["rss"] = False
    overrides.update(threads=args.threads, device=args.device)
    cfg = BenchConfig.quick_config(**overrides) if args.quick else BenchConfig(**overrides)
    result = run_bench(cfg, sections)
    print()
    print(format_table(result))
    print(f"\n{result['lm']}; {cfg.threads} thread(s); load average {result['load_average_start'][0]:.1f} -> "
          f"{result['load_average_end'][0]:.1f}; {result['seconds_total']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"results: {args.out}")
    return 0
