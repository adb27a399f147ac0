"""K-means quantizer: SSL features -> discrete units, in torch.

GSLM's ``km.bin`` is a joblib pickle of an sklearn (MiniBatch)KMeans, applied with ``predict``
(nearest centroid, Euclidean). We unpickle it once, keep only ``cluster_centers_`` as a buffer
and do the argmin in torch, so quantization runs on the GPU inside s3prl without sklearn in the
loop and without the pickle's sklearn-version fragility.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from s3prl_speechprompt.atomic import atomic_torch_save

ArrayLike = Union[np.ndarray, torch.Tensor]

# GSLM's speech2unit/clustering/cluster_kmeans.py settings
GSLM_KMEANS_ARGS = dict(init="k-means++", max_iter=150, batch_size=10000, tol=0.0,
                        max_no_improvement=100, n_init=20, reassignment_ratio=0.5,
                        compute_labels=True, init_size=None)
FORMAT = "s3prl_speechprompt.kmeans"
_ROWS_PER_CHUNK = 1 << 24  # bound on rows * clusters of the distance matrix held at once


class KMeansQuantizer(torch.nn.Module):
    """Nearest-centroid assignment; ``centroids`` buffer (K, D) float32."""

    def __init__(self, centroids: ArrayLike, meta: Optional[dict] = None):
        super().__init__()
        c = torch.as_tensor(np.asarray(centroids) if not torch.is_tensor(centroids) else centroids)
        if c.dim() != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centroids must have shape (K, D) with K, D >= 1, got {tuple(c.shape)}")
        self.register_buffer("centroids", c.detach().to(torch.float32).clone())
        self.meta = dict(meta or {})

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, dim={self.dim}"

    def forward(self, feats: ArrayLike) -> torch.Tensor:
        """(T, D) or (B, T, D) float features -> (T,) or (B, T) int64 unit indices.

        argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k): the ||x||^2 term is constant per
        frame, so it is left out (adding it only adds rounding error), as sklearn's predict does.
        Computed in float32 (float64 if the input is float64); ties go to the lowest index.
        """
        x = feats if torch.is_tensor(feats) else torch.as_tensor(np.asarray(feats))
        if x.dim() not in (2, 3):
            raise ValueError(f"expected features of shape (T, D) or (B, T, D) with D={self.dim}, "
                             f"got shape {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected feature dim D={self.dim} (the k-means centroids), got {x.shape[-1]} "
                             f"(features of shape {tuple(x.shape)}); was the k-means fit on this layer/upstream?")
        if not x.is_floating_point():
            raise TypeError(f"expected float features, got dtype {x.dtype}")
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        c = self.centroids.to(dtype)
        x = x.to(device=c.device, dtype=dtype)
        flat = x.reshape(-1, self.dim)
        c_sq = (c * c).sum(dim=1)  # (K,)
        step = max(1, _ROWS_PER_CHUNK // self.n_clusters)
        out = torch.empty(flat.shape[0], dtype=torch.int64, device=c.device)
        for i in range(0, flat.shape[0], step):
            chunk = flat[i:i + step]
            dist = torch.addmm(c_sq.unsqueeze(0), chunk, c.t(), alpha=-2.0)  # (n, K)
            out[i:i + step] = dist.argmin(dim=1)
        return out.reshape(x.shape[:-1])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_km_bin(cls, path: Union[str, os.PathLike]) -> "KMeansQuantizer":
        """Load GSLM's ``km.bin`` (joblib pickle of sklearn MiniBatchKMeans/KMeans)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: k-means file not found (GSLM ships it as km.bin next to the "
                                    f"unit LM, e.g. hubert/km100/km.bin)")
        try:
            import joblib
        except ImportError:
            raise ImportError(f"{path}: reading a GSLM km.bin needs joblib and scikit-learn; "
                              f"pip install joblib scikit-learn") from None
        with warnings.catch_warnings():
            # GSLM pickles were written by old sklearn versions; only the centroids are used
            warnings.simplefilter("ignore")
            try:
                model = joblib.load(path)
            except ModuleNotFoundError as e:
                raise ImportError(f"{path}: unpickling needs module {e.name!r}; pip install scikit-learn") from None
            except Exception as e:
                raise ValueError(f"{path}: could not unpickle as a joblib k-means model "
                                 f"({type(e).__name__}: {e}); expected GSLM's km.bin") from None
        centers = getattr(model, "cluster_centers_", None)
        if centers is None:
            raise ValueError(f"{path}: found a {type(model).__module__}.{type(model).__name__} without "
                             f"cluster_centers_; expected a fitted sklearn KMeans/MiniBatchKMeans (GSLM km.bin)")
        centers = np.asarray(centers)
        if centers.ndim != 2:
            raise ValueError(f"{path}: cluster_centers_ has shape {centers.shape}, expected (K, D)")
        return cls(centers, meta={"source": str(path), "n_clusters": int(centers.shape[0]),
                                  "kind": type(model).__name__})

    @classmethod
    def fit(cls, features: Union[ArrayLike, Iterable[ArrayLike]], n_clusters: int = 100, seed: int = 1369,
            **overrides) -> "KMeansQuantizer":
        """Fit sklearn MiniBatchKMeans with GSLM's settings (``overrides`` replace any of them).

        features: one (N, D) array/tensor, or an iterable of (T, D) ones (one per utterance).
        """
        from sklearn.cluster import MiniBatchKMeans

        x = _stack(features)
        if x.shape[0] < n_clusters:
            raise ValueError(f"k-means needs at least n_clusters={n_clusters} frames, got {x.shape[0]}; "
                             f"use more utterances (or a larger sample) or fewer clusters")
        args = dict(GSLM_KMEANS_ARGS, n_clusters=n_clusters, random_state=seed)
        args.update(overrides)
        km = MiniBatchKMeans(**args).fit(x)
        return cls(km.cluster_centers_, meta={
            "source": "fit", "n_clusters": int(n_clusters), "n_frames": int(x.shape[0]),
            "inertia": float(km.inertia_), "kmeans_args": {k: v for k, v in args.items() if _plain(v)}})

    # ------------------------------------------------------------------ files
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a torch file (centroids + metadata) atomically."""
        blob = {"format": FORMAT, "version": 1, "centroids": self.centroids.detach().cpu().clone(),
                "meta": dict(self.meta, n_clusters=self.n_clusters, dim=self.dim)}
        atomic_torch_save(blob, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "KMeansQuantizer":
        """Load our torch file, a ``.npy`` of centroids, or a GSLM km.bin (dispatch on content)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: k-means file not found")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            return cls(np.load(path, allow_pickle=False), meta={"source": str(path)})
        if not zipfile.is_zipfile(path):
            return cls.from_km_bin(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a readable torch file ({type(e).__name__}: {e}); expected a "
                             f"quantizer saved by KMeansQuantizer.save or a GSLM km.bin") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or "centroids" not in blob:
            found = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(f"{path}: torch file is not a saved KMeansQuantizer (found {found}); "
                             f"expected keys format={FORMAT!r}, centroids, meta")
        meta = dict(blob.get("meta", {}))
        meta.setdefault("source", str(path))
        return cls(blob["centroids"], meta=meta)


def _plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _stack(features) -> np.ndarray:
    """One (N, D) array, or an iterable of (T, D) arrays/tensors -> (N, D) float32."""
    if isinstance(features, (np.ndarray, torch.Tensor)):
        parts = [features]
    else:
        parts = list(features)
    if not parts:
        raise ValueError("no features given to fit the k-means on")
    arrays = []
    for i, p in enumerate(parts):
        a = p.detach().cpu().numpy() if torch.is_tensor(p) else np.asarray(p)
        if a.ndim != 2:
            raise ValueError(f"features[{i}] has shape {a.shape}, expected (T, D)")
        if arrays and a.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"features[{i}] has dim {a.shape[1]}, but features[0] has {arrays[0].shape[1]}")
        arrays.append(a.astype(np.float32, copy=False))
    return np.ascontiguousarray(np.concatenate(arrays, axis=0))


def dedup(units: torch.Tensor) -> torch.Tensor:
    """(T,) -> (T',) with consecutive repeats collapsed, as GSLM/SpeechPrompt do before the LM."""
    if units.dim() != 1:
        raise ValueError(f"dedup expects a 1-D unit sequence, got shape {tuple(units.shape)}; "
                         f"dedup each utterance separately (lengths differ afterwards)")
    return torch.unique_consecutive(units)
