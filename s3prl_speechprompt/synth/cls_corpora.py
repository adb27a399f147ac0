"""Small synthetic corpora for the utterance-classification tasks added after KS/IC: ER, SID and CSV.

``make_er`` writes IEMOCAP as ``s3prl.dataio.corpus.IEMOCAP`` reads it; "emotions" are prosody variants (rate,
pitch, pitch range) of every speaker saying the same sentences, so only prosody carries the label. ``make_sid``
writes VoxCeleb1 as ``VoxCeleb1SID`` reads it; speakers are distinct espeak-ng voice/rate/pitch combinations, each
with its own vocal-tract length (a spectral warp) and voice quality (spectral tilt). ``make_csv`` writes spoken
"<colour> <shape>" phrases for the ``csv`` task in both CSV layouts. Same seed -> same files (see :mod:`.corpora`).
"""
import csv
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from s3prl_speechprompt.errors import ConfigError

from .render import check_out_dir, draw_speakers, random_string, render_all, staging, write_info

# neutral sentences: every emotion / speaker says the same texts, so the words carry no label
SENTENCES = [
    "The train leaves at nine.", "Keys are on the table.", "We talked about it.", "She will call you back.",
    "The meeting moved to Thursday.", "He opened the window.", "There is a letter for you.",
    "They walked home together.", "I did not expect that.", "The shop is closed today.",
    "Take the blue chair.", "It rained all night.", "My brother bought a bicycle.", "Read the first page.",
    "The children are outside.", "We have to leave now.",
]

# --- ER: IEMOCAP ---

# emotion -> (rate factor, pitch offset, pitch-range factor); exc is merged into hap by SUPERB, fru is dropped
ER_PROSODY = OrderedDict([
    ("neu", (1.00, 0, 1.0)),
    ("hap", (1.10, 35, 1.6)),
    ("exc", (1.20, 40, 1.8)),
    ("ang", (1.50, 10, 0.2)),
    ("sad", (0.70, -35, 0.3)),
    ("fru", (0.90, -10, 0.8)),
])
IEMOCAP_DIR = "IEMOCAP"
_VAD = {"neu": "2.5000, 2.5000, 2.5000", "hap": "4.0000, 3.5000, 3.0000", "exc": "4.0000, 4.0000, 3.0000",
        "ang": "1.5000, 4.0000, 4.0000", "sad": "1.5000, 2.0000, 2.0000", "fru": "2.0000, 3.0000, 3.0000"}
_CATEGORICAL = {"neu": "Neutral", "hap": "Happiness", "exc": "Excited", "ang": "Anger", "sad": "Sadness",
                "fru": "Frustration"}


def _emo_speaker(spk, emotion):
    rate, dpitch, frange = ER_PROSODY[emotion]
    return dict(spk, rate=spk["rate"] * rate, pitch=int(np.clip(spk["pitch"] + dpitch, 0, 100)),
                range=int(np.clip(spk["range"] * frange, 0, 100)))


def make_er(out_dir, seed=0, per_emotion=4, sessions=5, force=False, progress=True, workers=None):
    """Write a synthetic IEMOCAP under ``out_dir/IEMOCAP``.

    Every session has a female- and a male-led dialog (``Ses0<k>F_impro01``, ``Ses0<k>M_impro01``) with ``per_emotion``
    utterances of every emotion in :data:`ER_PROSODY` (``hap``/``exc`` share ``per_emotion`` since SUPERB merges them,
    so the 4 classes are balanced; ``fru`` is written and dropped by SUPERB), spoken alternately by the session's two
    speakers, with EmoEvaluation files in IEMOCAP's line format. Returns a summary with per-session class counts.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    if per_emotion < 1:
        raise ConfigError("per_emotion must be >= 1")
    if sessions != 5:
        raise ConfigError("IEMOCAP has 5 sessions (s3prl's parser reads Session1..Session5)")
    rng = np.random.default_rng([seed, 0x4552])  # "ER"
    # one base pitch/range for every speaker (voices differ in timbre and rate): pitch carries the emotion,
    # and the offsets stay inside espeak's 0..100
    voices = [dict(v, pitch=int(rng.integers(47, 54)), range=int(rng.integers(45, 55)))
              for v in draw_speakers(rng, 2 * sessions)]
    jobs, labels, counts = [], {}, OrderedDict()
    for s in range(1, sessions + 1):
        pair = {"F": voices[2 * s - 2], "M": voices[2 * s - 1]}
        counts[f"Session{s}"] = OrderedDict((c, 0) for c in ("neu", "hap", "ang", "sad"))
        for lead in ("F", "M"):
            dialog = f"Ses{s:02d}{lead}_impro01"
            turn = {"F": 0, "M": 0}
            entries = []
            # hap and exc share one class after SUPERB's merge: split per_emotion between them
            n_of = {e: per_emotion for e in ER_PROSODY}
            n_of["exc"] = per_emotion // 2
            n_of["hap"] = per_emotion - n_of["exc"]
            plan = [e for e in ER_PROSODY for _ in range(n_of[e])]
            plan = [plan[i] for i in rng.permutation(len(plan))]
            clock = float(rng.uniform(1.0, 5.0))
            for j, emotion in enumerate(plan):
                who = "F" if j % 2 == 0 else "M"
                name = f"{dialog}_{who}{turn[who]:03d}"
                turn[who] += 1
                text = SENTENCES[int(rng.integers(len(SENTENCES)))]
                rel = Path(IEMOCAP_DIR, f"Session{s}", "sentences", "wav", dialog, f"{name}.wav")
                jobs.append(dict(path=rel, text=text, speaker=_emo_speaker(pair[who], emotion), length=None,
                                 seed=int(rng.integers(2 ** 63))))
                dur = float(rng.uniform(1.5, 4.0))
                entries.append((clock, clock + dur, name, emotion))
                clock += dur + float(rng.uniform(0.2, 1.5))
                merged = "hap" if emotion == "exc" else emotion
                if merged in counts[f"Session{s}"]:
                    counts[f"Session{s}"][merged] += 1
            labels[Path(IEMOCAP_DIR, f"Session{s}", "dialog", "EmoEvaluation", f"{dialog}.txt")] = entries

    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth er", workers, root=tmp)
        for rel, entries in labels.items():
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for start, end, name, emotion in entries:
                lines += [f"[{start:.4f} - {end:.4f}]\t{name}\t{emotion}\t[{_VAD[emotion]}]",
                          f"C-E1:\t{_CATEGORICAL[emotion]};\t()", f"C-E2:\t{_CATEGORICAL[emotion]};\t()",
                          f"A-E1:\tval 3; act 3; dom  3;\t()", ""]
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text("\n".join(lines) + "\n")
        summary = OrderedDict(
            corpus="er", seed=seed, root=str(out_dir / IEMOCAP_DIR), counts=counts,
            totals={s: sum(c.values()) for s, c in counts.items()},
            prosody={e: dict(rate=r, pitch=p, range=g) for e, (r, p, g) in ER_PROSODY.items()},
            params=dict(per_emotion=per_emotion, sessions=sessions),
        )
        write_info(tmp / "speechprompt_synth_er.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


# --- SID: VoxCeleb1 ---

VOX_DIR = "VoxCeleb1"
_VIDEO_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"


def _distinct_speakers(rng, n):
    """``n`` speakers spread over voice variants x pitch levels (a random draw puts many near each other)."""
    from .render import ACCENTS, PITCHES, RATES_WPM, VARIANTS

    cells = [(v, p) for p in PITCHES for v in VARIANTS]
    if n > len(cells):
        return draw_speakers(rng, n)
    picks = rng.permutation(len(cells))[:n]
    return [dict(voice=ACCENTS[int(rng.integers(len(ACCENTS)))] + cells[i][0], pitch=cells[i][1],
                 rate=RATES_WPM[int(rng.integers(len(RATES_WPM)))], range=int(rng.integers(30, 80))) for i in picks]


# per-speaker vocal-tract length (spectral warp: formants and pitch scaled together) and voice quality
# (spectral tilt: > 0 brighter / pressed, < 0 darker / breathy), applied after espeak-ng
SID_WARPS = (0.80, 0.87, 0.94, 1.0, 1.07, 1.15, 1.24)
SID_TILTS = (-0.9, -0.5, 0.0, 0.5, 0.9)


def _timbres(rng, n):
    """``n`` (warp, tilt) pairs spread over the grid (all cells used before any repeats)."""
    cells = [(w, t) for w in SID_WARPS for t in SID_TILTS]
    order = np.concatenate([rng.permutation(len(cells)) for _ in range(-(-n // len(cells)))])[:n]
    return [cells[int(i)] for i in order]


def apply_timbre(wav, warp=1.0, tilt=0.0):
    """A speaker's vocal tract on a 16 kHz waveform: every frequency scaled by ``warp`` (resampling, so the
    duration scales by 1/warp) and a first-order spectral tilt (``tilt`` in [-1, 1]); peak level kept."""
    from fractions import Fraction

    from scipy.signal import lfilter, resample_poly

    x = np.asarray(wav, dtype=np.float64)
    peak = np.abs(x).max()
    if warp != 1.0:
        ratio = Fraction(1.0 / float(warp)).limit_denominator(50)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    a = 0.9 * abs(float(tilt))
    if tilt > 0:
        x = lfilter([1.0, -a], [1.0], x)           # pre-emphasis: +6 dB/octave at a -> 1
    elif tilt < 0:
        x = lfilter([1.0 - a], [1.0, -a], x)       # one-pole low-pass: -6 dB/octave
    return x / (np.abs(x).max() + 1e-12) * peak


def make_sid(out_dir, seed=0, speakers=30, per_speaker=(8, 2, 2), test_fraction=0.1, force=False, progress=True,
             workers=None, timbre=True):
    """Write a synthetic VoxCeleb1 (identification split) under ``out_dir/VoxCeleb1``.

    Speakers ``id10001..`` (the last ``test_fraction`` under ``test/wav``, the others under ``dev/wav``, as the download
    splits them), each with ``per_speaker = (train, dev, test)`` utterances from separate videos, listed in
    ``iden_split.txt``. With ``timbre`` every speaker also gets a (warp, tilt) cell of :data:`SID_WARPS` x
    :data:`SID_TILTS` (:func:`apply_timbre`): espeak-ng's voices alone differ little once quantized to a few units.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    n_train, n_dev, n_test = (int(n) for n in per_speaker)
    if speakers < 2 or min(n_train, n_dev, n_test) < 1:
        raise ConfigError("need >= 2 speakers and >= 1 utterance per speaker in every split")
    rng = np.random.default_rng([seed, 0x534944])  # "SID"
    voices = _distinct_speakers(rng, speakers)
    if timbre:
        for voice, (warp, tilt) in zip(voices, _timbres(rng, speakers)):
            voice.update(warp=warp, tilt=tilt)
    n_test_spk = int(round(test_fraction * speakers))
    lines, jobs = [], []
    for k, voice in enumerate(voices):
        spk_id = f"id{10001 + k}"
        folder = "test" if k >= speakers - n_test_spk else "dev"
        for code, n in ((1, n_train), (2, n_dev), (3, n_test)):
            videos = [random_string(rng, 11, _VIDEO_ALPHABET) for _ in range(max(1, n // 4))]
            for j in range(n):
                video = videos[j % len(videos)]
                uid = f"{spk_id}/{video}/{j // len(videos) + 1:05d}.wav"
                lines.append(f"{code} {uid}")
                text = " ".join(SENTENCES[int(i)] for i in rng.choice(len(SENTENCES), size=1))
                jobs.append(dict(path=Path(VOX_DIR, folder, "wav", uid), text=text, speaker=voice, length=None,
                                 seed=int(rng.integers(2 ** 63))))
    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth sid", workers, root=tmp)
        if timbre:
            import soundfile as sf

            from .render import write_wav
            for job in jobs:
                wav, _ = sf.read(str(job["path"]), dtype="float64")
                write_wav(job["path"], apply_timbre(wav, job["speaker"]["warp"], job["speaker"]["tilt"]))
        (tmp / VOX_DIR / "iden_split.txt").write_text("\n".join(lines) + "\n")
        summary = OrderedDict(
            corpus="sid", seed=seed, root=str(out_dir / VOX_DIR),
            counts=dict(speakers=speakers, test_folder_speakers=n_test_spk),
            totals=dict(train=speakers * n_train, dev=speakers * n_dev, test=speakers * n_test),
            params=dict(speakers=speakers, per_speaker=[n_train, n_dev, n_test], test_fraction=test_fraction,
                        timbre=timbre),
            voices=[dict(v) for v in voices],
        )
        write_info(tmp / "speechprompt_synth_sid.json", summary, out_dir)
    summary["meta_data"] = str(out_dir / VOX_DIR / "iden_split.txt")
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


# --- CSV: generic classification ---

CSV_COLOURS = ["red", "green", "blue", "yellow", "white", "black"]
CSV_SHAPES = ["circle", "square", "triangle", "star", "heart", "arrow"]
CSV_DIR = "csv_corpus"


def make_csv(out_dir, seed=0, colours=3, shapes=3, per_class=(12, 3, 3), speakers=(6, 2, 2), force=False,
             progress=True, workers=None):
    """Write a CSV classification corpus under ``out_dir/csv_corpus``: spoken "<colour> <shape>" phrases::

        csv_corpus/wavs/<speaker>/<n>.wav
        csv_corpus/all.csv                          path,label,split   (label "red+circle"; one file)
        csv_corpus/{train,dev,test}.csv             path,label_1,label_2   (colour, shape; one file per split)

    ``all.csv`` without a separator is ``colours * shapes``-way classification; with ``label_separator: "+"`` (or the
    per-split files) two-slot classification like IC. ``per_class`` / ``speakers``: (train, dev, test), disjoint
    speakers.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    if not (1 <= colours <= len(CSV_COLOURS) and 1 <= shapes <= len(CSV_SHAPES)):
        raise ConfigError(f"colours must be in 1..{len(CSV_COLOURS)} and shapes in 1..{len(CSV_SHAPES)}")
    n_per = dict(zip(("train", "dev", "test"), (int(n) for n in per_class)))
    n_spk = dict(zip(("train", "dev", "test"), (int(n) for n in speakers)))
    if min(n_per.values()) < 1 or min(n_spk.values()) < 1:
        raise ConfigError("every split needs at least one utterance per class and one speaker")
    rng = np.random.default_rng([seed, 0x435356])  # "CSV"
    voices = draw_speakers(rng, sum(n_spk.values()))
    classes = [(c, s) for c in CSV_COLOURS[:colours] for s in CSV_SHAPES[:shapes]]
    rows, jobs, k, n = [], [], 0, 0
    for split in ("train", "dev", "test"):
        pool = [dict(id=f"spk{k + i:02d}", **voices[k + i]) for i in range(n_spk[split])]
        k += n_spk[split]
        for colour, shape in classes:
            start = int(rng.integers(len(pool)))
            for j in range(n_per[split]):
                spk = pool[(start + j) % len(pool)]
                rel = f"wavs/{spk['id']}/{n:05d}.wav"
                n += 1
                text = f"{colour} {shape}" if j % 2 == 0 else f"a {colour} {shape}"
                rows.append(dict(path=rel, colour=colour, shape=shape, split=split))
                jobs.append(dict(path=Path(CSV_DIR, rel), text=text, speaker=spk, length=None,
                                 seed=int(rng.integers(2 ** 63))))
    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth csv", workers, root=tmp)
        root = tmp / CSV_DIR
        with open(root / "all.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"])
            for r in rows:
                w.writerow([r["path"], f"{r['colour']}+{r['shape']}", r["split"]])
        for split in ("train", "dev", "test"):
            with open(root / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "label_1", "label_2"])
                for r in rows:
                    if r["split"] == split:
                        w.writerow([r["path"], r["colour"], r["shape"]])
        summary = OrderedDict(
            corpus="csv", seed=seed, root=str(out_dir / CSV_DIR),
            classes=[f"{c}+{s}" for c, s in classes],
            totals={s: n_per[s] * len(classes) for s in n_per},
            params=dict(colours=colours, shapes=shapes, per_class=list(n_per.values()),
                        speakers=list(n_spk.values())),
        )
        write_info(tmp / "speechprompt_synth_csv.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary
