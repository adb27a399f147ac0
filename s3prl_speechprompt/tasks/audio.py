"""Reading an utterance's audio, and checking a whole split's audio before a run starts (README "Failure modes").

Unreadable files (missing, not audio, corrupt header), truncated data and zero samples are found by
:func:`audit_split` when the split is first read, before any training step: ``bad_audio: error`` (default) stops
naming every bad file, ``bad_audio: skip`` drops them, logs the count and lists them in
``<expdir>/skipped_<split>.tsv`` (a run never shrinks silently). Multi-channel audio is averaged to mono, other
rates resampled to 16 kHz (counted in the log), clips shorter than :data:`MIN_SAMPLES` (25 ms, one frame of every
SUPERB upstream) zero-padded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from s3prl_speechprompt.errors import ConfigError, InputFileError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SAMPLES = 400               # 25 ms: the receptive field of one frame of fbank / wav2vec 2.0 / HuBERT
BAD_AUDIO_POLICIES = ("error", "skip")


def read_item_audio(item) -> np.ndarray:
    """16 kHz mono float32 samples of ``item`` (soundfile; stereo averaged, other rates resampled,
    clips shorter than 25 ms zero-padded)."""
    import soundfile as sf

    try:
        with sf.SoundFile(item.wav_path) as f:
            sr = f.samplerate
            f.seek(item.offset)
            wav = f.read(item.num_samples if item.num_samples is not None else -1, dtype="float32", always_2d=True)
    except Exception as e:
        raise InputFileError(f"{item.wav_path}: cannot read audio ({type(e).__name__}: {e}); remove or re-create "
                             f"the file, or set downstream_expert.bad_audio: skip") from e
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != SAMPLE_RATE and wav.size:
        import torch
        import torchaudio.functional as AF
        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), sr, SAMPLE_RATE).numpy()
    if wav.size == 0:
        raise InputFileError(f"{item.wav_path}: empty audio (0 samples at offset {item.offset}); remove the file "
                             f"or set downstream_expert.bad_audio: skip")
    if wav.size < MIN_SAMPLES:
        wav = np.pad(wav, (0, MIN_SAMPLES - wav.size))
    return np.ascontiguousarray(wav, dtype=np.float32)


@dataclass
class AudioAudit:
    """What :func:`audit_split` found in one split."""

    split: str
    total: int = 0
    bad: List[Tuple[str, str, str]] = field(default_factory=list)      # (item id, file, reason)
    counts: Dict[str, int] = field(default_factory=dict)               # stereo / resampled / padded

    def summary(self) -> str:
        notes = [f"{n} {k}" for k, n in sorted(self.counts.items()) if n]
        bad = f"{len(self.bad)} unusable" if self.bad else "all readable"
        return f"audio of split {self.split!r}: {self.total} utterances, {bad}" + (f"; {', '.join(notes)}" if notes else "")


def _check(item) -> Tuple[Optional[str], List[str]]:
    """(reason the item is unusable or None, notes) from the header and the last frame only: cheap,
    yet it catches missing/non-audio files, zero-length clips and truncated FLAC/OGG data."""
    import soundfile as sf

    if not Path(item.wav_path).is_file():
        return "file not found", []
    try:
        with sf.SoundFile(item.wav_path) as f:
            frames, sr, channels = f.frames, f.samplerate, f.channels
            wanted = frames - item.offset if item.num_samples is None else min(item.num_samples, frames - item.offset)
            if wanted <= 0:
                return f"no audio ({frames} frames, offset {item.offset})", []
            try:
                f.seek(item.offset + wanted - 1)
                complete = len(f.read(1)) == 1
            except Exception:
                complete = False
            if not complete:
                return f"truncated (the header promises {frames} frames; the last cannot be read)", []
    except Exception as e:
        return f"unreadable ({type(e).__name__}: {e})".replace("\n", " "), []
    notes = []
    if channels > 1:
        notes.append("multi-channel, averaged to mono")
    if sr != SAMPLE_RATE:
        notes.append(f"resampled to {SAMPLE_RATE} Hz")
    if wanted * SAMPLE_RATE / sr < MIN_SAMPLES:
        notes.append(f"shorter than {MIN_SAMPLES} samples, zero-padded")
    return None, notes


def audit_split(items: Sequence, split: str, policy: str = "error", report_dir: Optional[Path] = None,
                progress: bool = True) -> Tuple[List, AudioAudit]:
    """Check every item's audio once; returns (usable items, audit). See the module docstring."""
    from tqdm import tqdm

    if policy not in BAD_AUDIO_POLICIES:
        raise ConfigError(f"downstream_expert.bad_audio must be one of {BAD_AUDIO_POLICIES}, got {policy!r}")
    audit, kept = AudioAudit(split, total=len(items)), []
    for it in tqdm(items, desc=f"checking audio ({split})", unit="utt", disable=not progress or len(items) < 1000):
        reason, notes = _check(it)
        for note in notes:
            audit.counts[note] = audit.counts.get(note, 0) + 1
        if reason is None:
            kept.append(it)
        else:
            audit.bad.append((it.id, str(it.wav_path), reason))
    log.info(audit.summary())
    if audit.counts and progress:
        print(f"[speechprompt] {audit.summary()}")
    if audit.bad:
        listing = "\n".join(f"  {path}: {reason}" for _, path, reason in audit.bad[:20])
        more = f"\n  ... and {len(audit.bad) - 20} more" if len(audit.bad) > 20 else ""
        if policy == "error":
            raise InputFileError(f"{len(audit.bad)} of {len(items)} utterances of split {split!r} have unusable "
                                 f"audio:\n{listing}{more}\nfix or remove these files, or set "
                                 f"downstream_expert.bad_audio: skip to train/evaluate without them (they are then "
                                 f"counted and listed)")
        if report_dir is not None:
            from s3prl_speechprompt.atomic import atomic_write_text
            path = Path(report_dir) / f"skipped_{split}.tsv"
            atomic_write_text(path, "id\tfile\treason\n" + "".join(f"{i}\t{p}\t{r}\n" for i, p, r in audit.bad))
            where = f"; listed in {path}"
        else:
            where = ""
        log.warning("skipping %d of %d utterances of split %r with unusable audio%s:\n%s%s", len(audit.bad),
                    len(items), split, where, listing, more)
        print(f"[speechprompt] split {split}: skipped {len(audit.bad)} of {len(items)} utterances with unusable "
              f"audio{where}")
    if not kept:
        raise InputFileError(f"split {split!r} has no usable utterance ({len(items)} listed, {len(audit.bad)} "
                             f"unusable)")
    return kept, audit


def read_audio_file(path) -> np.ndarray:
    """16 kHz mono float32 samples of a whole file given on the command line (s3prl's ``-m inference -t``,
    ``speechprompt predict``): the same checks as :func:`audit_split`, then :func:`read_item_audio`.
    An unusable file raises ``ValueError('<path>: <reason>')``."""
    reason = audio_file_problem(path)
    if reason is not None:
        raise InputFileError(f"{path}: {reason}")
    return read_item_audio(_whole_file(path))


def audio_file_problem(path) -> Optional[str]:
    """Why a whole audio file is unusable (``file not found``, ``unreadable (...)``, ``truncated ...``,
    ``no audio ...``), or None; cheap (header and last frame), as :func:`audit_split` checks corpora."""
    reason, notes = _check(_whole_file(path))
    for note in notes:
        log.info("%s: %s", path, note)
    return reason


def _whole_file(path):
    from types import SimpleNamespace
    return SimpleNamespace(id=Path(path).stem, wav_path=str(path), labels=(), offset=0, num_samples=None)
