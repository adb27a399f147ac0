"""Bad input and interrupted runs through the real entry point (s3prl's runner with our downstreams).

Each bad input of README "Failure modes" is fed to ``run_downstream.main`` (in-process: the runner's
own code path, without paying ~10 s of interpreter start per case) and must stop with a message that
names the file / field and the fix, before any training step - or, where the README says the input
is handled, run to the end with what was done counted. The kill test runs real subprocesses.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from s3prl_speechprompt import compat
from s3prl_speechprompt.s3prl_plugin import registry

from helpers import CSV_UNITS, RUNNER, make_csv_corpus, run_inprocess, runner_env, tone, write_csv_config


def train(cfg: Path, exp: Path) -> None:
    run_inprocess("-m", "train", "-u", "fbank", "-d", "speechprompt_csv", "-c", cfg, "-p", exp, "--device", "cpu")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_ulm_dir):
    compat.apply()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("failure")
    csv_path = make_csv_corpus(root / "corpus")
    return {"root": root, "csv": csv_path, "ulm": tiny_ulm_dir, "cache": root / "cache"}


def _cfg(env, tmp_path, datarc=None, **expert):
    return write_csv_config(tmp_path / "cfg.yaml", expert.pop("ulm", env["ulm"]), env["cache"],
                            datarc if datarc is not None else {"csv": str(env["csv"])}, **expert)


# ------------------------------------------------------------------------------------ corpus layout
def test_missing_root_wrong_layout_and_empty_split(env, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv: CSV file not found \(downstream_expert\.datarc\)"):
        train(_cfg(env, tmp_path, {"csv": str(tmp_path / "nowhere.csv")}), tmp_path / "e1")

    ks = {"speech_commands_root": str(tmp_path / "no_gsc"), "speech_commands_test_root": str(tmp_path / "no_gsc")}
    with pytest.raises(FileNotFoundError, match=r"datarc\.speech_commands_root: .*no_gsc is not a directory"):
        train(_cfg(env, tmp_path, ks, task="ks"), tmp_path / "e2")

    (tmp_path / "Libri" / "dev-clean").mkdir(parents=True)       # wrong layout: no SPEAKERS.TXT, no train subset
    with pytest.raises(FileNotFoundError, match=r"libri_root: .*Libri is not a LibriSpeech root .*missing: "
                                                r"\['train-clean-100'"):
        train(_cfg(env, tmp_path, {"libri_root": str(tmp_path / "Libri")}, task="asr", verbalizer="freq"),
              tmp_path / "e3")

    rows = [r for r in env["csv"].read_text().splitlines() if not r.endswith(",dev")]
    no_dev = tmp_path / "no_dev.csv"
    no_dev.write_text("\n".join(rows).replace("wav/", str(env["csv"].parent / "wav") + "/") + "\n")
    with pytest.raises(ValueError, match=r"split 'dev' has no rows"):
        train(_cfg(env, tmp_path, {"csv": str(no_dev)}), tmp_path / "e4")
    assert not (tmp_path / "e4" / "states-2.ckpt").exists()


def test_malformed_and_non_utf8_label_files(env, tmp_path):
    wav = env["csv"].parent / "wav"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,label,split\n{wav}/low_train_0.wav,low,train\n{wav}/mid_train_0.wav\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: split '' is not one of train/dev/test"):
        train(_cfg(env, tmp_path, {"csv": str(bad)}), tmp_path / "e1")
    bad.write_text(f"path,label,split\n{wav}/low_train_0.wav,,train\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: empty label"):
        train(_cfg(env, tmp_path, {"csv": str(bad)}), tmp_path / "e2")
    bad.write_bytes(f"path,label,split\n{wav}/low_train_0.wav,caf\xe9,train\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"bad\.csv: not UTF-8 text \(line 2"):
        train(_cfg(env, tmp_path, {"csv": str(bad)}), tmp_path / "e3")

    # LibriSpeech: a chapter's .trans.txt in Latin-1
    libri = tmp_path / "LibriSpeech"
    (libri / "SPEAKERS.TXT").parent.mkdir(parents=True)
    (libri / "SPEAKERS.TXT").write_text(";ID|SEX| SUBSET |MINUTES| NAME\n1 | F | train-clean-100 | 1 | A\n")
    for subset in ("train-clean-100", "dev-clean", "test-clean"):
        chapter = libri / subset / "1" / "2"
        chapter.mkdir(parents=True)
        sf.write(chapter / "1-2-0000.flac", tone(440), 16000)
        (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO WORLD\n")
    bad_trans = libri / "dev-clean" / "1" / "2" / "1-2.trans.txt"
    bad_trans.write_bytes("1-2-0000 CAF\xc9 NOIR\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"dev-clean/1/2/1-2\.trans\.txt: not UTF-8 text"):
        train(_cfg(env, tmp_path, {"libri_root": str(libri)}, task="asr", verbalizer="freq"), tmp_path / "e4")


# ------------------------------------------------------------------------------------ audio
def _with_files(env, tmp_path, name, extra_rows):
    path = tmp_path / name
    text = env["csv"].read_text().replace("wav/", str(env["csv"].parent / "wav") + "/")
    path.write_text(text + "".join(f"{p},{label},{split}\n" for p, label, split in extra_rows))
    return path


def test_unusable_audio_is_an_error_naming_every_file_or_skipped_and_counted(env, tmp_path, capsys):
    d = tmp_path / "audio"
    d.mkdir()
    (d / "garbage.wav").write_bytes(b"not a wav file" * 50)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "full.flac", tone(300, seconds=1.0), 16000)
    data = (d / "full.flac").read_bytes()
    (d / "truncated.flac").write_bytes(data[: len(data) // 3])
    rows = [(d / "garbage.wav", "low", "train"), (d / "empty.wav", "mid", "train"),
            (d / "truncated.flac", "high", "train"), (d / "missing.wav", "low", "dev")]
    csv_path = _with_files(env, tmp_path, "bad_audio.csv", rows)

    with pytest.raises(ValueError) as e:
        train(_cfg(env, tmp_path, {"csv": str(csv_path)}), tmp_path / "strict")
    msg = str(e.value)
    assert "3 of 21 utterances of split 'train' have unusable audio" in msg
    for name, reason in (("garbage.wav", "unreadable"), ("empty.wav", "no audio"), ("truncated.flac", "truncated")):
        assert f"{d / name}: {reason}" in msg, msg
    assert "bad_audio: skip" in msg
    assert not (tmp_path / "strict" / "states-2.ckpt").exists()

    exp = tmp_path / "skip"
    train(_cfg(env, tmp_path, {"csv": str(csv_path)}, bad_audio="skip"), exp)
    out = capsys.readouterr().out
    assert "split train: skipped 3 of 21 utterances with unusable audio" in out
    assert "split dev: skipped 1 of 7 utterances with unusable audio" in out
    listed = (exp / "skipped_train.tsv").read_text().splitlines()
    assert listed[0] == "id\tfile\treason" and len(listed) == 4
    assert "file not found" in (exp / "skipped_dev.tsv").read_text()
    assert (exp / "states-2.ckpt").is_file()
    # dev was scored on its 6 usable utterances, none silently dropped beyond the 1 listed
    assert len((exp / "dev_predict.txt").read_text().splitlines()) == 6


def test_stereo_other_rates_and_very_short_audio_are_handled_and_counted(env, tmp_path, capsys):
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "stereo.wav", np.stack([tone(300), tone(300, seed=1)], axis=1), 16000)
    sf.write(d / "8k.wav", tone(900, sr=8000), 8000)
    sf.write(d / "44k.flac", tone(2500, sr=44100), 44100)
    sf.write(d / "short.wav", tone(300)[:120], 16000)           # 7.5 ms: shorter than one upstream frame
    rows = [(d / "stereo.wav", "low", "train"), (d / "8k.wav", "mid", "train"), (d / "44k.flac", "high", "dev"),
            (d / "short.wav", "low", "dev")]
    exp = tmp_path / "exp"
    train(_cfg(env, tmp_path, {"csv": str(_with_files(env, tmp_path, "odd.csv", rows))}), exp)
    out = capsys.readouterr().out
    assert "audio of split 'train': 20 utterances, all readable; 1 multi-channel, averaged to mono, " \
           "1 resampled to 16000 Hz" in out
    assert "audio of split 'dev': 8 utterances, all readable; 1 resampled to 16000 Hz, " \
           "1 shorter than 400 samples, zero-padded" in out
    assert len((exp / "dev_predict.txt").read_text().splitlines()) == 8

    from s3prl_speechprompt.tasks.base import Item, read_item_audio
    assert read_item_audio(Item("s", str(d / "stereo.wav"), ("low",))).shape == (6400,)
    assert read_item_audio(Item("r", str(d / "8k.wav"), ("mid",))).shape == (6400,)
    assert read_item_audio(Item("x", str(d / "short.wav"), ("low",))).shape == (400,)


# ------------------------------------------------------------------------------------ labels
def test_unseen_label_and_more_classes_than_units(env, tmp_path):
    wav = env["csv"].parent / "wav"
    sf.write(tmp_path / "zebra.wav", tone(5000), 16000)
    csv_path = _with_files(env, tmp_path, "unseen.csv", [(tmp_path / "zebra.wav", "zebra", "dev")])
    with pytest.raises(ValueError, match=r"split 'dev' has label\(s\) never seen in the training split: 'zebra' \(1x\)"):
        train(_cfg(env, tmp_path, {"csv": str(csv_path)}), tmp_path / "e1")

    rows = ["id,path,label,split"] + [f"u{i},{wav}/low_train_0.wav,c{i},train" for i in range(CSV_UNITS + 5)] + \
           [f"d,{wav}/low_dev_0.wav,c0,dev", f"t,{wav}/low_test_0.wav,c0,test"]
    many = tmp_path / "many.csv"
    many.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"25 labels .* 20 units.*(multi|learnable)"):
        train(_cfg(env, tmp_path, {"csv": str(many)}, verbalizer="freq"), tmp_path / "e2")


# ------------------------------------------------------------------------------------ unit LM / k-means files
def test_lm_and_kmeans_file_errors_name_the_files(env, tmp_path):
    import shutil

    from s3prl_speechprompt.units.quantizer import KMeansQuantizer

    no_dict = tmp_path / "no_dict"
    shutil.copytree(env["ulm"], no_dict)
    (no_dict / "dict.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no_dict.*dict\.txt"):
        train(_cfg(env, tmp_path, ulm=no_dict), tmp_path / "e1")

    short_dict = tmp_path / "short_dict"
    shutil.copytree(env["ulm"], short_dict)
    (short_dict / "dict.txt").write_text("".join(f"{u} 1\n" for u in range(10)))
    with pytest.raises(Exception, match=r"short_dict.*(dict\.txt|checkpoint).*(10|24)"):
        train(_cfg(env, tmp_path, ulm=short_dict), tmp_path / "e2")

    km = tmp_path / "km7.pt"
    KMeansQuantizer(torch.randn(CSV_UNITS, 7)).save(km)
    with pytest.raises(ValueError, match=r"km7\.pt: k-means dimension 7 != upstream feature dimension 240"):
        train(_cfg(env, tmp_path, km=str(km)), tmp_path / "e3")


def test_prompt_checkpoint_from_another_lm_is_refused(env, tmp_path):
    import shutil

    from s3prl_speechprompt.ulm.checkpoint import load_ulm, save_ulm

    lm_dir = tmp_path / "lm"
    shutil.copytree(env["ulm"], lm_dir)
    exp = tmp_path / "exp"
    train(_cfg(env, tmp_path, ulm=lm_dir), exp)
    lm, dictionary, _ = load_ulm(lm_dir)
    with torch.no_grad():
        lm.decoder.embed_tokens.weight.add_(0.01)                     # "the LM at that path was retrained"
    save_ulm(lm, dictionary, lm_dir)
    with pytest.raises(ValueError, match=r"trained on a different unit LM .*lm"):
        run_inprocess("-m", "evaluate", "-t", "test", "-e", exp / "dev-best.ckpt", "--device", "cpu")


# ------------------------------------------------------------------------------------ long sources, budget
def test_sources_past_lm_positions_and_unfinished_generation_are_reported(env, tmp_path, capsys):
    """An LM whose config allows 8 positions trains and decodes 0.4-s utterances (~40 frames of units);
    generations that hit the budget without </s> are counted in `unfinished`."""
    from s3prl_speechprompt.ulm.checkpoint import load_ulm, save_ulm

    lm, dictionary, _ = load_ulm(env["ulm"])
    lm.cfg.max_positions = 8
    short = tmp_path / "lm8"
    save_ulm(lm, dictionary, short)
    assert load_ulm(short)[0].cfg.max_positions == 8
    exp = tmp_path / "exp"
    train(_cfg(env, tmp_path, ulm=short, max_new_tokens=1, verbalizer="freq"), exp)
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("[speechprompt] step 2: dev accuracy")][-1]
    unfinished = int(float(line.split("dev unfinished: ")[1].split(";")[0]))
    preds = (exp / "dev_predict.txt").read_text().splitlines()
    assert len(preds) == 6 and 0 <= unfinished <= 6
    # budget of 1 unit for a 1-unit code: a prediction is "<unk>" exactly when no label was produced
    assert unfinished == 6   # never room for </s>


# ------------------------------------------------------------------------------------ SIGKILL + -a
def _kill_resume_matches_uninterrupted(cfg: Path, downstream: str, tmp_path: Path, steps: int, prefixes) -> None:
    """A real training subprocess killed with SIGKILL while it trains and saves, once in the first run and once
    after the step-8 evaluation inside the resumed one; `-a` finishes it; the final weights whose names start with
    ``prefixes`` and the final dev metrics are bitwise those of an uninterrupted run (same seed)."""
    args = ["-m", "train", "-u", "fbank", "-d", downstream, "-c", str(cfg), "--device", "cpu"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(RUNNER + args + ["-p", str(full)], check=True, env=runner_env(), capture_output=True)

    states = lambda: sorted(int(p.stem.split("-")[1]) for p in cut.glob("states-*.ckpt"))

    def kill_when(cmd, first_step):
        """Start cmd, SIGKILL it once a states-*.ckpt of step >= first_step exists (still mid-run)."""
        proc = subprocess.Popen(cmd, env=runner_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not any(first_step <= s < steps for s in states()):
            time.sleep(0.005)
        alive = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert alive, "the run ended before it could be killed; make it longer"
        left = states()
        assert left and max(left) < steps, left
        for step in left:      # whatever -a will find is a whole checkpoint
            torch.load(cut / f"states-{step}.ckpt", map_location="cpu", weights_only=False)
        return left

    killed_at = [kill_when(RUNNER + args + ["-p", str(cut)], 4)]
    resume = RUNNER + ["-m", "train", "-a", "-p", str(cut), "--device", "cpu"]
    killed_at.append(kill_when(resume, 10))        # killed again after the step-8 evaluation, inside the resumed run
    out = subprocess.run(resume, env=runner_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"Resume from {cut}/states-{max(killed_at[-1])}.ckpt" in out.stdout
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)["Downstream"]
    a, b = load(full / f"states-{steps}.ckpt"), load(cut / f"states-{steps}.ckpt")
    keys = [k for k in a if k.startswith(tuple(prefixes))]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys), f"killed after states {killed_at}"
    last = lambda p: [ln for ln in (p / "log.log").read_text().splitlines() if ln.startswith(f"step {steps}:")]
    assert last(full) == last(cut) and last(full)


def _resume_runner(cfg: Path, steps: int) -> None:
    data = yaml.safe_load(cfg.read_text())
    data["runner"].update(total_steps=steps, save_step=2, eval_step=8, max_keep=1, log_step=4, eval_dataloaders=["dev"])
    cfg.write_text(yaml.safe_dump(data))


def test_sigkill_mid_run_then_auto_resume_equals_the_uninterrupted_run(env, tmp_path):
    """The prompt expert: final prompts and dev metrics after two kills and `-a` equal an uninterrupted run's."""
    steps = 16
    cfg = _cfg(env, tmp_path, {"csv": str(env["csv"])})
    _resume_runner(cfg, steps)
    _kill_resume_matches_uninterrupted(cfg, "speechprompt_csv", tmp_path, steps, ["model."])


def test_baseline_sigkill_mid_run_then_auto_resume_equals_the_uninterrupted_run(env, tmp_path):
    """The baseline expert (SUPERB's linear head, ``-d speechprompt_csv_linear``): its training order comes from the
    same resumable sampler, so after two kills and `-a` its head weights equal an uninterrupted run's, bitwise.
    18 training utterances in batches of 4: the kills fall mid-epoch, where `-a` must skip what was consumed."""
    steps = 16
    cfg = yaml.safe_load(Path(registry.default_config_path("speechprompt_csv_linear")).read_text())
    cfg["optimizer"]["lr"] = 1e-2
    cfg["downstream_expert"]["datarc"].update(csv=str(env["csv"]), batch_size=4, eval_batch_size=8, num_workers=0)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _resume_runner(path, steps)
    _kill_resume_matches_uninterrupted(path, "speechprompt_csv_linear", tmp_path, steps, ["projector.", "model."])
