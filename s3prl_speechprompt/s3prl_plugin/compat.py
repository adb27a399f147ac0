"""Compatibility layer that lets s3prl 0.4.18 run on current torch / torchaudio.

This is the ONE place where the package patches third-party modules. Nothing here edits installed
files; every patch is applied at run time by :func:`apply`, which our entry points call before they
import s3prl. Each patch is conditional: it is installed only when the feature it provides is missing,
so a setup with torchaudio < 2.9 and torch <= 2.5 is left exactly as it was.

Patches made by :func:`apply` (all idempotent):

1. ``torchaudio.set_audio_backend`` / ``get_audio_backend`` / ``list_audio_backends``
   (removed in torchaudio 2.9) -> no-ops. s3prl calls ``set_audio_backend`` at import time in
   ``s3prl/upstream/byol_s/byol_a/common.py:20`` and ``s3prl/dataio/dataset/load_audio.py:10`` (both
   reached by ``import s3prl.hub``), in ``s3prl/run_downstream.py`` ``main()``, and in the
   ``upstream/{apc,npc,decoar,decoar2,decoar_layers,ssast}/audio.py`` readers and ``util/audio_info.py``.
2. ``torchaudio.sox_effects`` (removed in torchaudio 2.9) -> a stub module, so that
   ``from torchaudio.sox_effects import apply_effects_tensor`` in
   ``s3prl/upstream/mos_prediction/expert.py:9`` (reached by ``import s3prl.hub``) succeeds. Calling
   any stub function raises ``NotImplementedError`` naming the s3prl code paths to avoid (SUPERB's
   ``speech_commands`` / ``sv_voxceleb1`` / ``mos_prediction`` / ``quesst14`` dataset readers).
3. ``torchaudio.load`` / ``save`` / ``info`` -> soundfile, when torchaudio's own I/O cannot work
   (torchaudio >= 2.9 decodes through ``torchcodec``, which is not importable here). Same contract as
   torchaudio: ``load`` returns ``(float32 Tensor[C, T], sample_rate)``. Used by s3prl's readers, e.g.
   ``s3prl/downstream/asr/dataset.py:112`` and ``s3prl/downstream/ctc/data.py:16``
   (``torchaudio.load``), ``s3prl/util/pseudo_data.py:37`` (``torchaudio.save``) and
   ``s3prl/util/audio_info.py:51`` (``torchaudio.info``).
4. ``torch.serialization.add_safe_globals([argparse.Namespace])`` when torch has it: torch >= 2.6
   loads with ``weights_only=True`` by default and s3prl's own checkpoints store their ``Args`` as an
   ``argparse.Namespace``, so ``torch.load(ckpt_pth, map_location='cpu')`` in
   ``s3prl/run_downstream.py`` (``-e/--past_exp``) and ``torch.load(args.init_ckpt)`` in
   ``s3prl/downstream/runner.py`` (``Runner.__init__``, ``-i`` and ``-e``) fail without it.

:func:`atomic_runner_checkpoints` (crash-safe ``states-*.ckpt``) is applied by our runner wrapper on every
run; :func:`enable_cpu_ddp` is separate and only called by our runner wrapper for a distributed run on a
machine without CUDA (see its docstring).

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


def _mark(obj):
    setattr(obj, _MARK, True)
    return obj


def _is_ours(obj) -> bool:
    return getattr(obj, _MARK, False)


# --------------------------------------------------------------------------------------------------
# audio I/O through soundfile
# --------------------------------------------------------------------------------------------------

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
        raise FileNotFoundError(f"audio file not found: {path}")
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


# --------------------------------------------------------------------------------------------------
# the patches
# --------------------------------------------------------------------------------------------------

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
            setattr(torchaudio, fn.__name__, _mark(fn))
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
    return _mark(module)


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
    if _is_ours(getattr(torchaudio, "load", None)) or _torchaudio_io_works():
        return []
    done = []
    for name, fn in (("load", _sf_load), ("save", _sf_save)):
        setattr(torchaudio, name, _mark(fn))
        done.append(f"torchaudio.{name}")
    if not hasattr(torchaudio, "info"):
        torchaudio.info = _mark(_sf_info)
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
    pd.Series.iteritems = _mark(pd.Series.items)
    return ["pandas.Series.iteritems"]


def apply() -> list:
    """Install the patches listed in the module docstring that this torch/torchaudio needs.

    Idempotent and cheap after the first call. Returns the names of what was patched by the first
    call (an empty list on an old torch/torchaudio that needs nothing).
    """
    global _applied
    if _applied is not None:
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


# --------------------------------------------------------------------------------------------------
# distributed training on CPU
# --------------------------------------------------------------------------------------------------

def enable_cpu_ddp() -> list:
    """Let s3prl's DDP path run with ``--device cpu --backend gloo`` on a machine without CUDA.

    Two things in s3prl 0.4.18 assume one GPU per process:

    * ``s3prl/run_downstream.py`` ``main()`` calls ``torch.cuda.set_device(args.local_rank)`` whenever
      ``--local_rank`` is given; without a CUDA driver that raises "Found no NVIDIA driver". Patched:
      ``torch.cuda.set_device`` becomes a no-op *only while CUDA is unavailable*.
    * ``s3prl/downstream/runner.py`` ``Runner._init_model`` wraps trainable models in
      ``DDP(model, device_ids=[self.args.local_rank], ...)``; torch rejects ``device_ids`` for a module
      on the CPU. Patched: the ``DDP`` name inside ``s3prl.downstream.runner`` drops ``device_ids`` /
      ``output_device`` for CPU modules (GPU modules get the original call).

    Returns the names of what was patched. Idempotent.
    """
    import torch

    done = []
    if not torch.cuda.is_available() and not _is_ours(torch.cuda.set_device):
        original = torch.cuda.set_device

        def set_device(device):
            if torch.cuda.is_available():
                return original(device)
            return None

        set_device.__doc__ = "Installed by s3prl_speechprompt.compat.enable_cpu_ddp: no-op without CUDA."
        torch.cuda.set_device = _mark(set_device)
        done.append("torch.cuda.set_device")

    runner = importlib.import_module("s3prl.downstream.runner")
    if not _is_ours(runner.DDP):
        original_ddp = runner.DDP

        def cpu_aware_ddp(module, *args, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                kwargs.pop("device_ids", None)
                kwargs.pop("output_device", None)
            return original_ddp(module, *args, **kwargs)

        runner.DDP = _mark(cpu_aware_ddp)
        done.append("s3prl.downstream.runner.DDP")
    return done


def fix_runner_ddp() -> list:
    """Two bugs in s3prl 0.4.18's DDP training loop (``s3prl/downstream/runner.py``), on any device:

    * Non-leader ranks ``continue`` before ``pbar.update(1)`` (``Runner.train``), so their step counter never
      moves and they train until rank 0 exits (then crash on a closed connection, or hang under NCCL).
      Patched: on non-leader ranks the ``overall`` progress bar advances from an optimizer step hook, i.e.
      once per optimizer step, as rank 0's does (a step skipped for a NaN gradient norm is not counted there).
    * Evaluation runs on rank 0 alone through the DDP-wrapped expert, whose forward would broadcast module
      buffers (a collective the other ranks never join). Our experts' buffers (k-means centroids, best
      score) need no broadcast, so the wrapper is built with ``broadcast_buffers=False``.
    Returns the names of what was patched. Idempotent.
    """
    runner = importlib.import_module("s3prl.downstream.runner")
    done = []
    if not _is_ours(runner.tqdm):
        original_tqdm = runner.tqdm

        def tqdm(*args, **kwargs):
            bar = original_tqdm(*args, **kwargs)
            if kwargs.get("desc") == "overall" and not runner.is_leader_process():
                _overall_bar["bar"] = bar
            return bar

        for name in ("write",):                    # runner uses tqdm.write(...) as a class method
            setattr(tqdm, name, getattr(original_tqdm, name))
        runner.tqdm = _mark(tqdm)
        done.append("s3prl.downstream.runner.tqdm")

        original_get_optimizer = runner.Runner._get_optimizer

        def _get_optimizer(self, model_params):
            optimizer = original_get_optimizer(self, model_params)
            if not runner.is_leader_process():
                optimizer.register_step_post_hook(lambda *a, **k: _overall_bar["bar"] and _overall_bar["bar"].update(1))
            return optimizer

        runner.Runner._get_optimizer = _mark(_get_optimizer)
        done.append("s3prl.downstream.runner.Runner._get_optimizer")
    if not getattr(runner.DDP, "_no_buffer_broadcast", False):
        inner = runner.DDP

        def ddp(module, *args, **kwargs):
            kwargs.setdefault("broadcast_buffers", False)
            return inner(module, *args, **kwargs)

        ddp._no_buffer_broadcast = True
        runner.DDP = _mark(ddp)
        done.append("s3prl.downstream.runner.DDP(broadcast_buffers=False)")
    return done


_overall_bar = {"bar": None}


# --------------------------------------------------------------------------------------------------
# crash-safe checkpoints
# --------------------------------------------------------------------------------------------------

_STATES = "states-"


def _is_states_ckpt(path) -> bool:
    name = os.path.basename(str(path))
    return name.startswith(_STATES) and name.endswith(".ckpt") and name[len(_STATES):-5].isdigit()


class _ModuleProxy(types.ModuleType):
    """A stand-in for a module inside one other module's namespace: every attribute is the real
    module's, except the ones set on the proxy."""

    def __init__(self, real):
        super().__init__(real.__name__)
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def atomic_runner_checkpoints() -> list:
    """Make ``Runner.train``'s checkpoints in ``s3prl/downstream/runner.py`` survive a kill at any moment.

    s3prl 0.4.18 writes ``states-<step>.ckpt`` / ``dev-best.ckpt`` with a plain ``torch.save(all_states, path)``
    (a kill mid-write leaves a truncated file that ``-a`` then picks as the newest and cannot load) and,
    with ``max_keep``, deletes the older ``states-*.ckpt`` *before* writing the new one (a kill in between
    leaves nothing to resume from). Patched, in that module's namespace only:

    * ``torch.save(obj, path)`` writes ``.<name>.<random>.tmp`` in the same folder, fsyncs it and renames it
      over ``path`` (``-a`` globs ``states-*.ckpt``, which never matches the hidden temp file);
    * ``os.remove`` of a ``states-*.ckpt`` is deferred until the next ``states-*.ckpt`` of that folder is
      complete, so there is always one whole checkpoint on disk.
    Returns the names of what was patched. Idempotent.
    """
    import torch

    from s3prl_speechprompt.atomic import atomic_torch_save

    runner = importlib.import_module("s3prl.downstream.runner")
    if _is_ours(runner.torch):
        return []
    pending = []

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return torch.save(obj, f, *args, **kwargs)
        atomic_torch_save(obj, f)
        if _is_states_ckpt(f):
            folder = os.path.dirname(os.path.abspath(f))
            for old in [p for p in pending if os.path.dirname(os.path.abspath(p)) == folder]:
                pending.remove(old)
                if os.path.abspath(old) != os.path.abspath(f) and os.path.exists(old):
                    os.remove(old)

    def remove(path, *args, **kwargs):
        if _is_states_ckpt(path):
            pending.append(str(path))
            return None
        return os.remove(path, *args, **kwargs)

    torch_proxy, os_proxy = _ModuleProxy(torch), _ModuleProxy(os)
    torch_proxy.save, os_proxy.remove = save, remove
    runner.torch, runner.os = _mark(torch_proxy), _mark(os_proxy)
    return ["s3prl.downstream.runner.torch.save (atomic)", "s3prl.downstream.runner.os.remove (after the next save)"]
