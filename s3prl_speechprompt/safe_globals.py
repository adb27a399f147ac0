"""The few globals our restricted unpicklers resolve for real (everything else is refused or made inert).

Reading a file never runs code from it: a pickle can call any global it names, so the readers of
k-means files (``units.quantizer``) and unit-LM checkpoints (``ulm.checkpoint``) resolve only the exact
``(module, name)`` pairs listed here, never by module prefix and never through dotted names
(``torch`` + ``os.system`` would otherwise reach ``os.system`` through an attribute chain).
"""
from __future__ import annotations

from typing import Dict, Tuple

Key = Tuple[str, str]


def numpy_globals() -> Dict[Key, object]:
    """What a pickled ndarray / dtype / numpy scalar needs, under numpy 1.x and 2.x module paths."""
    import numpy as np
    try:
        from numpy._core import multiarray
    except ImportError:                                 # numpy < 2
        from numpy.core import multiarray
    out: Dict[Key, object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = multiarray._reconstruct
        out[(mod, "scalar")] = multiarray.scalar
    return out


def torch_globals() -> Dict[Key, object]:
    """The globals torch's own ``weights_only`` loader allows (tensor/storage rebuilds, dtypes, ``torch.Size``,
    ``OrderedDict``, ...), plus any the user added with ``torch.serialization.add_safe_globals``."""
    import torch

    out: Dict[Key, object] = {}
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        for key, obj in _get_allowed_globals().items():
            module, _, name = key.rpartition(".")
            out[(module, name)] = obj
    except Exception:                                   # pragma: no cover - torch without that helper
        for name in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
            if hasattr(torch._utils, name):
                out[("torch._utils", name)] = getattr(torch._utils, name)
    get = getattr(torch.serialization, "get_safe_globals", None)
    for entry in (get() if get else []):
        obj, key = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        module, _, name = key.rpartition(".")
        out[(module, name)] = obj
    return out
