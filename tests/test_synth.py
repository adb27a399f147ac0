"""Synthetic KS / IC corpora: parsed by s3prl's own corpus readers, deterministic by seed, CLI behaviour.

``import s3prl.dataio.corpus`` fails in a plain s3prl 0.4.18 install: its ``__init__`` imports
``iemocap.py``, which does ``from librosa.util import find_files`` (librosa is only in s3prl's "dev"
extra). The readers we need (speech_commands.py, fluent_speech_commands.py, base.py) do not use librosa,
so when the package import fails they are loaded straight from their files. Also,
``FluentSpeechCommands`` goes through ``Corpus.dataframe_to_datapoints``, which calls
``pandas.Series.iteritems`` (removed in pandas 2.0); the IC test aliases it to ``Series.items``.
"""
import hashlib
import importlib
import importlib.util
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from s3prl_speechprompt import cli
from s3prl_speechprompt.synth import corpora, render, tts
from s3prl_speechprompt.synth import (FSC_INTENTS, KS_CLASSES, KS_COMMANDS, KS_UNKNOWN_WORDS, ks_split_of,
                                      make_ic, make_ks, synthesize)

FSC_ACTIONS = {"activate", "bring", "change language", "deactivate", "decrease", "increase"}
FSC_OBJECTS = {"lights", "heat", "volume", "music", "lamp", "newspaper", "juice", "socks", "shoes",
               "Chinese", "Korean", "English", "German", "none"}
FSC_LOCATIONS = {"kitchen", "bedroom", "washroom", "none"}


def _s3prl_corpus_module(name):
    """``s3prl.dataio.corpus.<name>``, bypassing the package ``__init__`` if that cannot be imported."""
    try:
        return importlib.import_module(f"s3prl.dataio.corpus.{name}")
    except ImportError:
        pass
    import s3prl.dataio

    pkg_name = "s3prl.dataio.corpus"
    pkg_dir = Path(s3prl.dataio.__file__).parent / "corpus"
    saved = {k: sys.modules.get(k) for k in (pkg_name, f"{pkg_name}.base", f"{pkg_name}.{name}")}
    stub = types.ModuleType(pkg_name)
    stub.__path__ = [str(pkg_dir)]
    sys.modules[pkg_name] = stub
    try:
        spec = importlib.util.spec_from_file_location(f"{pkg_name}.{name}", pkg_dir / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:  # leave sys.modules as it was
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _tree_digest(root):
    """{relative path: sha1 of bytes} for every file under root."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ks") / "corpus"
    return out, make_ks(out, seed=0, per_class=3, progress=False, noise_seconds=10.0)


@pytest.fixture(scope="module")
def ic(tmp_path_factory):
    out = tmp_path_factory.mktemp("ic") / "corpus"
    return out, make_ic(out, seed=0, per_intent=2, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# text to speech

def test_synthesize_basic():
    wav = synthesize("left", "en-us", 160, 50)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.1 * tts.SAMPLE_RATE < len(wav) < 1.5 * tts.SAMPLE_RATE
    assert _rms(wav) > 0.01 and np.abs(wav).max() <= 1.0
    # voice, rate and pitch all change the audio; en-gb is accepted although espeak-ng names that voice "en"
    others = [synthesize("left", "en-gb+f3", 160, 50), synthesize("left", "en-us", 220, 50),
              synthesize("left", "en-us", 160, 80)]
    for o in others:
        assert len(o) != len(wav) or not np.array_equal(o, wav)


def test_synthesize_reproducible_in_fresh_processes():
    """Breathy variants (+f5) use espeak-ng's noise generator, which it seeds from the clock; ``seed`` pins it."""
    import subprocess
    import time

    code = ("import hashlib; from s3prl_speechprompt.synth.tts import synthesize; "
            "print(hashlib.sha1(synthesize('happy house', 'en-us+f5', 150, 60, seed=11).tobytes()).hexdigest())")
    digests = []
    for _ in range(2):
        digests.append(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                      text=True).stdout.strip())
        time.sleep(1.1)  # a different second on the clock
    assert digests[0] == digests[1]


def test_synthesize_errors():
    with pytest.raises(ValueError, match="no voice"):
        synthesize("hello", "xx-nonexistent-voice")
    with pytest.raises(tts.EspeakUnavailable, match="cannot load"):
        tts._Espeak("/nonexistent/libespeak-ng.so", None)


# ---------------------------------------------------------------------------------------------------------------
# KS

def test_ks_layout_and_s3prl_reader(ks):
    out, summary = ks
    root, test_root = out / "speech_commands_v0.01", out / "speech_commands_test_set_v0.01"
    assert Path(summary["root"]) == root.absolute() and Path(summary["test_root"]) == test_root.absolute()
    assert sorted(p.name for p in (root / "_background_noise_").glob("*.wav")) == sorted(
        f"{k}.wav" for k in render.NOISE_KINDS)
    assert {p.name for p in test_root.iterdir()} == set(KS_CLASSES)

    sc = _s3prl_corpus_module("speech_commands")
    corpus = sc.SpeechCommandsV1(str(root), str(test_root))
    train_ids, valid_ids, test_ids = corpus.data_split_ids
    data = corpus.all_data
    for split, ids in (("train", train_ids), ("dev", valid_ids), ("test", test_ids)):
        classes = [data[i]["class_name"] for i in ids]
        assert set(classes) == set(KS_CLASSES), split
        assert {c: classes.count(c) for c in KS_CLASSES} == summary["counts"][split], split
        for i in ids:
            assert Path(data[i]["wav_path"]).is_file()

    # SUPERB's own hash split: every word (commands and the _unknown_ words) lands in both train and dev,
    # and no file falls in the bucket SUPERB throws away
    train_list, valid_list = sc.SpeechCommandsV1.split_dataset(root)
    words = set(KS_COMMANDS) | set(KS_UNKNOWN_WORDS)
    assert {w for w, _ in train_list} == words
    assert {w for w, _ in valid_list} == words
    n_files = sum(1 for p in root.glob("*/*.wav") if p.parent.name != "_background_noise_")
    assert len(train_list) + len(valid_list) == n_files
    for w, p in train_list + valid_list:
        assert ks_split_of(Path(p).name) == ("dev" if (w, p) in valid_list else "train")

    # speakers of the official-style test set are disjoint from train/dev speakers
    spk = lambda p: p.name.split("_nohash_")[0].split("_")[-1]  # noqa: E731
    train_spk = {spk(p) for p in root.glob("*/*_nohash_*.wav")}
    test_spk = {spk(p) for p in test_root.glob("*/*_nohash_*.wav")}
    assert test_spk and not (train_spk & test_spk)


def test_ks_audio(ks):
    out, _ = ks
    for p in sorted(out.rglob("*.wav")):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV"), p
        wav, _ = sf.read(str(p), dtype="float32")
        kind = p.parent.name
        if kind == "_background_noise_":
            assert len(wav) == 10 * 16000 and _rms(wav) > 0.01, p
        elif kind == "_silence_":
            assert len(wav) == 16000 and 0 < _rms(wav) < 0.02, p
        else:
            assert len(wav) == 16000 and _rms(wav) > 0.02, p


# ---------------------------------------------------------------------------------------------------------------
# IC

def test_ic_csvs(ic):
    out, summary = ic
    root = out / "fluent_speech_commands_dataset"
    assert Path(summary["root"]) == root.absolute()
    frames = {}
    for split in ("train", "valid", "test"):
        csv = root / "data" / f"{split}_data.csv"
        assert csv.read_text().splitlines()[0] == ",path,speakerId,transcription,action,object,location"
        df = pd.read_csv(csv)
        assert list(df.columns) == ["Unnamed: 0", "path", "speakerId", "transcription", "action", "object",
                                    "location"]
        assert df["Unnamed: 0"].tolist() == list(range(len(df)))
        assert not df.isna().any().any()
        assert len(df) == summary["totals"][split]
        for _, row in df.iterrows():
            assert row["path"] == f"wavs/speakers/{row['speakerId']}/{Path(row['path']).name}"
            assert (root / row["path"]).is_file()
        assert set(df["action"]) <= FSC_ACTIONS and set(df["object"]) <= FSC_OBJECTS
        assert set(df["location"]) <= FSC_LOCATIONS
        frames[split] = df
    # speakers disjoint across splits, as in FSC; every intent of valid/test is seen in training
    spk = {s: set(df["speakerId"]) for s, df in frames.items()}
    assert not (spk["train"] & spk["valid"]) and not (spk["train"] & spk["test"]) and not (spk["valid"] & spk["test"])
    intents = {s: set(zip(df["action"], df["object"], df["location"])) for s, df in frames.items()}
    assert intents["train"] == intents["valid"] == intents["test"] and len(intents["train"]) == 22
    # the default 22 intents use every slot value of the real dataset (SUPERB's output layer: 6 + 14 + 4)
    assert set(frames["train"]["action"]) == FSC_ACTIONS and set(frames["train"]["object"]) == FSC_OBJECTS
    assert set(frames["train"]["location"]) == FSC_LOCATIONS
    assert len({(a, o, loc) for a, o, loc, _ in FSC_INTENTS}) == len(FSC_INTENTS) == 31


def test_ic_s3prl_reader_and_audio(ic, monkeypatch):
    out, summary = ic
    root = out / "fluent_speech_commands_dataset"
    # s3prl 0.4.18's Corpus.dataframe_to_datapoints calls Series.iteritems, removed in pandas 2.0
    if not hasattr(pd.Series, "iteritems"):
        monkeypatch.setattr(pd.Series, "iteritems", pd.Series.items, raising=False)
    fsc = _s3prl_corpus_module("fluent_speech_commands")
    corpus = fsc.FluentSpeechCommands(str(root))
    train_ids, valid_ids, test_ids = corpus.data_split_ids
    assert [len(train_ids), len(valid_ids), len(test_ids)] == [summary["totals"][s] for s in ("train", "valid", "test")]
    data = corpus.all_data
    assert len(data) == len(train_ids) + len(valid_ids) + len(test_ids)  # file stems are unique corpus-wide
    for key, item in data.items():
        assert set(item) == {"path", "speakerId", "transcription", "action", "object", "location"}
        info = sf.info(str(item["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        wav, _ = sf.read(str(item["path"]), dtype="float32")
        assert 0.5 * 16000 < len(wav) < 6 * 16000 and _rms(wav) > 0.02, key


# ---------------------------------------------------------------------------------------------------------------
# determinism

def test_ks_deterministic(ks, tmp_path):
    out, _ = ks
    again = make_ks(tmp_path / "a", seed=0, per_class=3, progress=False, noise_seconds=10.0, workers=1)
    ref = _tree_digest(out)
    # same file list, byte-identical audio (and summary json), whatever the number of worker processes
    assert _tree_digest(tmp_path / "a") == ref
    make_ks(tmp_path / "b", seed=1, per_class=3, progress=False, noise_seconds=10.0)
    other = _tree_digest(tmp_path / "b")
    assert set(other) != set(ref)
    assert again["counts"] == make_ks(tmp_path / "c", seed=0, per_class=3, progress=False, noise_seconds=10.0,
                                      force=True)["counts"]


def test_ic_deterministic(tmp_path):
    a = make_ic(tmp_path / "a", seed=3, per_intent=1, eval_per_intent=1, num_intents=5, speakers=(2, 1, 1),
                progress=False)
    make_ic(tmp_path / "b", seed=3, per_intent=1, eval_per_intent=1, num_intents=5, speakers=(2, 1, 1),
            progress=False)
    make_ic(tmp_path / "c", seed=4, per_intent=1, eval_per_intent=1, num_intents=5, speakers=(2, 1, 1),
            progress=False)
    da, db, dc = (_tree_digest(tmp_path / x) for x in "abc")
    assert da == db
    assert set(da) != set(dc)
    assert a["totals"] == {"train": 5, "valid": 5, "test": 5}


# ---------------------------------------------------------------------------------------------------------------
# output directory handling and the CLI

def _run_cli(argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv, report_errors=True)
    return e.value.code


def test_cli_ks_refuses_non_empty_and_force(tmp_path, capsys):
    out = tmp_path / "data"
    assert _run_cli(["synth", "ks", "--out", str(out), "--per-class", "1", "--quiet"]) == 0
    assert "speech_commands_test_root" in capsys.readouterr().out
    before = _tree_digest(out)
    assert _run_cli(["synth", "ks", "--out", str(out), "--per-class", "1", "--seed", "5", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _tree_digest(out) == before
    (out / "keep.txt").write_text("user file")
    assert _run_cli(["synth", "ks", "--out", str(out), "--per-class", "1", "--seed", "5", "--quiet", "--force"]) == 0
    after = _tree_digest(out)
    assert after != before and after["keep.txt"] == hashlib.sha1(b"user file").hexdigest()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_cli_ic_and_flag_checks(tmp_path, capsys):
    out = tmp_path / "fsc"
    assert _run_cli(["synth", "ic", "--out", str(out), "--per-class", "2"]) == 2
    assert _run_cli(["synth", "ks", "--out", str(out), "--per-intent", "2"]) == 2
    assert not out.exists()
    assert _run_cli(["synth", "ic", "--out", str(out), "--per-intent", "1", "--intents", "3", "--quiet"]) == 0
    assert (out / "fluent_speech_commands_dataset" / "data" / "test_data.csv").is_file()
    assert "file_path" in capsys.readouterr().out


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real_render_all = corpora.render_all

    def interrupted(jobs, *args, **kwargs):
        real_render_all(jobs[:5], *args, **kwargs)  # some files are written, then the user hits Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(corpora, "render_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_ks(tmp_path / "out", per_class=2, progress=False)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_empty_existing_dir_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    s = make_ic(tmp_path / "out", num_intents=2, per_intent=1, speakers=(1, 1, 1), progress=False)
    assert s["totals"] == {"train": 2, "valid": 2, "test": 2}
    shutil.rmtree(tmp_path / "out")
