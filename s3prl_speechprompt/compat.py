"""Compatibility layer that lets s3prl 0.4.18 run on current torch / torchaudio.

Nothing here edits installed files: :func:`apply`, called by our entry points before they import s3prl, patches
at run time, and only what is missing (torchaudio < 2.9 with torch <= 2.5 is left exactly as it was). Patches that
change what s3prl's runner *does* live in :mod:`s3prl_speechprompt.s3prl_plugin.runner_patches`.

Patches made by :func:`apply` (all idempotent):

1. ``torchaudio.set_audio_backend`` / ``get_audio_backend`` / ``list_audio_backends`` (removed in
   torchaudio 2.9) -> no-ops: s3prl calls ``set_audio_backend`` at import time (``import s3prl.hub``),
   in ``run_downstream.py`` ``main()`` and in several upstream audio readers.
2. ``torchaudio.sox_effects`` (removed in 2.9) -> a stub module, so ``import s3prl.hub`` (mos_prediction's
   expert imports it) succeeds; calling a stub raises ``NotImplementedError`` naming the code paths to avoid.
3. ``torchaudio.load`` / ``save`` / ``info`` -> soundfile, when torchaudio's own I/O cannot work (>= 2.9
   decodes through ``torchcodec``); same contract (``load`` returns ``(float32 Tensor[C, T], sample_rate)``).
4. ``torch.serialization.add_safe_globals([argparse.Namespace])`` when torch has it: torch >= 2.6 loads
   with ``weights_only=True`` by default and s3prl's checkpoints store their ``Args`` as a Namespace, so
   s3prl's own ``torch.load`` of ``-e`` / ``-i`` checkpoints fails without it.
5. ``pandas.Series.iteritems`` (removed in pandas 2) -> ``Series.items``, for s3prl's corpus parsers.

:func:`read_audio` is the audio reader our own datasets use (soundfile, mono float32).
"""
import argparse
import dataclasses
import importlib
import os
import sys
import types
from typing import Optional, Tuple

import numpy as np

from s3prl_speechprompt.errors import MissingFileError

# attribute set on every function/module we install, so apply() can recognise its own work
_MARK = "_speechprompt_compat"

_SOX_HINT = (
    "torchaudio.sox_effects.{fn} is not available: torchaudio {version} removed sox_effects "
    "(s3prl-speechprompt only installs a stub so that `import s3prl.hub` works). Avoid s3prl code "
    "paths that apply sox effects: the SUPERB readers in s3prl/downstream/speech_commands/dataset.py, "
    "sv_voxceleb1/dataset.py, mos_prediction/dataset.py, quesst14_*/ and sws2013/, the "
    "mos_prediction upstream, and s3prl/dataio/dataset/load_audio.py with sox_effects=... "
    "Use the speechprompt_* downstreams (they read audio with soundfile) or install torchaudio<2.9."
)


def mark(obj):
    """Tag a function/module we install, so that a second apply() recognises it."""
    setattr(obj, _MARK, True)
    return obj


def is_marked(obj) -> bool:
    return getattr(obj, _MARK, False)


# --- audio I/O through soundfile ---

def _soundfile():
    try:
        import soundfile
    except ImportError as e:  # declared in setup.py; only a broken install gets here
        raise ImportError("s3prl-speechprompt reads audio with the `soundfile` package: pip install soundfile") from e
    return soundfile


def read_audio(path) -> Tuple[np.ndarray, int]:
    """Read an audio file with soundfile.

    Returns ``(wav, sample_rate)``: ``wav`` is a 1-D float32 array in [-1, 1]; multi-channel files are
    mixed down to mono by averaging the channels. Errors name the file.
    """
    sf = _soundfile()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from e
    wav = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def _sf_load(uri, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
             channels_first: bool = True, format: Optional[str] = None, buffer_size: int = 4096,
             backend: Optional[str] = None):
    """soundfile-backed stand-in for ``torchaudio.load``: returns (float32 Tensor[C, T], sample_rate).

    Like torchaudio >= 2.9 it always returns normalized float32 samples (``normalize``,
    ``buffer_size`` and ``backend`` are accepted for compatibility and ignored).
    """
    import torch

    sf = _soundfile()
    target = os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else uri
    kwargs = {}
    if format is not None:
        kwargs["format"] = format.upper()
    try:
        data, sr = sf.read(target, start=int(frame_offset), frames=int(num_frames), dtype="float32",
                           always_2d=True, **kwargs)  # (T, C)
    except Exception as e:
        raise RuntimeError(f"torchaudio.load (soundfile backend) cannot read {target!r}: {e}") from e
    wav = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return wav, int(sr)


# torchaudio (encoding, bits_per_sample) -> soundfile subtype
_SUBTYPES = {
    ("PCM_S", 8): "PCM_S8", ("PCM_S", 16): "PCM_16", ("PCM_S", 24): "PCM_24", ("PCM_S", 32): "PCM_32",
    ("PCM_U", 8): "PCM_U8", ("PCM_F", 32): "FLOAT", ("PCM_F", 64): "DOUBLE",
    ("ULAW", 8): "ULAW", ("ALAW", 8): "ALAW",
}


def _sf_save(uri, src, sample_rate: int, channels_first: bool = True, format: Optional[str] = None,
             encoding: Optional[str] = None, bits_per_sample: Optional[int] = None,
             buffer_size: int = 4096, backend: Optional[str] = None, compression=None):
    """soundfile-backed stand-in for ``torchaudio.save`` (``src``: Tensor[C, T], or [T, C] if not channels_first)."""
    import torch

    sf = _soundfile()
    target = os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else uri
    if not isinstance(src, torch.Tensor):
        src = torch.as_tensor(src)
    if src.dim() == 1:
        src = src.unsqueeze(0 if channels_first else 1)
    if src.dim() != 2:
        raise ValueError(f"torchaudio.save expects a 2-D tensor, got shape {tuple(src.shape)}")
    data = src.detach().cpu()
    data = (data.t() if channels_first else data).numpy()  # (T, C)

    fmt = format.upper() if format else None
    if fmt is None and isinstance(target, str):
        fmt = os.path.splitext(target)[1].lstrip(".").upper() or None
    subtype = None
    if encoding is not None or bits_per_sample is not None:
        enc = encoding or ("PCM_F" if data.dtype.kind == "f" and fmt == "WAV" else "PCM_S")
        bits = bits_per_sample or {"PCM_F": 32, "PCM_U": 8, "ULAW": 8, "ALAW": 8}.get(enc, 16)
        subtype = _SUBTYPES.get((enc, bits))
        if subtype is None:
            raise ValueError(f"torchaudio.save (soundfile backend): unsupported encoding={encoding!r}, "
                             f"bits_per_sample={bits_per_sample!r}; expected one of {sorted(_SUBTYPES)}")
    elif fmt == "WAV" and data.dtype.kind == "f":
        subtype = "FLOAT"  # torchaudio's historical default for float tensors in wav
    try:
        sf.write(target, data, int(sample_rate), subtype=subtype, format=fmt)
    except Exception as e:
        raise RuntimeError(f"torchaudio.save (soundfile backend) cannot write {target!r}: {e}") from e


@dataclasses.dataclass
class AudioMetaData:
    """What ``torchaudio.info`` used to return (the fields s3prl reads)."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


# soundfile subtype -> torchaudio (encoding, bits_per_sample)
_ENCODINGS = {v: k for k, v in _SUBTYPES.items()}


def _sf_info(uri, format: Optional[str] = None, buffer_size: int = 4096, backend: Optional[str] = None):
    """soundfile-backed stand-in for ``torchaudio.info``."""
    sf = _soundfile()
    target = os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else uri
    try:
        meta = sf.info(target)
    except Exception as e:
        raise RuntimeError(f"torchaudio.info (soundfile backend) cannot read {target!r}: {e}") from e
    encoding, bits = _ENCODINGS.get(meta.subtype, ("UNKNOWN", 0))
    if meta.format == "FLAC" and meta.subtype.startswith("PCM_"):
        encoding = "FLAC"
    return AudioMetaData(int(meta.samplerate), int(meta.frames), int(meta.channels), bits, encoding)


def _torchaudio_io_works() -> bool:
    """True if torchaudio can load audio by itself (torchaudio < 2.9, or torchcodec importable)."""
    import torchaudio

    if not hasattr(torchaudio, "load_with_torchcodec"):
        return True  # torchaudio < 2.9: its own sox/soundfile/ffmpeg backends
    try:
        importlib.import_module("torchcodec.decoders")
    except Exception:  # missing, or a build whose native libraries cannot load
        return False
    return True


# --- the patches ---

def _patch_audio_backend_api(torchaudio) -> list:
    done = []

    def set_audio_backend(backend):
        """No-op (torchaudio >= 2.9 has no selectable backends); installed by s3prl_speechprompt.compat."""

    def get_audio_backend():
        """Installed by s3prl_speechprompt.compat: torchaudio >= 2.9 has no selectable backends."""
        return "soundfile"

    def list_audio_backends():
        """Installed by s3prl_speechprompt.compat: torchaudio >= 2.9 has no selectable backends."""
        return ["soundfile"]

    for fn in (set_audio_backend, get_audio_backend, list_audio_backends):
        if not hasattr(torchaudio, fn.__name__):
            setattr(torchaudio, fn.__name__, mark(fn))
            done.append(f"torchaudio.{fn.__name__}")
    return done


def _sox_stub(torchaudio):
    module = types.ModuleType("torchaudio.sox_effects", "Stub installed by s3prl_speechprompt (torchaudio >= 2.9 removed sox_effects).")

    def make(fn_name):
        def unavailable(*args, **kwargs):
            raise NotImplementedError(_SOX_HINT.format(fn=fn_name, version=torchaudio.__version__))
        unavailable.__name__ = fn_name
        return unavailable

    for fn_name in ("apply_effects_tensor", "apply_effects_file", "effect_names",
                    "init_sox_effects", "shutdown_sox_effects"):
        setattr(module, fn_name, make(fn_name))
    return mark(module)


def _patch_sox_effects(torchaudio) -> list:
    if "torchaudio.sox_effects" in sys.modules or hasattr(torchaudio, "sox_effects"):
        return []
    try:
        importlib.import_module("torchaudio.sox_effects")
        return []
    except ImportError:
        pass
    stub = _sox_stub(torchaudio)
    sys.modules["torchaudio.sox_effects"] = stub
    torchaudio.sox_effects = stub
    return ["torchaudio.sox_effects"]


def _patch_audio_io(torchaudio) -> list:
    if is_marked(getattr(torchaudio, "load", None)) or _torchaudio_io_works():
        return []
    done = []
    for name, fn in (("load", _sf_load), ("save", _sf_save)):
        setattr(torchaudio, name, mark(fn))
        done.append(f"torchaudio.{name}")
    if not hasattr(torchaudio, "info"):
        torchaudio.info = mark(_sf_info)
        done.append("torchaudio.info")
    return done


def _patch_safe_globals() -> list:
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return []  # torch < 2.4: torch.load is not weights-only by default
    get = getattr(torch.serialization, "get_safe_globals", None)
    if get is not None and argparse.Namespace in get():
        return []
    add([argparse.Namespace])
    return ["torch.serialization.add_safe_globals([argparse.Namespace])"]


_applied: Optional[list] = None


def _patch_pandas_iteritems() -> list:
    """pandas 2 removed ``Series.iteritems``; s3prl's ``dataio/corpus/base.py`` (``dataframe_to_datapoints``,
    used by the Fluent Speech Commands parser) still calls it. Alias it to ``Series.items``."""
    try:
        import pandas as pd
    except ImportError:
        return []
    if hasattr(pd.Series, "iteritems"):
        return []
    pd.Series.iteritems = mark(pd.Series.items)
    return ["pandas.Series.iteritems"]


def apply() -> list:
    """Install the patches listed in the module docstring that this torch/torchaudio needs.

    Idempotent and cheap after the first call. Returns the names of what was patched by the first
    call (an empty list on an old torch/torchaudio that needs nothing).
    """
    global _applied
    if _applied is not None:
        _patch_safe_globals()     # a torch.serialization.safe_globals() context may have dropped it since
        return list(_applied)
    import torchaudio

    done = []
    done += _patch_audio_backend_api(torchaudio)
    done += _patch_sox_effects(torchaudio)
    done += _patch_audio_io(torchaudio)
    done += _patch_safe_globals()
    done += _patch_pandas_iteritems()
    _applied = done
    return list(done)
