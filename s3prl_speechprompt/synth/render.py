"""How every synthetic corpus is made, whatever its layout: speakers (espeak-ng voice x rate x pitch), clip
finishing (trim, place, gain, background noise), parallel rendering that depends only on the seed, and an output
directory that appears only when the corpus is complete.

The corpora themselves (what is said, by whom, in which on-disk layout) are in :mod:`.corpora` (KS, IC),
:mod:`.cls_corpora` (ER, SID, CSV) and :mod:`.seq_corpora` (ASR, SF).
"""
import contextlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from s3prl_speechprompt.errors import ConfigError, OutputExistsError

from .tts import SAMPLE_RATE, synthesize

# --- speakers ---

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"]
VARIANTS = ["", "+f1", "+f2", "+f3", "+f4", "+f5", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7"]
RATES_WPM = [130, 145, 160, 175, 190, 205]
PITCHES = [25, 35, 45, 55, 65, 75]


def _voice_grid():
    return [(a + v, r, p) for a in ACCENTS for v in VARIANTS for r in RATES_WPM for p in PITCHES]


def draw_speakers(rng, n):
    """``n`` distinct (voice, rate, pitch, pitch_range) tuples."""
    grid = _voice_grid()
    if n > len(grid):
        raise ConfigError(f"at most {len(grid)} distinct synthetic speakers, asked for {n}")
    picks = rng.choice(len(grid), size=n, replace=False)
    return [dict(voice=grid[i][0], rate=grid[i][1], pitch=grid[i][2], range=int(rng.integers(30, 80)))
            for i in picks]


# --- noise and clip post-processing ---

NOISE_KINDS = ["white_noise", "pink_noise", "brown_noise", "mains_hum", "running_water"]


def _coloured(rng, n, exponent):
    """Gaussian noise with power spectrum ~ 1/f**exponent, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1]
    spec *= f ** (-exponent / 2.0)
    spec[f < 20] = 0.0  # no DC drift
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def make_noise(kind, n, rng):
    """``n`` samples of one noise type at unit RMS (float64)."""
    if kind == "white_noise":
        x = rng.standard_normal(n)
    elif kind == "pink_noise":
        x = _coloured(rng, n, 1.0)
    elif kind == "brown_noise":
        x = _coloured(rng, n, 2.0)
    elif kind == "mains_hum":
        t = np.arange(n) / SAMPLE_RATE
        base = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 8))
        x = x + 0.05 * rng.standard_normal(n)
    elif kind == "running_water":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        spec *= np.exp(-0.5 * ((f - rng.uniform(1500, 3500)) / rng.uniform(600, 1500)) ** 2)
        x = np.fft.irfft(spec, n)
        t = np.arange(n) / SAMPLE_RATE
        x *= 1.0 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t) + 0.2 * rng.standard_normal(n).clip(-1, 1)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose from {NOISE_KINDS}")
    x = np.asarray(x, dtype=np.float64)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _trim(wav, rel_threshold=0.02):
    """Drop espeak's leading/trailing silence."""
    idx = np.flatnonzero(np.abs(wav) > rel_threshold * (np.abs(wav).max() + 1e-12))
    return wav[idx[0]:idx[-1] + 1] if len(idx) else wav


def _finish(speech, rng, length=None, pad=(0.1, 0.4)):
    """Place speech in a clip, apply a random gain and add a little noise.

    ``length`` (samples) gives a fixed-size clip with the speech at a random offset (cropped at a random
    position if too long); without it the speech gets ``pad`` seconds of random lead/tail silence.
    """
    speech = _trim(speech)
    if length is not None:
        if len(speech) > length:
            start = int(rng.integers(0, len(speech) - length + 1))
            speech = speech[start:start + length]
        clip = np.zeros(length)
        off = int(rng.integers(0, length - len(speech) + 1))
        clip[off:off + len(speech)] = speech
    else:
        lead, tail = (int(rng.uniform(*pad) * SAMPLE_RATE) for _ in range(2))
        clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    clip = clip / (np.abs(clip).max() + 1e-12) * rng.uniform(0.3, 0.9)
    speech_rms = np.sqrt(np.mean(speech ** 2)) / (np.abs(speech).max() + 1e-12) * np.abs(clip).max()
    snr_db = rng.uniform(20.0, 40.0)
    noise = make_noise(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))], len(clip), rng)
    clip = clip + noise * speech_rms * 10 ** (-snr_db / 20)
    return clip


def write_wav(path, wav):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if Path(path).suffix.lower() == ".flac" else "WAV"   # LibriSpeech ships FLAC
    sf.write(str(path), np.clip(wav, -1.0, 32767 / 32768), SAMPLE_RATE, subtype="PCM_16", format=fmt)


def _render(job):
    """Synthesize and write one planned utterance (a dict made by the planners below)."""
    if job.get("text") is None:  # a silence clip: low noise only
        rng = np.random.default_rng(job["seed"])
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        wav = make_noise(kind, job["length"], rng) * rng.uniform(0.001, 0.01)
    else:
        spk = job["speaker"]
        # a little per-utterance variation so repetitions by one speaker are not identical
        jitter = np.random.default_rng([job["seed"], 1])
        rate = spk["rate"] * jitter.uniform(0.92, 1.08)
        pitch = int(np.clip(spk["pitch"] + jitter.integers(-4, 5), 0, 100))
        speech = synthesize(job["text"], spk["voice"], rate, pitch, spk["range"],
                            seed=int(jitter.integers(2 ** 31)))
        if len(speech) == 0 or not np.any(speech):
            raise RuntimeError(f"espeak-ng produced no audio for {job['text']!r} with voice {spk['voice']!r}")
        wav = _finish(speech.astype(np.float64), np.random.default_rng([job["seed"], 2]), length=job.get("length"))
    write_wav(job["path"], wav)


def _render_shard(jobs):
    for job in jobs:
        _render(job)
    return len(jobs)


# utterances per worker task; every task runs in a new process (see render_all)
SHARD_SIZE = 32


def _mp_context():
    import multiprocessing as mp

    try:
        ctx = mp.get_context("forkserver")
        # the fork server imports these once; it never loads libespeak-ng itself (that happens lazily)
        ctx.set_forkserver_preload(["s3prl_speechprompt.synth.render", "scipy.signal", "soundfile"])
        return ctx
    except ValueError:  # no forkserver (Windows)
        return mp.get_context("spawn")


def render_all(jobs, progress, desc, workers=None, root=None):
    """Render all jobs (their ``path`` rebased in place under ``root``) in fixed shards, each in a fresh process.

    libespeak-ng keeps internal state between calls (e.g. the phase of its pitch "flutter"), so the same
    text can come out slightly different depending on what was spoken before in that process. Giving every
    shard a fresh process (``maxtasksperchild=1``, forked from a server that never loaded the library) makes
    the audio a function of the shard's contents only, hence of the seed, whatever the number of workers.
    """
    from tqdm import tqdm

    for job in jobs if root is not None else ():
        job["path"] = root / job["path"]
    shards = [jobs[i:i + SHARD_SIZE] for i in range(0, len(jobs), SHARD_SIZE)]
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(shards)))
    with tqdm(total=len(jobs), desc=desc, unit="utt", disable=not progress, dynamic_ncols=True) as bar:
        if not shards:
            return
        with _mp_context().Pool(workers, maxtasksperchild=1) as pool:
            for n in pool.imap_unordered(_render_shard, shards):
                bar.update(n)


# --- output directory handling ---

def check_out_dir(out_dir, force):
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not force:
            raise OutputExistsError(f"{out_dir} is not empty; use force=True (--force) to replace the corpus in it")
    return out_dir


@contextlib.contextmanager
def staging(out_dir):
    """Yield a temp dir next to ``out_dir``; on success move its entries into ``out_dir`` (replacing)."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
        out_dir.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            dest = out_dir / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_info(path, summary, out_dir):
    """The summary as JSON next to the corpus, with roots relative to ``out_dir`` (so the file is seed-determined)."""
    info = OrderedDict(summary)
    for key in ("root", "test_root"):
        if key in info:
            info[key] = os.path.relpath(info[key], out_dir)
    path.write_text(json.dumps(info, indent=2) + "\n")


def random_string(rng, n, alphabet):
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))
