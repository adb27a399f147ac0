"""Reading a file never runs code from it: km.bin without sklearn, unit-LM checkpoints, runner checkpoints.

The km.bin pickles are made here the way old scikit-learn releases wrote them: a class registered under
each module path sklearn has used (``sklearn.cluster.k_means_`` up to 0.21 / deprecated alias in 0.22-0.23,
``sklearn.cluster._kmeans`` since 0.22) is dumped with joblib, so the file names exactly that global.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types

import joblib
import numpy as np
import pytest
import torch

from s3prl_speechprompt.errors import KMeansFileError
from s3prl_speechprompt.units.quantizer import KMeansQuantizer, read_km_bin

OLD_PATHS = ["sklearn.cluster.k_means_", "sklearn.cluster._kmeans", "sklearn.cluster.kmeans_"]


@contextlib.contextmanager
def registered_class(module: str, name: str):
    """A plain class importable as ``module.name`` while the block runs (pickle looks it up by that path)."""
    cls = type(name, (), {"__module__": module})
    fake = types.ModuleType(module)
    setattr(fake, name, cls)
    saved = sys.modules.get(module)
    sys.modules[module] = fake
    try:
        yield cls
    finally:
        if saved is None:
            del sys.modules[module]
        else:
            sys.modules[module] = saved


def old_sklearn_km(path, module: str, name: str, centers: np.ndarray, compress=0, **extra) -> None:
    """A fitted k-means as an old sklearn pickled it: its attributes, under ``module.name``."""
    with registered_class(module, name) as cls:
        km = cls()
        km.__dict__.update(n_clusters=len(centers), init="k-means++", max_iter=150, batch_size=10000,
                           compute_labels=False, random_state=None, tol=0.0, n_init=20, init_size=None,
                           reassignment_ratio=0.5, verbose=1, max_no_improvement=100, _sklearn_version="0.21.3",
                           cluster_centers_=centers, counts_=np.arange(len(centers), dtype=np.int64),
                           inertia_=np.float64(1.5), n_iter_=3, **extra)
        joblib.dump(km, path, compress=compress)


def block_sklearn(monkeypatch):
    """From here to the end of the test, every sklearn module is unimportable (loaded ones included)."""
    for mod in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"] + OLD_PATHS:
        monkeypatch.setitem(sys.modules, mod, None)


@pytest.mark.parametrize("module", OLD_PATHS)
@pytest.mark.parametrize("name", ["MiniBatchKMeans", "KMeans"])
def test_old_sklearn_paths_load_without_sklearn(tmp_path, module, name, monkeypatch):
    centers = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    path = tmp_path / "km.bin"
    old_sklearn_km(path, module, name, centers)
    block_sklearn(monkeypatch)
    q = KMeansQuantizer.load(path)
    assert np.array_equal(q.centroids.numpy(), centers)
    assert q.meta["kind"] == name and q.meta["sklearn_version"] == "0.21.3"
    assert all(sys.modules[m] is None for m in OLD_PATHS)   # nothing was imported behind our back


def test_compressed_and_real_sklearn_files(tmp_path):
    from sklearn.cluster import MiniBatchKMeans

    x = np.random.default_rng(1).standard_normal((300, 4)).astype(np.float32)
    model = MiniBatchKMeans(n_clusters=5, random_state=np.random.RandomState(0), n_init=3).fit(x)
    for compress in (3, ("gzip", 3), ("lzma", 1)):
        path = tmp_path / f"km_{compress}.bin"
        joblib.dump(model, path, compress=compress)
        assert np.array_equal(KMeansQuantizer.load(path).centroids.numpy(), model.cluster_centers_)
    centers = np.eye(3, dtype=np.float64)
    old_sklearn_km(tmp_path / "old3.bin", "sklearn.cluster.k_means_", "MiniBatchKMeans", centers, compress=3)
    assert np.array_equal(read_km_bin(tmp_path / "old3.bin").cluster_centers_, centers)


def _raw_pickle(module: str, name: str, arg: str, protocol4: bool = False) -> bytes:
    """A pickle that calls ``module.name(arg)`` on load (written by hand: pickle would not emit it for us)."""
    a = arg.encode()
    call = b"X" + len(a).to_bytes(4, "little") + a + b"\x85R."             # BINUNICODE, TUPLE1, REDUCE, STOP
    if protocol4:                                                          # STACK_GLOBAL resolves dotted names
        m, n = module.encode(), name.encode()
        return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93" + call
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + call


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["os.system", "builtins.eval", "dotted", "inside_kmeans_state_compressed"])
def test_pickles_naming_other_globals_are_refused(tmp_path, case, monkeypatch):
    marker = tmp_path / "executed"
    path = tmp_path / "km.bin"
    if case == "os.system":
        path.write_bytes(_raw_pickle("os", "system", f"touch {marker}"))
        named = "os.system"
    elif case == "builtins.eval":
        path.write_bytes(_raw_pickle("builtins", "eval", f"open({str(marker)!r}, 'w')"))
        named = "builtins.eval"
    elif case == "dotted":                       # joblib.numpy_pickle imports os: joblib.numpy_pickle + os.system
        path.write_bytes(_raw_pickle("joblib.numpy_pickle", "os.system", f"touch {marker}", protocol4=True))
        named = "joblib.numpy_pickle.os.system"
    else:                                        # a valid-looking km.bin with the payload in one attribute
        old_sklearn_km(path, "sklearn.cluster._kmeans", "MiniBatchKMeans", np.eye(2), compress=3,
                       extra_=_Payload(marker))
        import os
        named = f"{os.system.__module__}.system"                           # posix.system on Linux
    block_sklearn(monkeypatch)
    with pytest.raises(KMeansFileError) as e:
        KMeansQuantizer.load(path)
    assert str(path) in str(e.value) and f"names {named}," in str(e.value)
    assert not marker.exists()


def test_unreadable_and_wrong_content_name_the_file(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a pickle at all" * 10)
    with pytest.raises(KMeansFileError, match=r"junk\.bin: could not unpickle as a joblib k-means model"):
        KMeansQuantizer.load(junk)
    good = tmp_path / "good.bin"
    old_sklearn_km(good, "sklearn.cluster._kmeans", "KMeans", np.eye(4, dtype=np.float32))
    cut = tmp_path / "truncated.bin"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(KMeansFileError, match=r"truncated\.bin: could not unpickle"):
        KMeansQuantizer.load(cut)
    arr = tmp_path / "array.bin"
    joblib.dump(np.eye(3), arr)
    with pytest.raises(KMeansFileError, match=r"array\.bin: found a numpy\.ndarray without cluster_centers_"):
        KMeansQuantizer.load(arr)
    obj = tmp_path / "objects.bin"
    old_sklearn_km(obj, "sklearn.cluster._kmeans", "KMeans", np.array([["a"]], dtype=object))
    with pytest.raises(KMeansFileError, match=r"objects\.bin: holds an array of dtype dtype\('O'\)"):
        KMeansQuantizer.load(obj)


def _legacy_torch_file(path, payload: bytes) -> None:
    """A legacy (pre-zip) torch.save file whose object pickle is ``payload``."""
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buf, protocol=2)
    buf.write(payload)
    pickle.dump([], buf, protocol=2)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("module,name", [("torch", "os.system"), ("numpy", "os.system"), ("os", "system")])
def test_unit_lm_checkpoint_never_runs_code(tmp_path, module, name):
    """The fairseq-checkpoint reader's fallback unpickler resolves exact globals only (it used to resolve
    anything under a ``torch``/``numpy`` prefix, which let ``torch`` + ``os.system`` run a command)."""
    from s3prl_speechprompt.ulm.checkpoint import load_container

    marker = tmp_path / "executed"
    ck = tmp_path / "checkpoint_best.pt"
    _legacy_torch_file(ck, _raw_pickle(module, name, f"touch {marker}", protocol4=True))
    obj = load_container(ck)
    assert not marker.exists()
    assert type(obj).__name__ == name                   # an inert placeholder, never called


def test_runner_checkpoint_extra_state_is_read_safely(tmp_path):
    """``-e/-i/-a``: the expert reads its saved k-means/verbalizer from s3prl's checkpoint without unpickling
    arbitrary objects."""
    from s3prl_speechprompt.s3prl_plugin.data import saved_extra_state

    marker = tmp_path / "executed"
    ck = tmp_path / "dev-best.ckpt"
    torch.save({"Downstream": {"_extra_state": {"centroids": torch.eye(2), "hook": _Payload(marker)}}}, ck)
    extra = saved_extra_state(str(ck), "centroids")
    assert not marker.exists() and type(extra["hook"]).__name__ == "system"      # inert placeholder
    torch.save({"Downstream": {"_extra_state": {"centroids": torch.eye(2)}}}, ck)
    assert torch.equal(saved_extra_state(str(ck), "centroids")["centroids"], torch.eye(2))
