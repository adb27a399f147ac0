"""K-means quantizer: SSL features -> discrete units, in torch.

GSLM's ``km.bin`` is a joblib pickle of an sklearn (MiniBatch)KMeans applied with ``predict`` (nearest centroid).
We keep only ``cluster_centers_`` as a buffer and do the argmin in torch: quantization runs on the GPU inside
s3prl, without sklearn in the loop or its version fragility. :func:`read_km_bin` is joblib's reader with
``find_class`` narrowed: sklearn's KMeans classes (any module path sklearn used) become a plain
:class:`KMeansState`, numpy arrays are rebuilt, any other global is refused, so reading a km.bin needs neither
sklearn nor trust in the file (``joblib.load`` would run whatever the pickle names). sklearn only *fits* k-means.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from s3prl_speechprompt.atomic import atomic_torch_save
from s3prl_speechprompt.errors import ConfigError, KMeansFileError, MissingFileError
from s3prl_speechprompt.safe_globals import numpy_globals

ArrayLike = Union[np.ndarray, torch.Tensor]

# GSLM's speech2unit/clustering/cluster_kmeans.py settings
GSLM_KMEANS_ARGS = dict(init="k-means++", max_iter=150, batch_size=10000, tol=0.0,
                        max_no_improvement=100, n_init=20, reassignment_ratio=0.5,
                        compute_labels=True, init_size=None)
FORMAT = "s3prl_speechprompt.kmeans"
KMEANS_FILE = "a k-means file (GSLM's km.bin, a KMeansQuantizer.save file or a .npy of centroids)"
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
            raise ConfigError(f"expected feature dim D={self.dim} (the k-means centroids), got {x.shape[-1]} "
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
        """Load GSLM's ``km.bin`` (a joblib pickle of an sklearn (MiniBatch)KMeans) without sklearn, through
        :func:`read_km_bin`: only ``cluster_centers_`` is used, and no code named by the file is run.
        """
        path = Path(path)
        state = read_km_bin(path)
        centers = np.asarray(state.cluster_centers_)
        return cls(centers, meta={"source": str(path), "n_clusters": int(centers.shape[0]), "kind": state.kind,
                                  "sklearn_version": str(state.__dict__.get("_sklearn_version", "unknown"))})

    @classmethod
    def fit(cls, features: Union[ArrayLike, Iterable[ArrayLike]], n_clusters: int = 100, seed: int = 1369,
            **overrides) -> "KMeansQuantizer":
        """Fit sklearn MiniBatchKMeans with GSLM's settings (``overrides`` replace any of them) on one (N, D)
        array/tensor or an iterable of (T, D) ones (one per utterance).
        """
        from sklearn.cluster import MiniBatchKMeans

        x = _stack(features)
        if x.shape[0] < n_clusters:
            raise ConfigError(f"k-means needs at least n_clusters={n_clusters} frames, got {x.shape[0]}; "
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
        from s3prl_speechprompt.readers import read_torch, sniff

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: k-means file not found")
        looks = sniff(path)
        if looks == "npy":
            return cls(np.load(path, allow_pickle=False), meta={"source": str(path)})
        if looks not in ("zip", "empty"):
            return cls.from_km_bin(path)      # a joblib pickle, compressed or not; its reader names what it finds
        blob = read_torch(path, KMEANS_FILE, error=KMeansFileError,
                          is_expected=lambda b: isinstance(b, dict) and b.get("format") == FORMAT and "centroids" in b)
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


# ------------------------------------------------------------------------------------------ km.bin reading
class KMeansState:
    """The attributes of a pickled sklearn (MiniBatch)KMeans, as plain data: no sklearn class, no methods."""

    kind = "KMeans"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]                            # (dict, slots) form
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.kind} state is a {type(state).__name__}, expected a dict")
        self.__dict__.update(state)


class MiniBatchKMeansState(KMeansState):
    kind = "MiniBatchKMeans"


class _Inert:
    """Stands in for a numpy RandomState given as ``random_state`` (the real one is never built; this is unused)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert_factory(*args, **kwargs):
    return _Inert()


_KMEANS_CLASSES = {"KMeans": KMeansState, "MiniBatchKMeans": MiniBatchKMeansState}
# a RandomState passed as random_state pickles through these; they are replaced, not called
_RANDOM_STATE_GLOBALS = {("numpy.random._pickle", "__randomstate_ctor"),
                         ("numpy.random._pickle", "__bit_generator_ctor"), ("numpy.random._pickle", "__generator_ctor"),
                         ("numpy.random", "__RandomState_ctor"), ("numpy.random.mtrand", "RandomState"),
                         ("numpy.random._mt19937", "MT19937")}


def _km_unpickler_class():
    """joblib's NumpyUnpickler (decompression, its array container) with ``find_class`` narrowed."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class CheckedArrayWrapper(NumpyArrayWrapper):
        """joblib's array container, refusing object arrays (they would be a nested, unrestricted pickle
        in older joblib) and array subclasses."""

        def read_array(self, unpickler, *args, **kwargs):
            dtype = self.dtype
            if not isinstance(dtype, np.dtype) or dtype.hasobject:
                raise KMeansFileError(f"{unpickler.filename}: holds an array of dtype {dtype!r}; only numeric "
                                      f"arrays are read from a k-means file")
            if self.subclass not in (np.ndarray, np.memmap):
                raise KMeansFileError(f"{unpickler.filename}: holds an array of type {self.subclass!r}; only "
                                      f"numpy.ndarray is read from a k-means file")
            return super().read_array(unpickler, *args, **kwargs)

    allowed = numpy_globals()
    for mod in ("joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"):   # sklearn <= 0.22 vendored joblib
        allowed[(mod, "NumpyArrayWrapper")] = CheckedArrayWrapper

    class KMeansUnpickler(NumpyUnpickler):
        def find_class(self, module, name):
            if (module == "sklearn.cluster" or module.startswith("sklearn.cluster.")) and name in _KMEANS_CLASSES:
                return _KMEANS_CLASSES[name]            # sklearn.cluster.k_means_ (<= 0.23), ._kmeans (>= 0.22), ...
            if (module, name) in allowed:
                return allowed[(module, name)]
            if (module, name) in _RANDOM_STATE_GLOBALS:
                return _inert_factory
            raise KMeansFileError(
                f"{self.filename}: refusing to load: the pickle names {module}.{name}, which is not part of an "
                f"sklearn k-means model (only KMeans/MiniBatchKMeans state and numpy arrays are read from a "
                f"km.bin; nothing the file names is run). Use a km.bin written by sklearn's (MiniBatch)KMeans")

    return KMeansUnpickler


def read_km_bin(path: Union[str, os.PathLike]) -> KMeansState:
    """A joblib-pickled sklearn KMeans/MiniBatchKMeans (compressed or not) as a :class:`KMeansState`: needs joblib,
    not sklearn; a global outside a k-means model and numpy arrays is a
    :class:`~s3prl_speechprompt.errors.KMeansFileError` naming it and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: k-means file not found (GSLM ships it as km.bin next to the "
                               f"unit LM, e.g. hubert/km100/km.bin)")
    try:
        from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap
    except ImportError:
        raise ImportError(f"{path}: reading a GSLM km.bin needs joblib (its container format); "
                          f"pip install joblib") from None
    unpickler_class = _km_unpickler_class()
    try:
        with open(path, "rb") as raw, _validate_fileobject_and_memmap(raw, str(path)) as (fobj, _):
            if isinstance(fobj, str):
                raise KMeansFileError(f"{path}: written by joblib < 0.10 (2016), whose format keeps arrays in "
                                      f"side files; re-save it with a current joblib")
            try:
                unpickler = unpickler_class(str(path), fobj, ensure_native_byte_order=True)
            except TypeError:                           # joblib < 1.3 has no ensure_native_byte_order
                unpickler = unpickler_class(str(path), fobj)
            obj = unpickler.load()
    except (KMeansFileError, FileNotFoundError):
        raise
    except Exception as e:
        raise KMeansFileError(f"{path}: could not unpickle as a joblib k-means model ({type(e).__name__}: {e}); "
                              f"expected GSLM's km.bin (or a .npy of centroids / a file saved by "
                              f"KMeansQuantizer.save)") from None
    if not isinstance(obj, KMeansState):
        raise KMeansFileError(f"{path}: found a {type(obj).__module__}.{type(obj).__name__} without "
                              f"cluster_centers_; expected a fitted sklearn KMeans/MiniBatchKMeans (GSLM km.bin)")
    centers = obj.__dict__.get("cluster_centers_")
    if not isinstance(centers, np.ndarray):
        raise KMeansFileError(f"{path}: the {obj.kind} has no cluster_centers_ array (found "
                              f"{type(centers).__name__}); was it fitted before saving?")
    if centers.ndim != 2 or not np.issubdtype(centers.dtype, np.number):
        raise KMeansFileError(f"{path}: cluster_centers_ has shape {centers.shape} and dtype {centers.dtype}, "
                              f"expected a numeric (K, D) array")
    return obj
