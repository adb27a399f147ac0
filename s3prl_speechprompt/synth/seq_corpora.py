"""Small synthetic corpora laid out like SUPERB's sequence tasks: LibriSpeech (ASR) and Audio SNIPS (SF).

``make_asr`` writes LibriSpeech (flac + per-chapter ``.trans.txt`` + ``SPEAKERS.TXT``) as
``s3prl.dataio.corpus.LibriSpeech`` reads it, sentences drawn from a small built-in vocabulary; ``make_sf`` writes
the preprocessed Audio SNIPS (wavs, ``all.iob.snips.txt``, ``slots.txt``) as ``SNIPS`` reads it, from templates with
slot values and SUPERB's speaker names (Polly voices there, espeak-ng here). Same seed -> same files (:mod:`.corpora`).
"""
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from s3prl_speechprompt.errors import ConfigError

from .render import check_out_dir, draw_speakers, render_all, staging, write_info

# --- ASR: LibriSpeech ---

# short, phonetically distinct words first: ``vocabulary=N`` takes the first N (the apostrophe is in the first 12)
ASR_WORDS = [
    "YES", "NO", "RED", "BLUE", "CAT", "DOG", "SUN", "MOON", "DON'T", "GO", "STOP", "TREE",
    "FISH", "BIRD", "HOUSE", "WATER", "GREEN", "SMALL", "BIG", "RUN", "JUMP", "SING", "BOOK", "DOOR",
    "IT'S", "KING", "QUEEN", "WINTER", "SUMMER", "MORNING", "EVENING", "RIVER", "MOUNTAIN", "YELLOW",
    "QUICKLY", "SLOWLY", "HAPPY", "ZEBRA", "JACKET", "VILLAGE",
]
LIBRI_DIR = "LibriSpeech"
ASR_SPLITS = ("train-clean-100", "dev-clean", "test-clean")


def _speakers_txt(rows):
    """SPEAKERS.TXT in LibriSpeech's layout (comment lines, the column header, then ``ID | SEX | SUBSET | MIN | NAME``)."""
    lines = ["; Synthetic speakers (espeak-ng voices) in the layout of LibriSpeech's SPEAKERS.TXT",
             ";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for spk_id, sex, subset, minutes, name in rows:
        lines.append(f"{spk_id:<5}| {sex} | {subset:<17}| {minutes:5.2f} | {name}")
    return "\n".join(lines) + "\n"


def make_asr(out_dir, seed=0, utterances=(120, 30, 30), vocabulary=None, words=(1, 6), speakers=(6, 2, 2),
             chapters_per_speaker=2, force=False, progress=True, workers=None):
    """Write a synthetic LibriSpeech under ``out_dir/LibriSpeech``: ``utterances`` per (train-clean-100, dev-clean,
    test-clean), sentences of ``words`` = (min, max) words from the first ``vocabulary`` of :data:`ASR_WORDS`,
    ``speakers`` per split (disjoint) with ``chapters_per_speaker`` chapters each. Returns a summary with the root
    (``libri_root``), counts and the longest transcript per split.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    vocab = ASR_WORDS[:vocabulary] if vocabulary else list(ASR_WORDS)
    if len(vocab) < 2:
        raise ConfigError("vocabulary must be >= 2 words")
    lo, hi = (int(w) for w in words)
    if not 1 <= lo <= hi:
        raise ConfigError(f"words must be (min, max) with 1 <= min <= max, got {words}")
    n_utt = dict(zip(ASR_SPLITS, (int(n) for n in utterances)))
    n_spk = dict(zip(ASR_SPLITS, (int(n) for n in speakers)))
    if min(n_utt.values()) < 1 or min(n_spk.values()) < 1:
        raise ConfigError("every split needs at least one utterance and one speaker")

    rng = np.random.default_rng([seed, 0x415352])  # "ASR"
    voices = draw_speakers(rng, sum(n_spk.values()))
    ids = sorted(int(i) for i in rng.choice(np.arange(19, 9000), size=len(voices), replace=False))
    ids = [ids[i] for i in rng.permutation(len(ids))]
    jobs, speakers_rows, trans, longest = [], [], {}, {}
    k = 0
    for split in ASR_SPLITS:
        pool = []
        for _ in range(n_spk[split]):
            chapters = sorted(int(c) for c in rng.choice(np.arange(100, 99999), size=chapters_per_speaker,
                                                         replace=False))
            pool.append(dict(id=ids[k], chapters=chapters, **voices[k]))
            sex = "F" if "+f" in voices[k]["voice"] else "M"
            speakers_rows.append((ids[k], sex, split, 0.0, f"synthetic {voices[k]['voice']}"))
            k += 1
        counters = {}
        longest[split] = 0
        for j in range(n_utt[split]):
            spk = pool[j % len(pool)]
            chap = spk["chapters"][(j // len(pool)) % len(spk["chapters"])]
            n = counters.get((spk["id"], chap), 0)
            counters[(spk["id"], chap)] = n + 1
            text = " ".join(vocab[i] for i in rng.integers(0, len(vocab), size=int(rng.integers(lo, hi + 1))))
            longest[split] = max(longest[split], len(text))
            uid = f"{spk['id']}-{chap}-{n:04d}"
            rel = Path(LIBRI_DIR, split, str(spk["id"]), str(chap))
            trans.setdefault(rel / f"{spk['id']}-{chap}.trans.txt", []).append(f"{uid} {text}")
            jobs.append(dict(path=rel / f"{uid}.flac", text=text.lower(), speaker=spk, length=None,
                             seed=int(rng.integers(2 ** 63))))

    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth asr", workers, root=tmp)
        for rel, lines in trans.items():
            (tmp / rel).write_text("\n".join(lines) + "\n")
        (tmp / LIBRI_DIR / "SPEAKERS.TXT").write_text(_speakers_txt(speakers_rows))
        summary = OrderedDict(
            corpus="asr", seed=seed, root=str(out_dir / LIBRI_DIR),
            counts={s: dict(utterances=n_utt[s], speakers=n_spk[s], longest_transcript=longest[s])
                    for s in ASR_SPLITS},
            totals=dict(n_utt), vocabulary=vocab,
            params=dict(utterances=list(utterances), words=[lo, hi], speakers=list(speakers),
                        chapters_per_speaker=chapters_per_speaker),
        )
        write_info(tmp / "speechprompt_synth_asr.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


# --- SF: Audio SNIPS ---

# SUPERB's speaker split of Audio SNIPS (Amazon Polly voice names)
SNIPS_SPEAKERS = {
    "train": ["Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"],
    "valid": ["Aditi", "Amy", "Geraint", "Nicole"],
    "test": ["Brian", "Emma", "Raveena", "Russell"],
}
SNIPS_DIR = "SNIPS"

# slot values (upper case, as in the preprocessed all.iob.snips.txt); slot names are real SNIPS slot types
SF_SLOT_VALUES = {
    "artist": ["ADELE", "ELTON JOHN", "BOB MARLEY", "MADONNA", "NINA SIMONE"],
    "playlist": ["CHILL", "ROAD TRIP", "WORKOUT", "JAZZ CLASSICS"],
    "music_item": ["SONG", "ALBUM", "TRACK"],
    "city": ["PARIS", "BOSTON", "TOKYO", "NEW YORK", "LIMA"],
    "timeRange": ["TOMORROW", "TONIGHT", "THIS WEEKEND", "NEXT MONDAY"],
    "party_size_number": ["TWO", "FOUR", "SIX"],
    "restaurant_type": ["BAR", "DINER", "STEAKHOUSE"],
    "rating_value": ["ONE", "THREE", "FIVE"],
    "object_name": ["THE HOBBIT", "DUNE", "EMMA"],
}
# (intent, template); {slot} is filled with a value of that slot type
SF_TEMPLATES = [
    ("PlayMusic", "PLAY {artist}"),
    ("PlayMusic", "PLAY A {music_item} BY {artist}"),
    ("AddToPlaylist", "ADD {artist} TO MY {playlist} PLAYLIST"),
    ("AddToPlaylist", "PUT THIS {music_item} ON {playlist}"),
    ("GetWeather", "WHAT IS THE WEATHER IN {city}"),
    ("GetWeather", "WILL IT RAIN IN {city} {timeRange}"),
    ("BookRestaurant", "BOOK A {restaurant_type} FOR {party_size_number} IN {city}"),
    ("BookRestaurant", "RESERVE A TABLE FOR {party_size_number} {timeRange}"),
    ("RateBook", "RATE {object_name} {rating_value} STARS"),
    ("RateBook", "GIVE {object_name} {rating_value} POINTS"),
]


def _fill(template, rng, slot_values):
    """-> (words, iob tags): slot words tagged with the slot type, others ``O`` (SNIPS's IOB columns have no B-/I-)."""
    words, tags = [], []
    for part in template.split(" "):
        if part.startswith("{"):
            slot = part[1:-1]
            values = slot_values[slot]
            value = values[int(rng.integers(len(values)))].split(" ")
            words += value
            tags += [slot] * len(value)
        else:
            words.append(part)
            tags.append("O")
    return words, tags


def make_sf(out_dir, seed=0, texts=(40, 8, 8), speakers=(2, 1, 1), templates=None, force=False,
            progress=True, workers=None):
    """Write a synthetic preprocessed Audio SNIPS under ``out_dir/SNIPS``.

    ``texts`` distinct (train, valid, test) texts from the first ``templates`` of :data:`SF_TEMPLATES` (default all
    10: 5 intents, 9 slot types), each spoken by every speaker of its split (as in Audio SNIPS); speakers carry
    SUPERB's names, the first ``speakers[i]`` of :data:`SNIPS_SPEAKERS` (at most 8 / 4 / 4). Returns a summary.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    n_txt = dict(zip(("train", "valid", "test"), (int(n) for n in texts)))
    n_spk = dict(zip(("train", "valid", "test"), (int(n) for n in speakers)))
    for split, n in n_spk.items():
        if not 1 <= n <= len(SNIPS_SPEAKERS[split]):
            raise ConfigError(f"{split}: 1..{len(SNIPS_SPEAKERS[split])} speakers, got {n}")
    if min(n_txt.values()) < 1:
        raise ConfigError("every split needs at least one text")
    use = SF_TEMPLATES[:templates] if templates else list(SF_TEMPLATES)
    slot_types = sorted({p[1:-1] for _, t in use for p in t.split(" ") if p.startswith("{")})

    rng = np.random.default_rng([seed, 0x5346])  # "SF"
    voices = draw_speakers(rng, sum(n_spk.values()))
    jobs, lines, k = [], [], 0
    for split in ("train", "valid", "test"):
        names = SNIPS_SPEAKERS[split][:n_spk[split]]
        pool = [dict(id=name, **voices[k + i]) for i, name in enumerate(names)]
        k += len(names)
        for i in range(n_txt[split]):
            intent, template = use[int(rng.integers(len(use)))]
            words, tags = _fill(template, rng, SF_SLOT_VALUES)
            for spk in pool:
                uid = f"{spk['id']}-snips-{split}-{i}"
                lines.append(f"{uid} BOS {' '.join(words)} EOS\tO {' '.join(tags)} {intent}")
                jobs.append(dict(path=Path(SNIPS_DIR, split, f"{uid}.wav"), text=" ".join(words).lower(),
                                 speaker=spk, length=None, seed=int(rng.integers(2 ** 63))))

    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth sf", workers, root=tmp)
        (tmp / SNIPS_DIR / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
        # the first line is skipped by SUPERB's CharacterTextSlotEncoder.load_from_file; no trailing newline
        # (its reader splits on "\n" and would make an empty slot of it)
        (tmp / SNIPS_DIR / "slots.txt").write_text("\n".join(["O"] + slot_types))
        summary = OrderedDict(
            corpus="sf", seed=seed, root=str(out_dir / SNIPS_DIR),
            counts={s: dict(texts=n_txt[s], speakers=n_spk[s], utterances=n_txt[s] * n_spk[s]) for s in n_txt},
            totals={s: n_txt[s] * n_spk[s] for s in n_txt},
            speakers={s: SNIPS_SPEAKERS[s][:n_spk[s]] for s in n_spk}, slot_types=slot_types,
            params=dict(texts=list(texts), speakers=list(speakers), templates=len(use)),
        )
        write_info(tmp / "speechprompt_synth_sf.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary
