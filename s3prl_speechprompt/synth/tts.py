"""Minimal text-to-speech through libespeak-ng, loaded with ctypes.

The library and its voice data come from the pip package ``espeakng-loader``; a system espeak-ng can be used
instead with ``SPEECHPROMPT_ESPEAK_LIB`` (``libespeak-ng.so``) and ``SPEECHPROMPT_ESPEAK_DATA`` (``espeak-ng-data``).
espeak-ng keeps global state, so every call holds one process-wide lock. Part of that state survives between
utterances and even ``espeak_Terminate``/``espeak_Initialize`` (the phase of the pitch "flutter"), so output is
reproducible only for the same sequence of calls in a fresh process, which is how
:mod:`s3prl_speechprompt.synth.corpora` gets byte-identical corpora.
"""
import ctypes
import os
import threading
from functools import lru_cache
from math import gcd

import numpy as np

from s3prl_speechprompt.errors import UserError

SAMPLE_RATE = 16000

# espeak_AUDIO_OUTPUT (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_PARAMETER
_ESPEAK_RATE = 1
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
# espeak_POSITION_TYPE / synth flags
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_EE_OK = 0

# names people use that espeak_SetVoiceByName does not know (the British voice file is called "en")
_VOICE_ALIASES = {"en-gb": "en", "en-uk": "en"}

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 0 to continue
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakUnavailable(UserError, RuntimeError):
    """libespeak-ng (or its voice data) could not be loaded (a user error: the message says what to install)."""


class _Espeak:
    def __init__(self, lib_path, data_path):
        try:
            self.lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise EspeakUnavailable(f"cannot load the espeak-ng library {lib_path!r}: {e}") from e
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        # espeak-ng >= 1.51 seeds its noise generator (breathy voices like +f2, +f3, +f5) from the clock;
        # this call makes that noise reproducible
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None

        path = data_path.encode() if data_path else None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if rate <= 0:
            raise EspeakUnavailable(
                f"espeak_Initialize failed (returned {rate}) with data path {data_path!r}; "
                "is the espeak-ng-data directory complete?")
        self.sample_rate = rate
        self._chunks = []
        # keep a reference: ctypes callbacks must outlive their registration
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav, numsamples, events):
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def synth(self, text, voice, rate_wpm, pitch, pitch_range=50, seed=0):
        lib = self.lib
        base, plus, variant = voice.partition("+")
        name = _VOICE_ALIASES.get(base.lower(), base) + plus + variant
        with self.lock:
            if lib.espeak_SetVoiceByName(name.encode()) != _EE_OK:
                raise ValueError(f"espeak-ng has no voice {voice!r} (try en-us, en-gb, en+f3, en-us+m7, ...)")
            # parameters after the voice: selecting a voice resets them
            lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            lib.espeak_SetParameter(_ESPEAK_RANGE, int(pitch_range), 0)
            lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
            if self._set_rand_seed is not None:
                self._set_rand_seed(int(seed) & 0x7FFFFFFF)
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data, len(data))
            self._chunks = []
            err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)


def _locate():
    lib = os.environ.get("SPEECHPROMPT_ESPEAK_LIB")
    data = os.environ.get("SPEECHPROMPT_ESPEAK_DATA")
    if lib:
        return lib, data
    try:
        import espeakng_loader
    except ImportError as e:
        raise EspeakUnavailable(
            "text-to-speech needs the espeak-ng library: `pip install espeakng-loader` "
            "(or set SPEECHPROMPT_ESPEAK_LIB to a system libespeak-ng.so)") from e
    try:
        return espeakng_loader.get_library_path(), data or espeakng_loader.get_data_path()
    except Exception as e:  # the loader raises RuntimeError when its data directory is missing
        raise EspeakUnavailable(f"espeakng-loader is installed but unusable: {e}") from e


@lru_cache(maxsize=1)
def _engine():
    return _Espeak(*_locate())


def is_available():
    """True if libespeak-ng can be loaded and initialised."""
    try:
        _engine()
        return True
    except EspeakUnavailable:
        return False


def _resample(x, sr_in, sr_out):
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    try:
        from scipy.signal import resample_poly
    except ImportError:  # scipy comes with scikit-learn; torchaudio is the fallback
        import torch
        import torchaudio.functional as taf
        return taf.resample(torch.from_numpy(x), sr_in, sr_out).numpy()
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def synthesize(text, voice="en-us", rate_wpm=175, pitch=50, pitch_range=50, seed=0):
    """Speak ``text`` and return a float32 waveform in [-1, 1] at 16 kHz (mono).

    ``voice``: an espeak-ng voice, optionally with a variant (``en-us``, ``en+f3``, ...); ``rate_wpm`` about 80..450;
    ``pitch`` / ``pitch_range`` 0..100 (50: the voice's default; range 0: monotone); ``seed``: espeak-ng's noise
    generator (breath noise of some variants).
    """
    eng = _engine()
    pcm = eng.synth(text, voice, rate_wpm, pitch, pitch_range, seed)
    wav = pcm.astype(np.float32) / 32768.0
    return np.asarray(_resample(wav, eng.sample_rate, SAMPLE_RATE), dtype=np.float32)
