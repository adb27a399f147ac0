"""K-means quantizer: GSLM km.bin compatibility (exactly sklearn's predict), fit, save/load, dedup."""
import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from s3prl_speechprompt.units.quantizer import KMeansQuantizer, dedup

FAST = dict(n_init=1, batch_size=512, max_no_improvement=10, max_iter=20)


@pytest.fixture(scope="module")
def km_bin(tmp_path_factory):
    """A real sklearn MiniBatchKMeans fit on float32 data, pickled the way GSLM's km.bin is."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    model = MiniBatchKMeans(n_clusters=50, random_state=0, n_init=1, batch_size=1024).fit(x)
    path = tmp_path_factory.mktemp("km") / "km.bin"
    joblib.dump(model, path)
    return path, model


def test_from_km_bin_matches_sklearn_predict(km_bin):
    path, model = km_bin
    q = KMeansQuantizer.from_km_bin(path)
    assert q.centroids.shape == (50, 32) and q.centroids.dtype == torch.float32
    fresh = np.random.default_rng(1).standard_normal((4000, 32)).astype(np.float32) * 1.5
    ours = q(torch.from_numpy(fresh))
    assert ours.dtype == torch.int64 and ours.shape == (4000,)
    assert np.array_equal(ours.numpy(), model.predict(fresh))
    batched = q(torch.from_numpy(fresh).reshape(4, 1000, 32))
    assert batched.shape == (4, 1000) and torch.equal(batched.reshape(-1), ours)


def test_save_load_and_dispatch(km_bin, tmp_path):
    path, _ = km_bin
    q = KMeansQuantizer.from_km_bin(path)
    out = tmp_path / "q.pt"
    q.save(out)
    r = KMeansQuantizer.load(out)
    assert torch.equal(r.centroids, q.centroids) and r.meta["n_clusters"] == 50
    assert torch.equal(KMeansQuantizer.load(path).centroids, q.centroids)  # km.bin via load
    np.save(tmp_path / "c.npy", q.centroids.numpy())
    assert torch.equal(KMeansQuantizer.load(tmp_path / "c.npy").centroids, q.centroids)


def test_bad_files(tmp_path):
    junk = tmp_path / "km.bin"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"km\.bin: could not unpickle"):
        KMeansQuantizer.from_km_bin(junk)
    joblib.dump({"centers": 1}, junk)
    with pytest.raises(ValueError, match=r"km\.bin: found a builtins\.dict without cluster_centers_"):
        KMeansQuantizer.from_km_bin(junk)
    torch.save({"x": 1}, tmp_path / "q.pt")
    with pytest.raises(ValueError, match=r"q\.pt: is a dict with keys \['x'\], expected a k-means file"):
        KMeansQuantizer.load(tmp_path / "q.pt")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        KMeansQuantizer.load(tmp_path / "missing.bin")


def test_fit_on_utterances():
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((8, 4)).astype(np.float32) * 10
    utts = [torch.from_numpy(centers[rng.integers(0, 8, 60)] + 0.01 * rng.standard_normal((60, 4)).astype(np.float32))
            for _ in range(10)]
    q = KMeansQuantizer.fit(utts, n_clusters=8, **FAST)
    assert q.centroids.shape == (8, 4) and q.meta["n_frames"] == 600
    assert q.meta["kmeans_args"]["reassignment_ratio"] == 0.5 and q.meta["kmeans_args"]["n_init"] == 1
    # well separated blobs: every true center is recovered
    assert torch.cdist(torch.from_numpy(centers), q.centroids).min(dim=1).values.max() < 0.1
    with pytest.raises(ValueError, match="at least n_clusters=100 frames, got 60"):
        KMeansQuantizer.fit(utts[0], n_clusters=100)


def test_shape_errors_and_dedup():
    q = KMeansQuantizer(torch.randn(5, 3))
    with pytest.raises(ValueError, match="expected feature dim D=3.*got 4"):
        q(torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"\(T, D\) or \(B, T, D\)"):
        q(torch.randn(3))
    with pytest.raises(TypeError, match="float"):
        q(torch.ones(2, 3, dtype=torch.int64))
    assert dedup(torch.tensor([71, 71, 12, 12, 12, 71, 20])).tolist() == [71, 12, 71, 20]
    with pytest.raises(ValueError, match="1-D"):
        dedup(torch.zeros(2, 3, dtype=torch.long))


def test_centroid_itself_maps_to_its_index():
    c = torch.randn(20, 16)
    q = KMeansQuantizer(c)
    assert q(c).tolist() == list(range(20))
