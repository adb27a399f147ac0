"""``downstream_expert`` YAML sections -> the experts' config dataclasses, checked the same way for both."""
from __future__ import annotations

from dataclasses import fields
from typing import Sequence, Type, TypeVar

from s3prl_speechprompt.errors import ConfigError

T = TypeVar("T")


def from_expert_dict(cls: Type[T], d: dict, required: Sequence[str] = ("task",)) -> T:
    """``cls(**d)`` after naming every key ``cls`` does not know and every required key that is missing."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"downstream_expert: unknown key(s) {unknown}; known: {sorted(names)}")
    for key in required:
        if not d.get(key):
            raise ConfigError(f"downstream_expert.{key} is required")
    return cls(**d)
