"""Speech -> units for a whole training split, once: k-means (given or fitted) and the unit manifest.

The result is cached under a content address (upstream, layer, k-means, corpus list), so later runs,
``-e`` evaluation and the unit-level engine reuse it instead of re-running the upstream.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from s3prl_speechprompt.errors import ConfigError, InputFileError
from s3prl_speechprompt.units.manifest import UnitRecord, read_unit_file, write_unit_manifest
from s3prl_speechprompt.units.quantizer import KMeansQuantizer, dedup

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPEECHPROMPT_CACHE", Path.home() / ".cache" / "s3prl_speechprompt"))


def file_signature(path) -> str:
    """Cheap identity of a local file for cache keys: resolved path, size, mtime."""
    if not path:
        return ""
    p = Path(path)
    if not p.exists():
        return str(path)
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def to_units(quantizer: KMeansQuantizer, feats: torch.Tensor) -> List[str]:
    """(T, D) features -> deduplicated unit symbols (cluster index as a string, as in GSLM's dict.txt)."""
    if feats.dim() != 2 or feats.size(1) != quantizer.dim:
        raise ConfigError(f"features of shape {tuple(feats.shape)} do not fit the k-means (dim {quantizer.dim}); "
                          f"the k-means must be fitted on the same upstream layer")
    return [str(u) for u in dedup(quantizer(feats.float())).tolist()]


def _items_digest(items) -> str:
    """Identity of a split: ids, labels, crops and each audio file's size/mtime (a regenerated corpus with
    the same ids must not reuse stale units)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\t{' '.join(it.labels)}\t{it.offset}:{it.num_samples}\t{file_signature(it.wav_path)}\n".encode())
    return h.hexdigest()


def prepare_units(items: Sequence, featurize: Callable, read_audio: Callable, *, key_parts: dict,
                  km: Optional[str] = None, n_clusters: int = 100, fit_max_frames: int = 200_000,
                  seed: int = 1369, cache_dir: Optional[Path] = None,
                  feature_dim: Optional[int] = None) -> Tuple[KMeansQuantizer, List[UnitRecord]]:
    """(quantizer, train-split unit records); ``featurize(wav np.float32) -> (T, D) tensor``. Without ``km`` a k-means
    with GSLM's settings is fitted on a seeded random subset of utterances holding about ``fit_max_frames`` frames;
    ``feature_dim`` (the upstream's) is checked against a given ``km`` before any audio is processed.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    ids = [it.id for it in items]
    key = cache_key(km=file_signature(km) if km else None, n_clusters=None if km else n_clusters,
                    fit_max_frames=fit_max_frames, seed=seed, items=_items_digest(items), **key_parts)
    q_path, u_path = cache_dir / f"kmeans-{key}.pt", cache_dir / f"units-{key}.tsv"

    if km:
        quantizer = KMeansQuantizer.load(km)
        if feature_dim is not None and quantizer.dim != feature_dim:
            raise InputFileError(f"{km}: k-means dimension {quantizer.dim} != upstream feature dimension "
                                 f"{feature_dim}; this k-means belongs to another upstream/layer (GSLM's hubert100 "
                                 f"km.bin expects -u hubert -l 6, 768 dims); pick the matching km or km: null to fit "
                                 f"one")
    elif q_path.is_file():
        quantizer = KMeansQuantizer.load(q_path)
        log.info("k-means from cache %s", q_path)
    else:
        quantizer = _fit(items, featurize, read_audio, n_clusters, fit_max_frames, seed)
        quantizer.meta.update(key_parts)
        quantizer.save(q_path)
        log.info("k-means (%d clusters) cached at %s", n_clusters, q_path)

    if u_path.is_file():
        records = read_unit_file(u_path)
        if [r.id for r in records] == ids:
            return quantizer, records
    records = []
    for it in tqdm(items, desc="units (train split)", unit="utt"):
        units = to_units(quantizer, featurize(read_audio(it)))
        records.append(UnitRecord(it.id, tuple(units), tuple(it.labels)))
    write_unit_manifest(u_path, records)
    return quantizer, records


def _fit(items, featurize, read_audio, n_clusters, max_frames, seed) -> KMeansQuantizer:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    feats, n = [], 0
    bar = tqdm(total=max_frames, desc="features for k-means", unit="frame")
    for i in order:
        f = featurize(read_audio(items[i])).float().cpu().numpy()
        feats.append(f)
        n += len(f)
        bar.update(len(f))
        if n >= max_frames:
            break
    bar.close()
    if n < n_clusters:
        raise ConfigError(f"only {n} feature frames in the training split, fewer than the {n_clusters} k-means "
                          f"clusters asked for; lower downstream_expert.n_clusters")
    stacked = np.concatenate(feats)
    # GSLM's n_init=20 / batch 10000 are sized for millions of frames; keep them unless the data is tiny
    overrides = {"batch_size": min(10000, len(stacked))}
    return KMeansQuantizer.fit(stacked, n_clusters=n_clusters, seed=seed, **overrides)
