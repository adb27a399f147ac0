"""The "curse of long sequences" analysis: CER by reference label length, per run (SpeechPrompt v1, slides 41-42).

Each run is an experiment directory holding ``{split}_predict.txt`` and ``{split}_truth.txt`` (``<id> <text>``
lines, as the SpeechPrompt expert writes them; a baseline expert that writes the same files works too). Texts
are split back into label tokens: one character each, except SUPERB slot tags (``B-x `` / `` E-x``), which are one
token like in the SF targets. The test utterances are bucketed by reference length in tokens; a bucket's CER is
100 x sum of token edits / sum of reference tokens (SUPERB's corpus-level rate, restricted to the bucket).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import editdistance

from s3prl_speechprompt.errors import ConfigError, InputFileError, MissingFileError

_TOKEN = re.compile(r"B-\S+ | E-\S+|.", re.S)


def tokenize(text: str) -> List[str]:
    """``"PLAY B-artist ADELE E-artist"`` -> P,L,A,Y,' ','B-artist ',A,D,E,L,E,' E-artist' (tags are one token)."""
    return _TOKEN.findall(text)


def read_lines(path: Path) -> Dict[str, str]:
    """``<id> <text>`` lines -> {id: text}; the text may be empty."""
    if not path.is_file():
        raise MissingFileError(f"{path}: not found (an experiment directory needs the {path.name} that "
                               f"evaluation writes; run `-m evaluate -t <split> -e <ckpt>` first)")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, text = line.partition(" ")
        if uid in out:
            raise InputFileError(f"{path}:{n}: id {uid!r} appears twice")
        out[uid] = text
    return out


@dataclass
class Run:
    """One experiment's predictions: per utterance (reference tokens, hypothesis tokens)."""

    name: str
    pairs: Dict[str, Tuple[List[str], List[str]]]

    @classmethod
    def load(cls, expdir, split: str = "test", name: Optional[str] = None) -> "Run":
        expdir = Path(expdir)
        hyp = read_lines(expdir / f"{split}_predict.txt")
        ref = read_lines(expdir / f"{split}_truth.txt")
        if set(hyp) != set(ref):
            missing = sorted(set(ref) ^ set(hyp))[:5]
            raise InputFileError(f"{expdir}: {split}_predict.txt and {split}_truth.txt list different ids "
                                 f"(e.g. {missing})")
        return cls(name or expdir.name, {u: (tokenize(ref[u]), tokenize(hyp[u])) for u in sorted(ref)})


@dataclass
class Bucket:
    lo: int                     # reference length in tokens, lo <= n < hi
    hi: int
    n: Dict[str, int] = field(default_factory=dict)         # run -> utterances
    cer: Dict[str, float] = field(default_factory=dict)     # run -> CER in percent (nan if empty)
    mean_length: Dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.lo}-{self.hi - 1}"


def bucket_edges(lengths: Sequence[int], bins: int) -> List[int]:
    """Up to ``bins`` buckets with about equal utterance counts (quantiles of ``lengths``), integer edges."""
    if not lengths:
        raise ValueError("no utterances to bucket")
    xs = sorted(lengths)
    edges = [xs[0]]
    for k in range(1, bins):
        e = xs[min(len(xs) - 1, math.floor(k * len(xs) / bins))]
        if e > edges[-1]:
            edges.append(e)
    edges.append(xs[-1] + 1)
    return edges


def cer_by_length(runs: Sequence[Run], edges: Optional[Sequence[int]] = None, bins: int = 5) -> List[Bucket]:
    """Bucket every run's utterances by reference length; ``edges`` (ascending) default to quantiles of the first run."""
    if not runs:
        raise ValueError("no runs to analyse")
    if edges is None:
        edges = bucket_edges([len(r) for r, _ in runs[0].pairs.values()], bins)
    edges = [int(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"bucket edges must be at least two strictly increasing integers, got {edges}")
    buckets = [Bucket(lo, hi) for lo, hi in zip(edges, edges[1:])]
    for run in runs:
        acc = [[0, 0, 0] for _ in buckets]            # edits, reference tokens, utterances
        for ref, hyp in run.pairs.values():
            for b, bucket in zip(acc, buckets):
                if bucket.lo <= len(ref) < bucket.hi:
                    b[0] += editdistance.eval(hyp, ref)
                    b[1] += len(ref)
                    b[2] += 1
                    break
        for (err, tot, n), bucket in zip(acc, buckets):
            bucket.n[run.name] = n
            bucket.cer[run.name] = 100.0 * err / tot if tot else float("nan")
            bucket.mean_length[run.name] = tot / n if n else float("nan")
    return buckets


def overall_cer(run: Run) -> float:
    err = sum(editdistance.eval(h, r) for r, h in run.pairs.values())
    tot = sum(len(r) for r, _ in run.pairs.values())
    return 100.0 * err / tot if tot else float("nan")


def format_table(runs: Sequence[Run], buckets: Sequence[Bucket]) -> str:
    """Plain-text table: one row per bucket (length range, utterances), one CER column per run, then 'all'."""
    names = [r.name for r in runs]
    width = max([10] + [len(n) for n in names])
    head = f"{'length':>9} {'utts':>5} " + " ".join(f"{n:>{width}}" for n in names)
    rows = [head, "-" * len(head)]
    for b in buckets:
        counts = {b.n[n] for n in names}
        utts = str(counts.pop()) if len(counts) == 1 else "/".join(str(b.n[n]) for n in names)
        rows.append(f"{b.label:>9} {utts:>5} " + " ".join(f"{b.cer[n]:>{width}.2f}" for n in names))
    total = {len(r.pairs) for r in runs}
    utts = str(total.pop()) if len(total) == 1 else "/".join(str(len(r.pairs)) for r in runs)
    rows.append(f"{'all':>9} {utts:>5} " + " ".join(f"{overall_cer(r):>{width}.2f}" for r in runs))
    return "\n".join(rows)


def plot(runs: Sequence[Run], buckets: Sequence[Bucket], path, title: str = "CER vs label length") -> Path:
    """Line plot of bucket CER against the bucket's mean reference length, one line per run (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for run in runs:
        pts = [(b.mean_length[run.name], b.cer[run.name]) for b in buckets if b.n[run.name]]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=run.name)
    ax.set_xlabel("reference label length (tokens, bucket mean)")
    ax.set_ylabel("CER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
