"""Describe a GSLM / fairseq unit LM: architecture, vocabulary, parameter count, training state.

PATH is a directory holding checkpoint_best.pt and dict.txt (a GSLM tarball, unpacked), a checkpoint
file with dict.txt next to it, or a GSLM name (hubert100, cpc100; downloaded once into s3prl's cache). Nothing from fairseq is imported.
"""
import json

NAME = "ulm-info"
HELP = "print architecture, vocabulary and parameter count of a unit LM checkpoint"


def add_arguments(parser):
    parser.add_argument("path", help="unit-LM directory (checkpoint_best.pt + dict.txt), checkpoint file, or GSLM name (hubert100, cpc100)")
    parser.add_argument("--dict", default=None, help="dict.txt to use instead of the one next to the checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args) -> int:
    from s3prl_speechprompt.ulm.checkpoint import load_ulm
    from s3prl_speechprompt.ulm.pretrained import resolve_ulm

    # errors (missing file, bad checkpoint, failed download) reach the terminal as one line through cli.main
    model, dictionary, info = load_ulm(resolve_ulm(args.path), dict_path=args.dict)
    cfg = model.cfg
    units = dictionary.units
    report = {
        "checkpoint": info["checkpoint"], "dict": info["dict"], "arch": cfg.arch,
        "layers": cfg.layers, "embed_dim": cfg.embed_dim, "ffn_dim": cfg.ffn_dim, "heads": cfg.heads,
        "activation": cfg.activation, "normalize_before": cfg.normalize_before, "final_norm": cfg.final_norm,
        "max_positions": cfg.max_positions, "vocab_size": cfg.vocab_size, "units": len(units),
        "unit_order": "natural (index = unit + 4)" if units == [str(i) for i in range(len(units))] else "as listed in dict.txt",
        "parameters": model.num_parameters(), "epoch": info["epoch"], "num_updates": info["num_updates"],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    width = max(len(k) for k in report)
    for k, v in report.items():
        print(f"{k:<{width}}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:<{width}}  {v}")
    print(f"{'first units':<{width}}  {' '.join(units[:10])}{' ...' if len(units) > 10 else ''}")
    return 0
