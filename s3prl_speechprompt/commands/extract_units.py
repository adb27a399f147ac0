"""Run an s3prl upstream once over a SUPERB corpus and write deduplicated units, one manifest per split.

Output: ``OUT/<split>.tsv`` (``id<TAB>units<TAB>label tokens``, the format `speechprompt train` reads),
``OUT/kmeans.pt`` (the quantizer used) and ``OUT/dict.txt`` (units in natural order, for pretraining).
Utterances are processed one at a time by default: batching pads, and padding changes HuBERT's
features (GSLM extracted unpadded).
"""
import json
from pathlib import Path

from s3prl_speechprompt.errors import ConfigError

NAME = "extract-units"
HELP = "upstream features -> k-means units for every split of a corpus (unit manifests)"


def add_arguments(parser):
    parser.add_argument("-u", "--upstream", required=True, help="s3prl upstream name (e.g. hubert, fbank, hubert_local)")
    parser.add_argument("-k", "--upstream-ckpt", default=None, help="upstream checkpoint (for *_local upstreams)")
    parser.add_argument("-l", "--layer", type=int, default=None,
                        help="hidden-state index (paper: HuBERT layer 6); default: the weighted sum at init (mean)")
    parser.add_argument("-s", "--feature-selection", default="hidden_states", help="upstream output key")
    parser.add_argument("--km", default=None, help="k-means: GSLM km.bin, our k-means file or a GSLM name; "
                                                    "default: fit on the training split")
    parser.add_argument("--n-clusters", type=int, default=100, help="clusters when fitting k-means")
    parser.add_argument("--corpus-task", required=True, help="task whose reader walks the corpus (ks, ic, ...)")
    parser.add_argument("--root", default=None,
                        help="corpus root: KS = folder holding speech_commands_v0.01 and speech_commands_test_set_v0.01; "
                             "IC = fluent_speech_commands_dataset")
    parser.add_argument("--datarc", action="append", default=[], metavar="KEY=VALUE",
                        help="reader setting as in the YAML's datarc (repeatable), e.g. speech_commands_root=/data/x")
    parser.add_argument("--splits", default=None, help="comma-separated splits (default: all of the task's)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="cpu", help="torch device for the upstream")
    parser.add_argument("--cache-dir", default=None, help="k-means/unit cache (default ~/.cache/s3prl_speechprompt)")
    parser.add_argument("--bad-audio", choices=("error", "skip"), default="error",
                        help="unreadable/empty/truncated audio files: stop naming them all (error), or leave them out, "
                             "counted and listed in OUT/skipped_<split>.tsv (skip)")


def _datarc(args) -> dict:
    rc = {}
    if args.root:
        root = Path(args.root)
        if args.corpus_task == "ks":
            rc = {"speech_commands_root": str(root / "speech_commands_v0.01"),
                  "speech_commands_test_root": str(root / "speech_commands_test_set_v0.01")}
        elif args.corpus_task == "ic":
            rc = {"file_path": str(root)}
        else:
            rc = {"root": str(root)}
    for kv in args.datarc:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ConfigError(f"--datarc expects KEY=VALUE, got {kv!r}")
        rc[key] = value
    return rc


def run(args) -> int:
    from tqdm import tqdm

    from s3prl_speechprompt import compat
    compat.apply()
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.tasks.audio import audit_split
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.ulm.pretrained import resolve_kmeans
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import prepare_units, to_units

    km = str(resolve_kmeans(args.km)) if args.km else None
    if km:                    # a damaged k-means file stops here: before any audio is read or anything is written
        from s3prl_speechprompt.units.quantizer import KMeansQuantizer
        KMeansQuantizer.load(km)
    task = get_task(args.corpus_task)(**_datarc(args))
    splits = args.splits.split(",") if args.splits else list(task.splits)
    checked = {s: audit_split(task.read_split(s), s, args.bad_audio, report_dir=Path(args.out)) for s in splits}
    items = {s: kept for s, (kept, _) in checked.items()}
    runner_args = {"upstream": args.upstream, "upstream_ckpt": args.upstream_ckpt, "device": args.device,
                   "upstream_feature_selection": args.feature_selection, "upstream_layer_selection": args.layer}
    featurize = runner_featurizer(runner_args)
    train_split = "train" if "train" in items else splits[0]
    quantizer, train_records = prepare_units(items[train_split], featurize, read_item_audio, km=km,
                                             n_clusters=args.n_clusters, key_parts=upstream_key(runner_args),
                                             cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    out = Path(args.out)
    counts = {train_split: len(train_records)}
    write_unit_manifest(out / f"{train_split}.tsv", train_records)
    for split in splits:
        if split == train_split:
            continue
        records = [UnitRecord(it.id, tuple(to_units(quantizer, featurize(read_item_audio(it)))), tuple(it.labels))
                   for it in tqdm(items[split], desc=f"units ({split})", unit="utt")]
        write_unit_manifest(out / f"{split}.tsv", records)
        counts[split] = len(records)
    quantizer.save(out / "kmeans.pt")
    (out / "dict.txt").write_text("".join(f"{k} 1\n" for k in range(quantizer.n_clusters)))
    skipped = {s: len(audit.bad) for s, (_, audit) in checked.items()}
    print(json.dumps({"out": str(out), "utterances": counts, "skipped": skipped, "clusters": quantizer.n_clusters, "dim": quantizer.dim}))
    return 0
