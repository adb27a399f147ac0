"""CER by reference label length ("curse of long sequences", SpeechPrompt v1): a table and a PNG plot.

Each EXPDIR is an experiment directory with {split}_predict.txt and {split}_truth.txt (written by
`-m evaluate -t test -e <ckpt>`): PT, FT-LM and baseline runs of the same task side by side. Utterances are
bucketed by reference length in label tokens (characters; a SUPERB slot tag is one token), with edges at
quantiles of the first run's lengths unless --edges is given.
"""
from s3prl_speechprompt.errors import ConfigError

NAME = "analyze-length"
HELP = "CER per label-length bucket for several runs: table + PNG plot"


def add_arguments(parser):
    parser.add_argument("expdirs", nargs="+", metavar="EXPDIR", help="experiment directories to compare")
    parser.add_argument("--split", default="test", help="which {split}_predict.txt / {split}_truth.txt to read")
    parser.add_argument("--names", default=None, metavar="A,B,...",
                        help="run names for the table/legend, comma separated (default: directory names)")
    parser.add_argument("--bins", type=int, default=5, help="number of equal-count length buckets")
    parser.add_argument("--edges", default=None, metavar="E0,E1,...",
                        help="explicit bucket edges in tokens (lo <= length < hi), overrides --bins")
    parser.add_argument("--plot", default="cer_vs_length.png", metavar="PNG", help="where to write the plot")
    parser.add_argument("--title", default=None, help="plot title (default: 'CER vs label length (<split>)')")


def run(args):
    from s3prl_speechprompt import analysis

    names = args.names.split(",") if args.names else [None] * len(args.expdirs)
    if len(names) != len(args.expdirs):
        raise ConfigError(f"--names has {len(names)} names for {len(args.expdirs)} directories")
    try:
        edges = [int(e) for e in args.edges.split(",")] if args.edges else None
    except ValueError:
        raise ConfigError(f"--edges expects comma-separated integers, got {args.edges!r}") from None
    runs = [analysis.Run.load(d, args.split, n) for d, n in zip(args.expdirs, names)]
    if len({r.name for r in runs}) != len(runs):
        raise ConfigError("two runs have the same name; pass --names")
    buckets = analysis.cer_by_length(runs, edges=edges, bins=args.bins)
    path = analysis.plot(runs, buckets, args.plot, args.title or f"CER vs label length ({args.split})")
    print(f"CER (%) by reference length in label tokens, split {args.split}")
    print(analysis.format_table(runs, buckets))
    print(f"plot: {path}")
    return 0
