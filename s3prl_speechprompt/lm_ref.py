"""Which unit LM a trained task runs on: a reference (where the weights are + their fingerprint) and the families
that know how to load and fingerprint them.

One fingerprint identifies LM weights everywhere (runner expert, engine, ``predict``): sha256 over the weights only
(:func:`weights_fingerprint`), so runs on the same LM are recognised as such whatever their front end or dropout.
An :class:`LMFamily` resolves a source (name or path), loads and fingerprints it; GSLM/fairseq ``transformer_lm``
is the only one (another, e.g. HF-format speech LMs, is one more entry in :data:`FAMILIES`).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Protocol, Tuple

import torch

from s3prl_speechprompt.errors import LMMismatchError


def weights_fingerprint(state_dict: Dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names, shapes, dtypes and bytes: identifies the exact LM weights (not its config)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _legacy(lm, cfg: dict) -> str:
    h = hashlib.sha256(repr(cfg).encode())
    for name, t in sorted(lm.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def legacy_fingerprint_matches(lm, stored) -> bool:
    """Runner checkpoints written before the weights fingerprint store ``UnitLM.fingerprint`` of that time: 16 hex
    of a hash over the config (dropout included, as the expert had set it) and the weights as fp32. Recognise one by
    recomputing it for ``lm`` with its current config, then with the dropout PT (0) and FT-LM (0.1) runs set."""
    if not isinstance(stored, str) or len(stored) != 16:
        return False
    cfg = lm.cfg.to_dict()
    variants = [cfg] + [dict(cfg, dropout=p, attention_dropout=p, activation_dropout=0.0) for p in (0.0, 0.1)]
    return any(_legacy(lm, v) == stored for i, v in enumerate(variants) if v not in variants[:i])


def fingerprint_matches(lm, fingerprint: str, stored) -> bool:
    """``stored`` (a checkpoint's) names the weights of ``lm`` (fingerprint ``fingerprint``): equal, or legacy."""
    return stored == fingerprint or legacy_fingerprint_matches(lm, stored)


class LMFamily(Protocol):
    """What identifies a family's weights and how to build and fingerprint them."""

    name: str

    def resolve(self, source: str) -> Path: ...

    def load(self, path: Path) -> Tuple[torch.nn.Module, object]: ...

    def fingerprint(self, model) -> str: ...


class GSLMFamily:
    """fairseq / GSLM ``transformer_lm`` unit LMs: a directory or ``.pt`` with ``dict.txt``, or a GSLM name."""

    name = "gslm"

    def resolve(self, source: str) -> Path:
        from s3prl_speechprompt.ulm.pretrained import resolve_ulm
        return Path(resolve_ulm(str(source))).resolve()

    def load(self, path: Path):
        from s3prl_speechprompt.ulm.checkpoint import load_ulm
        lm, dictionary, _ = load_ulm(path)
        return lm, dictionary

    def fingerprint(self, model) -> str:
        return weights_fingerprint(model.state_dict())


FAMILIES: Dict[str, LMFamily] = {"gslm": GSLMFamily()}


@dataclass
class LMRef:
    """The LM a task was trained on: where it was (``source``: name or path) and which weights (``fingerprint``)."""

    source: str
    fingerprint: str
    family: str = "gslm"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LMRef":
        return cls(source=str(d["source"]), fingerprint=str(d["fingerprint"]), family=str(d.get("family", "gslm")))


class LMCache:
    """Each resolved LM loaded and fingerprinted once; paths holding the same weights share one model (PT tasks
    decode through one LM)."""

    def __init__(self):
        self._by_path: Dict[Tuple[str, str], Tuple[object, object, str]] = {}
        self._by_fp: Dict[str, Tuple[object, object, str]] = {}

    def get(self, source, family: str = "gslm") -> Tuple[object, object, str]:
        """(lm, dictionary, weights fingerprint) of ``source`` (an :class:`LMRef` or a name / path)."""
        if isinstance(source, LMRef):
            source, family = source.source, source.family
        fam = FAMILIES[family]
        key = (family, str(fam.resolve(source)))
        if key not in self._by_path:
            lm, dictionary = fam.load(Path(key[1]))
            fp = fam.fingerprint(lm)
            self._by_path[key] = self._by_fp.setdefault(fp, (lm, dictionary, fp))
        return self._by_path[key]

    @staticmethod
    def fresh(source, family: str = "gslm") -> Tuple[object, object, str]:
        """A private copy (FT-LM overwrites its weights), not shared with anyone."""
        fam = FAMILIES[family]
        lm, dictionary = fam.load(fam.resolve(source))
        return lm, dictionary, fam.fingerprint(lm)


def check_lm(ref: LMRef, lm, fingerprint: str, source: str, what: str, flag: Optional[str] = None) -> None:
    """Refuse to apply a run's prompts to other weights: :class:`LMMismatchError` naming both fingerprints and the
    flag that fixes it, unless ``lm`` (loaded from ``source``, given by ``flag`` or else recorded by the run) has the
    weights of ``ref`` (a legacy runner fingerprint is recognised too)."""
    if not fingerprint_matches(lm, fingerprint, ref.fingerprint):
        raise LMMismatchError(f"{what}: the prompts were trained on the unit LM with fingerprint {ref.fingerprint}, "
                              f"but {source} ({flag or 'the LM the run recorded'}) has fingerprint {fingerprint}; "
                              f"point {flag or '--ulm'} at the LM this run was trained with")
