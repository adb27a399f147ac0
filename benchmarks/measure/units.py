"""Row 4: an epoch of the expert path quantizing upstream features on the fly (wav read, s3prl upstream +
Featurizer, k-means, dedup) vs reading precomputed units, PT step included."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import List

import torch

from s3prl_speechprompt.prompt.prompted import build_batch

from .audio import SAMPLE_RATE, random_hubert, tones
from .common import BenchConfig, interleaved, make_lm, median_s, ratio, sync, trainer


def bench_units(cfg: BenchConfig) -> dict:
    import soundfile as sf

    from s3prl_speechprompt import compat
    compat.apply()
    from s3prl import hub
    from s3prl.upstream.interfaces import Featurizer

    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.units.manifest import UnitRecord, read_unit_file, write_unit_manifest
    from s3prl_speechprompt.units.prepare import to_units
    from s3prl_speechprompt.units.quantizer import KMeansQuantizer

    with tempfile.TemporaryDirectory(prefix="speechprompt-bench-") as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(cfg.seed)
        wavs = []
        for i, w in enumerate(tones(cfg.utterances, cfg.utterance_seconds, g)):
            wavs.append(tmp / f"utt{i:04d}.wav")
            sf.write(wavs[-1], w.numpy(), SAMPLE_RATE)
        labels = [(str(i % 12),) for i in range(cfg.utterances)]
        ckpt = random_hubert(tmp / "hubert.pt", cfg.upstream)
        upstream = hub.hubert_local(ckpt=str(ckpt)).to(cfg.device).eval()
        featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device=cfg.device,
                                layer_selection=cfg.upstream_layer).to(cfg.device).eval()
        dictionary = Dictionary([str(k) for k in range(cfg.units)])
        verbal = {str(c): str(c) for c in range(12)}          # label -> unit (identity), as a verbalizer would

        def read(paths):
            return [torch.as_tensor(sf.read(p, dtype="float32")[0], device=cfg.device) for p in paths]

        @torch.no_grad()
        def features(paths) -> List[torch.Tensor]:
            w = read(paths)
            return featurizer(w, upstream(w))

        # k-means centroids: random frames of the features (assignment cost is what is measured)
        frames = torch.cat([f for f in features(wavs[:4])]).float()
        pick = torch.randperm(frames.size(0), generator=g)[:cfg.units]
        quantizer = KMeansQuantizer(frames[pick].cpu()).to(cfg.device)
        # the precomputed unit manifest (what units/prepare.py caches for the train split)
        records = []
        for i in range(0, cfg.utterances, cfg.unit_batch):
            for j, f in enumerate(features(wavs[i:i + cfg.unit_batch])):
                records.append(UnitRecord(f"utt{i + j:04d}", tuple(to_units(quantizer, f)), labels[i + j]))
        manifest = tmp / "units.tsv"
        write_unit_manifest(manifest, records)

        lm = make_lm(cfg)
        model, opt, params = trainer(lm, "pt", cfg.ks_prompt)
        batches = [range(i, min(i + cfg.unit_batch, cfg.utterances)) for i in range(0, cfg.utterances, cfg.unit_batch)]
        data_time = {"on_the_fly": 0.0, "cached": 0.0}

        def train_on(sources, labs):
            codes = [dictionary.encode([verbal[y] for y in lab]) for lab in labs]
            inputs, targets = build_batch(sources, codes, cfg.device)
            opt.zero_grad(set_to_none=True)
            model.loss(inputs, targets).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        def epoch_on_the_fly():
            for b in batches:
                t0 = time.perf_counter()
                feats = features([wavs[i] for i in b])
                sources = [dictionary.encode(to_units(quantizer, f.detach())) for f in feats]
                sync(cfg.device)
                data_time["on_the_fly"] += time.perf_counter() - t0
                train_on(sources, [labels[i] for i in b])

        def epoch_cached():
            t0 = time.perf_counter()
            recs = read_unit_file(manifest)
            data_time["cached"] += time.perf_counter() - t0
            for b in batches:
                t0 = time.perf_counter()
                sources = [dictionary.encode(recs[i].units) for i in b]
                data_time["cached"] += time.perf_counter() - t0
                train_on(sources, [recs[i].labels for i in b])

        epoch_cached()                                                     # warm-up
        reps = max(cfg.unit_epochs, 1)
        data_time.update(on_the_fly=0.0, cached=0.0)
        times = interleaved({"on_the_fly": epoch_on_the_fly, "cached": epoch_cached}, reps, cfg.device)
        unit_lens = [len(r.units) for r in records]
    r = ratio(times, "on_the_fly", "cached")
    data_ratio = data_time["on_the_fly"] / max(data_time["cached"], 1e-9)
    up_params = sum(p.numel() for p in upstream.parameters())
    return {"id": "units.epoch", "section": "units",
            "what": (f"epoch of {cfg.utterances} x {cfg.utterance_seconds:g}s wavs, batch {cfg.unit_batch}, "
                     f"hubert_local {cfg.upstream} ({up_params / 1e6:.2f}M, layer {cfg.upstream_layer}) "
                     f"+ PT step: on-the-fly / precomputed units"),
            "value": r["median"], "unit": "x", "ratio": r, "seconds": median_s(times),
            "data_path_ratio": data_ratio, "data_seconds_per_epoch": {k: v / reps for k, v in data_time.items()},
            "mean_units_per_utterance": statistics.mean(unit_lens), "target": None, "met": None}
