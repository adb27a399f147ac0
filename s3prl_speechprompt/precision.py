"""How the unit LM is run: ``fp32`` (default, the reference), ``bf16`` or ``fp16`` mixed precision.

Precision is a property of the *computation*, never of what is stored or trained: every parameter and optimizer
state stays fp32; only the LM forward (training loss, decoding) runs under ``torch.autocast`` and the cross
entropy takes fp32 logits. fp16's narrow exponent needs loss scaling (:func:`grad_scaler`, wired in by
:func:`optimizer_step`); bf16 needs none. Used by the engine (``--precision``) and the s3prl expert
(``downstream_expert.precision``; there the runner owns the step and its ``runner.fp16`` GradScaler is the scaler).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Union

import torch

from s3prl_speechprompt.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, where: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ConfigError (a ValueError) naming ``where``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{where} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The autocast compute dtype (None for fp32)."""
    return _DTYPES[check(precision)]


def device_type(device: Union[str, torch.device, None]) -> str:
    return torch.device(device or "cpu").type


def autocast(precision: str, device: Union[str, torch.device, None] = "cpu"):
    """Context for the LM forward. fp32 *disables* autocast, so an enclosing one (s3prl's ``runner.fp16``)
    cannot silently lower the LM's precision: the expert's setting is the LM's precision."""
    dtype = autocast_dtype(precision)
    kind = device_type(device)
    if dtype is None:
        return torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext()
    return torch.autocast(kind, dtype=dtype)


def grad_scaler(precision: str, device: Union[str, torch.device, None] = "cpu") -> "torch.amp.GradScaler":
    """A GradScaler that is enabled for fp16 only (disabled, every call is a pass-through)."""
    return torch.amp.GradScaler(device_type(device), enabled=check(precision) == "fp16")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter],
                   scaler: "torch.amp.GradScaler", clip_norm: float = 0.0) -> Optional[torch.Tensor]:
    """backward, unscale, clip, step, update. With a disabled scaler this is exactly ``loss.backward();
    clip_grad_norm_; optimizer.step()``; with fp16 a step whose gradients overflowed is skipped and the
    scale lowered. Returns the gradient norm before clipping (None without clipping)."""
    scaler.scale(loss).backward()
    norm = None
    if clip_norm > 0:
        scaler.unscale_(optimizer)                 # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(list(params), clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return norm
