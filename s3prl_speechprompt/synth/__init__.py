"""Synthetic SUPERB corpora (KS = Speech Commands v0.01, IC = Fluent Speech Commands) from espeak-ng speech.

``make_ks`` / ``make_ic`` write the real on-disk formats, so s3prl's own readers parse them; ``synthesize``
is the underlying text-to-speech call. See ``speechprompt synth --help``.
"""
from .corpora import FSC_INTENTS, KS_CLASSES, KS_COMMANDS, KS_UNKNOWN_WORDS, ks_split_of, make_ic, make_ks
from .tts import EspeakUnavailable, is_available, synthesize

__all__ = ["make_ks", "make_ic", "synthesize", "is_available", "EspeakUnavailable", "ks_split_of",
           "KS_CLASSES", "KS_COMMANDS", "KS_UNKNOWN_WORDS", "FSC_INTENTS"]
