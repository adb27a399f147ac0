"""`speechprompt extract-units` equals what the expert computes from s3prl's batched upstream + featurizer."""
import json
import os
import subprocess
import sys

import torch

from s3prl_speechprompt import compat


def test_extract_units_matches_the_experts_on_the_fly_units(tmp_path):
    from s3prl_speechprompt.synth import make_ks
    make_ks(tmp_path / "corpus", seed=1, per_class=3, progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "extract-units", "-u", "fbank",
                          "--corpus-task", "ks", "--root", str(tmp_path / "corpus"), "--n-clusters", "20",
                          "--out", str(tmp_path / "units"), "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary["utterances"]) == {"train", "dev", "test"} and summary["dim"] == 240

    # the expert's path: the runner's upstream on a padded batch, s3prl's Featurizer, then our quantizer
    compat.apply()
    from s3prl import hub
    from s3prl.upstream.interfaces import Featurizer

    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import read_unit_file
    from s3prl_speechprompt.units.prepare import to_units
    from s3prl_speechprompt.units.quantizer import KMeansQuantizer

    task = get_task("ks")(speech_commands_root=str(tmp_path / "corpus" / "speech_commands_v0.01"),
                          speech_commands_test_root=str(tmp_path / "corpus" / "speech_commands_test_set_v0.01"))
    quantizer = KMeansQuantizer.load(tmp_path / "units" / "kmeans.pt")
    upstream = hub.fbank().eval()
    featurizer = Featurizer(upstream, upstream_device="cpu").eval()
    items = task.read_split("test")[:8]
    wavs = [torch.from_numpy(read_item_audio(it)) for it in items]
    wavs[0] = wavs[0][:9000]                     # different lengths -> a padded batch
    with torch.no_grad():
        feats = featurizer(wavs, upstream(wavs))
    manifest = {r.id: r.units for r in read_unit_file(tmp_path / "units" / "test.tsv")}
    for it, f, w in zip(items, feats, wavs):
        ours = tuple(to_units(quantizer, f))
        if len(w) == 16000:
            assert ours == manifest[it.id]
        assert len(ours) > 0


def test_unit_cache_is_keyed_by_file_content_not_only_ids(tmp_path):
    import numpy as np
    import soundfile as sf

    from s3prl_speechprompt.tasks.base import Item, read_item_audio
    from s3prl_speechprompt.units.prepare import prepare_units

    def corpus(seed):
        rng = np.random.default_rng(seed)
        items = []
        for i in range(6):
            path = tmp_path / f"u{i}.wav"
            sf.write(path, (rng.standard_normal(1600) * 0.1).astype("float32"), 16000)
            os.utime(path, (1_000_000 + seed, 1_000_000 + seed))    # distinct mtimes even within a second
            items.append(Item(f"u{i}", str(path), ("a" if i % 2 else "b",)))
        return items

    featurize = lambda wav: torch.from_numpy(wav[:1600].reshape(-1, 4))   # (400, 4) "features"
    first = prepare_units(corpus(0), featurize, read_item_audio, key_parts={"t": 1}, n_clusters=5,
                          cache_dir=tmp_path / "cache")[1]
    again = prepare_units(corpus(0), featurize, read_item_audio, key_parts={"t": 1}, n_clusters=5,
                          cache_dir=tmp_path / "cache")[1]
    assert again == first and len(list((tmp_path / "cache").glob("units-*.tsv"))) == 1
    prepare_units(corpus(1), featurize, read_item_audio, key_parts={"t": 1}, n_clusters=5,
                  cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("units-*.tsv"))) == 2     # new audio, same ids: recomputed
