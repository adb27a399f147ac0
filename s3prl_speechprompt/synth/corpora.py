"""Small synthetic corpora laid out exactly like the SUPERB KS and IC datasets: ``make_ks`` writes Speech Commands
v0.01 (training directory + the separate test set), ``make_ic`` Fluent Speech Commands (wavs + three CSVs). Speech
comes from espeak-ng (:mod:`s3prl_speechprompt.synth.tts`); a "speaker" is a voice, rate and pitch; the same
seed gives byte-identical corpora.

Every ``make_*`` (here and in :mod:`.cls_corpora`, :mod:`.seq_corpora`) builds the corpus in a hidden sibling
directory and moves it into ``out_dir`` only when complete (an interrupted run leaves no half-written corpus);
``force`` replaces the corpus directories of a non-empty ``out_dir``, ``progress`` shows a tqdm bar, ``workers``
is the number of processes (default: CPU count, at most 4; the output does not depend on it).
"""
import hashlib
import time
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from s3prl_speechprompt.errors import ConfigError

from .render import (NOISE_KINDS, check_out_dir, draw_speakers, make_noise, random_string, render_all, staging,
                     write_info, write_wav)
from .tts import SAMPLE_RATE

# --- KS: Speech Commands v0.01 ---

KS_COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
KS_CLASSES = KS_COMMANDS + ["_unknown_", "_silence_"]
KS_UNKNOWN_WORDS = ["bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"]
KS_TRAIN_DIR = "speech_commands_v0.01"
KS_TEST_DIR = "speech_commands_test_set_v0.01"
_HEX = "0123456789abcdef"
_MAX_PER_CLASS = 2 ** 27 - 1


def ks_split_of(filename):
    """The Speech Commands hash split of a file name (or bare speaker id): ``"dev"``, ``"test"`` or ``"train"``.

    This is the rule from the dataset's README that SUPERB applies (``percentage < 10`` -> validation,
    ``< 20`` -> testing, which SUPERB discards in favour of the separate test set, else training).
    """
    speaker = filename.split("_nohash_")[0]
    h = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    pct = (h % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    return "dev" if pct < 10 else "test" if pct < 20 else "train"


def _ks_speaker_ids(rng, counts):
    """Random 8-hex speaker ids whose hash bucket is the wanted split; ``counts = {split: n}``."""
    ids = {s: [] for s in counts}
    seen = set()
    while any(len(ids[s]) < n for s, n in counts.items()):
        cand = random_string(rng, 8, _HEX)
        if cand in seen:
            continue
        seen.add(cand)
        split = ks_split_of(cand)
        if len(ids[split]) < counts[split]:
            ids[split].append(cand)
    return ids


def make_ks(out_dir, seed=0, per_class=40, dev_per_class=None, test_per_class=None, unknown_fraction=0.2,
            unknown_words=None, noise_seconds=15.0, force=False, progress=True, workers=None):
    """Write a synthetic Speech Commands v0.01 corpus under ``out_dir`` (as ``SpeechCommandsV1`` reads it)::

        out_dir/speech_commands_v0.01/<word>/<speaker>_nohash_<n>.wav      (train + dev, split by speaker hash)
        out_dir/speech_commands_v0.01/_background_noise_/<kind>.wav        (long noise files -> _silence_)
        out_dir/speech_commands_test_set_v0.01/<class>/<...>.wav           (12 classes incl. _unknown_/_silence_)

    ``per_class`` training utterances per command word; ``dev_per_class`` / ``test_per_class`` (default
    ``max(1, per_class // 4)``); each of ``unknown_words`` (default 10 of the real dataset's) gets
    ``unknown_fraction`` of a command word's count (at least 1), and the test ``_unknown_`` class draws from them.
    Returns a summary with the roots and the per-split, per-class counts as SUPERB sees them.
    """
    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    if per_class < 1:
        raise ConfigError("per_class must be >= 1")
    dev_n = max(1, per_class // 4) if dev_per_class is None else int(dev_per_class)
    test_n = max(1, per_class // 4) if test_per_class is None else int(test_per_class)
    if dev_n < 1 or test_n < 1:
        raise ConfigError("dev_per_class and test_per_class must be >= 1")
    unknown_words = list(KS_UNKNOWN_WORDS if unknown_words is None else unknown_words)
    if not unknown_words or set(unknown_words) & set(KS_CLASSES):
        raise ConfigError("unknown_words must be non-empty and must not contain the 12 SUPERB classes")

    def n_for(word, n):
        return n if word in KS_COMMANDS else max(1, round(n * unknown_fraction))

    rng = np.random.default_rng([seed, 0x4B53])  # "KS"
    wanted = {"train": per_class, "dev": dev_n, "test": test_n}
    n_spk = {"train": min(per_class, 30), "dev": min(dev_n, 8), "test": min(test_n, 8)}
    ids = _ks_speaker_ids(rng, n_spk)
    voices = draw_speakers(rng, sum(n_spk.values()))
    speakers = {}
    for split in ("train", "dev", "test"):
        speakers[split] = [dict(id=i, **voices.pop()) for i in ids[split]]

    jobs = []

    def add(path, text, speaker, length=16000):
        jobs.append(dict(path=path, text=text, speaker=speaker, length=length, seed=int(rng.integers(2 ** 63))))

    def utterances(split, word, n):
        """``n`` (speaker, repetition) pairs from the split's pool, starting at a random speaker."""
        pool = speakers[split]
        start = int(rng.integers(len(pool)))
        reps = Counter()
        for k in range(n):
            spk = pool[(start + k) % len(pool)]
            yield spk, reps[spk["id"]]
            reps[spk["id"]] += 1

    # training directory: train + dev speakers (the hash of the speaker id decides the split)
    for word in KS_COMMANDS + unknown_words:
        for split in ("train", "dev"):
            for spk, rep in utterances(split, word, n_for(word, wanted[split])):
                add(Path(KS_TRAIN_DIR, word, f"{spk['id']}_nohash_{rep}.wav"), word, spk)

    # separate test set: 12 class folders, test speakers only
    for word in KS_COMMANDS:
        for spk, rep in utterances("test", word, test_n):
            add(Path(KS_TEST_DIR, word, f"{spk['id']}_nohash_{rep}.wav"), word, spk)
    order = [unknown_words[i] for i in rng.permutation(len(unknown_words))]
    per_word = Counter(order[k % len(order)] for k in range(test_n))
    for word in order:
        for spk, rep in utterances("test", word, per_word[word]):
            add(Path(KS_TEST_DIR, "_unknown_", f"{word}_{spk['id']}_nohash_{rep}.wav"), word, spk)
    for k in range(test_n):
        add(Path(KS_TEST_DIR, "_silence_", f"silence_{k:04d}.wav"), None, None)

    noise_seeds = [int(rng.integers(2 ** 63)) for _ in NOISE_KINDS]
    with staging(out_dir) as tmp:
        bg = tmp / KS_TRAIN_DIR / "_background_noise_"
        for kind, s in zip(NOISE_KINDS, noise_seeds):
            r = np.random.default_rng(s)
            write_wav(bg / f"{kind}.wav", make_noise(kind, int(noise_seconds * SAMPLE_RATE), r) * r.uniform(0.05, 0.2))
        render_all(jobs, progress, "synth ks", workers, root=tmp)
        counts = _ks_counts(tmp, unknown_words)
        summary = OrderedDict(
            corpus="ks", seed=seed, root=str(out_dir / KS_TRAIN_DIR), test_root=str(out_dir / KS_TEST_DIR),
            counts=counts, totals={s: sum(c.values()) for s, c in counts.items()},
            speakers={s: len(v) for s, v in speakers.items()}, background_noise=list(NOISE_KINDS),
            params=dict(per_class=per_class, dev_per_class=dev_n, test_per_class=test_n,
                        unknown_fraction=unknown_fraction, unknown_words=unknown_words, noise_seconds=noise_seconds),
        )
        write_info(tmp / "speechprompt_synth_ks.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def _ks_counts(root, unknown_words):
    """Per-class counts of what SUPERB's reader will see (train/dev via the hash split)."""
    counts = {s: OrderedDict((c, 0) for c in KS_CLASSES) for s in ("train", "dev", "test")}
    train_dir = Path(root, KS_TRAIN_DIR)
    for wav in train_dir.glob("*/*.wav"):
        word = wav.parent.name
        if word == "_background_noise_":
            continue
        split = ks_split_of(wav.name)
        if split != "test":
            counts[split][word if word in KS_CLASSES else "_unknown_"] += 1
    n_bg = len(list((train_dir / "_background_noise_").glob("*.wav")))
    counts["train"]["_silence_"] = counts["dev"]["_silence_"] = n_bg  # SUPERB adds every noise file to both
    for wav in Path(root, KS_TEST_DIR).glob("*/*.wav"):
        counts["test"][wav.parent.name] += 1
    return {s: dict(c) for s, c in counts.items()}


# --- IC: Fluent Speech Commands ---

_LIGHTS_ON_IN = ["Turn on the lights in the {room}", "Switch on the {room} lights", "{Room} lights on",
                 "Lights on in the {room}"]
_LIGHTS_OFF_IN = ["Turn off the lights in the {room}", "Switch off the {room} lights", "{Room} lights off",
                  "Lights off in the {room}"]
_HEAT_UP_IN = ["Turn up the heat in the {room}", "Increase the heating in the {room}", "{Room} heat up",
               "Make the {room} warmer"]
_HEAT_DOWN_IN = ["Turn down the heat in the {room}", "Decrease the heating in the {room}", "{Room} heat down",
                 "Make the {room} cooler"]


def _room(templates, room):
    return [t.format(room=room, Room=room.capitalize()) for t in templates]


# (action, object, location, phrasings) -- slot values are the real FSC ones. The order matters: the first 22
# intents already use every action (6), object (14) and location (4) value, like the full dataset.
FSC_INTENTS = [
    ("activate", "lights", "none", ["Turn on the lights", "Switch on the lights", "Lights on", "Turn the lights on"]),
    ("deactivate", "lights", "none", ["Turn off the lights", "Switch off the lights", "Lights off",
                                      "Turn the lights off"]),
    ("increase", "volume", "none", ["Increase the volume", "Turn the volume up", "Volume up", "Make it louder"]),
    ("decrease", "volume", "none", ["Decrease the volume", "Turn the volume down", "Volume down",
                                    "Make it quieter"]),
    ("increase", "heat", "none", ["Increase the heating", "Turn up the heat", "Heat up", "Make it warmer"]),
    ("decrease", "heat", "none", ["Decrease the heating", "Turn down the heat", "Heat down", "Make it cooler"]),
    ("activate", "music", "none", ["Play the music", "Start the music", "Put on some music", "Music on"]),
    ("deactivate", "music", "none", ["Stop the music", "Pause the music", "Turn the music off", "Music off"]),
    ("activate", "lamp", "none", ["Turn on the lamp", "Switch the lamp on", "Lamp on"]),
    ("deactivate", "lamp", "none", ["Turn off the lamp", "Switch the lamp off", "Lamp off"]),
    ("bring", "newspaper", "none", ["Bring me the newspaper", "Get me the newspaper", "Fetch the newspaper"]),
    ("bring", "juice", "none", ["Bring me some juice", "Get me some juice", "Fetch me a juice"]),
    ("bring", "socks", "none", ["Bring me my socks", "Get me my socks", "Fetch my socks"]),
    ("bring", "shoes", "none", ["Bring me my shoes", "Get me my shoes", "Fetch my shoes"]),
    ("change language", "none", "none", ["Change language", "Change the language", "Language settings"]),
    *[("change language", lang, "none", [f"Switch to {lang}", f"Change the language to {lang}",
                                          f"Set my language to {lang}"])
      for lang in ("Chinese", "Korean", "English", "German")],
    ("activate", "lights", "kitchen", _room(_LIGHTS_ON_IN, "kitchen")),
    ("deactivate", "lights", "bedroom", _room(_LIGHTS_OFF_IN, "bedroom")),
    ("increase", "heat", "washroom", _room(_HEAT_UP_IN, "washroom")),
    ("activate", "lights", "bedroom", _room(_LIGHTS_ON_IN, "bedroom")),
    ("activate", "lights", "washroom", _room(_LIGHTS_ON_IN, "washroom")),
    ("deactivate", "lights", "kitchen", _room(_LIGHTS_OFF_IN, "kitchen")),
    ("deactivate", "lights", "washroom", _room(_LIGHTS_OFF_IN, "washroom")),
    ("increase", "heat", "kitchen", _room(_HEAT_UP_IN, "kitchen")),
    ("increase", "heat", "bedroom", _room(_HEAT_UP_IN, "bedroom")),
    ("decrease", "heat", "kitchen", _room(_HEAT_DOWN_IN, "kitchen")),
    ("decrease", "heat", "bedroom", _room(_HEAT_DOWN_IN, "bedroom")),
    ("decrease", "heat", "washroom", _room(_HEAT_DOWN_IN, "washroom")),
]
IC_DIR = "fluent_speech_commands_dataset"
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CSV_NAMES = {"train": "train_data.csv", "valid": "valid_data.csv", "test": "test_data.csv"}


def _uuid_like(rng):
    h = random_string(rng, 32, _HEX)
    return f"{h[:8]}-{h[8:12]}-11e9-{h[16:20]}-{h[20:]}"


def make_ic(out_dir, seed=0, per_intent=10, eval_per_intent=None, num_intents=22, speakers=(12, 4, 4),
            force=False, progress=True, workers=None):
    """Write a synthetic Fluent Speech Commands corpus under ``out_dir``, as ``FluentSpeechCommands(root)`` reads::

        out_dir/fluent_speech_commands_dataset/wavs/speakers/<speakerId>/<uuid-like>.wav
        out_dir/fluent_speech_commands_dataset/data/{train,valid,test}_data.csv
            columns: (unnamed index), path, speakerId, transcription, action, object, location

    ``per_intent`` training and ``eval_per_intent`` (default ``max(1, round(0.3 * per_intent))``) valid/test
    utterances per intent, for the first ``num_intents`` of :data:`FSC_INTENTS` (22 cover every slot value);
    ``speakers``: disjoint (train, valid, test) speaker counts, as in FSC. Returns a summary with the per-split counts.
    """
    import pandas as pd

    t0 = time.time()
    out_dir = check_out_dir(out_dir, force)
    if not 1 <= num_intents <= len(FSC_INTENTS):
        raise ConfigError(f"num_intents must be in 1..{len(FSC_INTENTS)}")
    if per_intent < 1:
        raise ConfigError("per_intent must be >= 1")
    eval_n = max(1, round(0.3 * per_intent)) if eval_per_intent is None else int(eval_per_intent)
    if eval_n < 1:
        raise ConfigError("eval_per_intent must be >= 1")
    n_utt = {"train": per_intent, "valid": eval_n, "test": eval_n}
    n_spk = dict(zip(("train", "valid", "test"), (int(s) for s in speakers)))
    if min(n_spk.values()) < 1:
        raise ConfigError("every split needs at least one speaker")

    rng = np.random.default_rng([seed, 0x4943])  # "IC"
    voices = draw_speakers(rng, sum(n_spk.values()))
    spk_ids = set()
    while len(spk_ids) < len(voices):
        spk_ids.add(random_string(rng, 16, _ALNUM))
    spk_ids = sorted(spk_ids)
    spk_ids = [spk_ids[i] for i in rng.permutation(len(spk_ids))]
    pools, k = {}, 0
    for split in ("train", "valid", "test"):
        pools[split] = [dict(id=spk_ids[k + i], **voices[k + i]) for i in range(n_spk[split])]
        k += n_spk[split]

    intents = FSC_INTENTS[:num_intents]
    jobs, rows = [], {s: [] for s in n_utt}
    names = set()
    for split in ("train", "valid", "test"):
        pool = pools[split]
        for action, obj, loc, phrasings in intents:
            start_spk, start_phr = int(rng.integers(len(pool))), int(rng.integers(len(phrasings)))
            for j in range(n_utt[split]):
                spk = pool[(start_spk + j) % len(pool)]
                text = phrasings[(start_phr + j) % len(phrasings)]
                name = _uuid_like(rng)
                while name in names:
                    name = _uuid_like(rng)
                names.add(name)
                rel = f"wavs/speakers/{spk['id']}/{name}.wav"
                rows[split].append(dict(path=rel, speakerId=spk["id"], transcription=text,
                                        action=action, object=obj, location=loc))
                jobs.append(dict(path=Path(IC_DIR, rel), text=text, speaker=spk, length=None,
                                 seed=int(rng.integers(2 ** 63))))
    # the real CSVs are not grouped by intent
    for split in rows:
        rows[split] = [rows[split][i] for i in rng.permutation(len(rows[split]))]

    with staging(out_dir) as tmp:
        render_all(jobs, progress, "synth ic", workers, root=tmp)
        data_dir = tmp / IC_DIR / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        columns = ["path", "speakerId", "transcription", "action", "object", "location"]
        for split, fname in _CSV_NAMES.items():
            pd.DataFrame(rows[split], columns=columns).to_csv(data_dir / fname)
        counts = {s: dict(utterances=len(r), speakers=len({x["speakerId"] for x in r}),
                          intents=len({(x["action"], x["object"], x["location"]) for x in r}))
                  for s, r in rows.items()}
        summary = OrderedDict(
            corpus="ic", seed=seed, root=str(out_dir / IC_DIR), counts=counts,
            totals={s: c["utterances"] for s, c in counts.items()},
            slot_values={slot: sorted({i[k] for i in intents}) for k, slot in
                         enumerate(("action", "object", "location"))},
            params=dict(per_intent=per_intent, eval_per_intent=eval_n, num_intents=num_intents,
                        speakers=list(n_spk.values())),
        )
        write_info(tmp / "speechprompt_synth_ic.json", summary, out_dir)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary
