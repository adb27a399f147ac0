"""Read and write fairseq unit-LM checkpoints (``checkpoint_best.pt`` + ``dict.txt``) without fairseq.

fairseq wrote three container shapes: ``args`` (an ``argparse.Namespace``, <= v0.10), ``cfg`` holding pickled
fairseq ``ChoiceEnum`` members (late 2020 - mid 2021), and ``cfg`` as a plain dict; all hold the weights under
``model``. We try torch's ``weights_only`` loader first (plus ``argparse.Namespace``), then an unpickler that
resolves a short allow-list of exact globals (torch's weights-only set, numpy arrays, omegaconf, collections,
argparse) and turns every other global - fairseq's, or ``os.system`` - into an inert placeholder: no code from
the checkpoint is imported or run, and fairseq need not be installed.
"""
from __future__ import annotations

import argparse
import enum
import pickle
import types
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from s3prl_speechprompt.atomic import atomic_torch_save
from s3prl_speechprompt.errors import CheckpointError, MissingFileError
from s3prl_speechprompt.safe_globals import numpy_globals, torch_globals
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.ulm.model import ARCHITECTURES, ULMConfig, UnitLM

CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt", "checkpoint.pt")


# --------------------------------------------------------------------------------------------- reading
class _Placeholder:
    """Stands in for a class we refuse to import (fairseq's enums, dictionaries, ...)."""

    _qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __reduce__(self):                                  # keeps deepcopy/pickle of the cfg working
        return (_restore_placeholder, (self._qualname, self._args, dict(self.__dict__)))

    @property
    def value(self):
        """An enum member's value (fairseq ChoiceEnum members pickle as ``Class(value)``)."""
        args = self.__dict__.get("_args") or ()
        return args[0] if args else self.__dict__.get("_value_")

    def __repr__(self):
        return f"<unpickled {self._qualname} {self.value!r}>"


def _placeholder_class(module: str, name: str):
    return type(name, (_Placeholder,), {"_qualname": f"{module}.{name}", "__module__": __name__})


def _restore_placeholder(qualname, args, state):
    module, _, name = qualname.rpartition(".")
    obj = _placeholder_class(module, name)(*args)
    obj.__dict__.update(state)
    return obj


# resolved for real: exact (module, name) pairs only. No module-prefix rule and no dotted names: with
# "torch" or "numpy" allowed as a prefix, a pickle could name torch + "os.system" (protocol 4 resolves the
# attribute chain), numpy.load or torch.utils.cpp_extension.load_inline and run code.
_ALLOWED_GLOBALS = {("argparse", "Namespace"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
                    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "Counter"),
                    ("copyreg", "_reconstructor"), ("_codecs", "encode"), ("typing", "Any")} | {
    ("builtins", n) for n in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bool",
                              "bytes", "bytearray", "complex", "slice", "object", "type", "NoneType")
}


class _RestrictedUnpickler(pickle.Unpickler):
    _resolved: Optional[Dict[Tuple[str, str], Any]] = None

    @classmethod
    def _allowed(cls) -> Dict[Tuple[str, str], Any]:
        if cls._resolved is None:
            cls._resolved = {**numpy_globals(), **torch_globals()}
        return cls._resolved

    def find_class(self, module, name):
        if "." not in name:
            if (module, name) in _ALLOWED_GLOBALS:
                return super().find_class(module, name)
            allowed = self._allowed()
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "omegaconf" or module.startswith("omegaconf."):     # DictConfig, ListConfig, nodes
                try:
                    obj = super().find_class(module, name)
                except (ImportError, AttributeError):
                    obj = None
                if isinstance(obj, type):
                    return obj
        return _placeholder_class(module, name)


_restricted_pickle = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
                                           __name__="restricted_pickle")


def load_container(path: Path, expected: str = "a PyTorch / fairseq checkpoint") -> Dict[str, Any]:
    """The raw checkpoint dict, on CPU, with no fairseq import and no code execution; a damaged file or one of
    another kind is one clear error (:func:`~s3prl_speechprompt.readers.read_torch`)."""
    from s3prl_speechprompt.readers import read_torch

    # classes outside torch's safe set and argparse.Namespace (enums, DictConfig, ...) go through the restricted
    # unpickler
    return read_torch(path, expected, restricted_pickle=_restricted_pickle, allow=(argparse.Namespace,))


def _plain(obj):
    """Namespace / DictConfig / dict / enum placeholder -> plain Python values."""
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, _Placeholder):
        return obj.value if obj.value is not None else {k: _plain(v) for k, v in obj.__dict__.items() if not k.startswith("_")}
    if isinstance(obj, enum.Enum):
        return obj.value
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(obj, (DictConfig, ListConfig)):
            try:
                return _plain(OmegaConf.to_container(obj, resolve=False, enum_to_str=True))
            except Exception:
                return {k: _plain(obj._get_node(k)._value()) for k in obj.keys()} if isinstance(obj, DictConfig) \
                    else [_plain(v) for v in obj._content]
    except ImportError:
        pass
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def model_hparams(state: Dict[str, Any]) -> Dict[str, Any]:
    """The model section of whichever config era the checkpoint uses, as a plain dict."""
    if state.get("args") is not None:
        return _plain(state["args"])
    cfg = _plain(state.get("cfg")) or {}
    model = cfg.get("model") if isinstance(cfg, dict) else None
    return _plain(model) or {}


_UNSUPPORTED = {   # fairseq option -> value meaning "on"; none of these are in GSLM's transformer_lm_big
    "adaptive_input": True, "character_embeddings": True, "decoder_learned_pos": True,
    "layernorm_embedding": True, "no_token_positional_embeddings": True, "cross_self_attention": True,
}


def config_from_hparams(hp: Dict[str, Any], vocab_size: int, source: str = "checkpoint") -> ULMConfig:
    arch = hp.get("arch") or hp.get("_name") or "transformer_lm"
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{source}: unknown architecture {arch!r}; supported fairseq transformer_lm architectures: "
            f"{', '.join(ARCHITECTURES)}")
    for key, on in _UNSUPPORTED.items():
        if hp.get(key) == on:
            raise CheckpointError(f"{source}: option {key}={on} is not supported by this unit-LM port "
                                  f"(GSLM checkpoints do not use it)")
    if hp.get("adaptive_softmax_cutoff"):
        raise CheckpointError(f"{source}: adaptive softmax ({hp['adaptive_softmax_cutoff']}) is not supported")
    if float(hp.get("quant_noise_pq") or 0) > 0:
        raise CheckpointError(f"{source}: quant-noise checkpoints are not supported")
    d, f, n, h, act = ARCHITECTURES[arch]
    d = int(hp.get("decoder_embed_dim") or d)
    for key in ("decoder_input_dim", "decoder_output_dim"):
        if hp.get(key) not in (None, d):
            raise CheckpointError(f"{source}: {key}={hp[key]} differs from decoder_embed_dim={d}; not supported")
    if hp.get("share_decoder_input_output_embed") is False and "share_decoder_input_output_embed" in hp:
        raise CheckpointError(f"{source}: untied output embeddings are not supported (GSLM ties them)")
    return ULMConfig(
        vocab_size=vocab_size,
        embed_dim=d,
        ffn_dim=int(hp.get("decoder_ffn_embed_dim") or f),
        layers=int(hp.get("decoder_layers") or n),
        heads=int(hp.get("decoder_attention_heads") or h),
        activation=str(hp.get("activation_fn") or act),
        dropout=float(hp.get("dropout", 0.1) or 0.0),
        attention_dropout=float(hp.get("attention_dropout", 0.0) or 0.0),
        activation_dropout=float(hp.get("activation_dropout", hp.get("relu_dropout", 0.0)) or 0.0),
        max_positions=int(hp.get("tokens_per_sample") or hp.get("max_target_positions") or 3072),
        scale_embedding=not hp.get("no_scale_embedding", False),
        normalize_before=bool(hp.get("decoder_normalize_before", True)),
        final_norm=not hp.get("no_decoder_final_norm", False),
        arch=arch,
    )


def upgrade_state_dict(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], bool]:
    """Apply fairseq's legacy renames; returns (state dict in today's names, has_final_norm)."""
    sd = {k: v for k, v in sd.items() if not k.startswith("decoder.prompt") and "embed_prompts" not in k
          and not k.startswith("decoder.sep_embed")}
    out: Dict[str, torch.Tensor] = {}
    ln_names = {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"}
    for k, v in sd.items():
        if k.endswith("embed_positions.weights") or k.endswith("embed_positions._float_tensor"):
            continue                                             # sinusoids are recomputed, never stored
        parts = k.split(".")
        if len(parts) > 4 and parts[2].isdigit() and parts[3] == "layer_norms":
            k = ".".join(parts[:3] + [ln_names[parts[4]]] + parts[5:])
        if k.endswith("self_attn.in_proj_weight") or k.endswith("self_attn.in_proj_bias"):
            base, kind = k.rsplit(".in_proj_", 1)
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{base}.{name}.{kind}"] = chunk
            continue
        if k == "decoder.embed_out":
            k = "decoder.output_projection.weight"
        out[k] = v
    version = sd.get("decoder.version")
    has_final_norm = version is not None and float(version.flatten()[0]) > 2    # fairseq drops it for <= 2
    out.pop("decoder.version", None)
    if "decoder.output_projection.weight" not in out and "decoder.embed_tokens.weight" in out:
        out["decoder.output_projection.weight"] = out["decoder.embed_tokens.weight"]
    return out, has_final_norm


def resolve_paths(path) -> Tuple[Path, Path]:
    """A GSLM directory or checkpoint file -> (checkpoint, dict.txt)."""
    path = Path(path)
    if path.is_dir():
        ckpt = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
        if ckpt is None:
            found = sorted(p.name for p in path.glob("*.pt"))
            if len(found) != 1:
                raise MissingFileError(
                    f"{path}: no unit-LM checkpoint found (looked for {', '.join(CHECKPOINT_NAMES)}; "
                    f"*.pt files here: {found or 'none'})")
            ckpt = path / found[0]
        return ckpt, path / "dict.txt"
    if not path.is_file():
        raise MissingFileError(f"{path}: unit-LM checkpoint or directory does not exist")
    return path, path.parent / "dict.txt"


LM_CHECKPOINT = "a fairseq unit-LM checkpoint (e.g. GSLM's checkpoint_best.pt)"


def load_ulm(path, dict_path=None, map_location="cpu") -> Tuple[UnitLM, Dictionary, Dict[str, Any]]:
    """Load a fairseq/GSLM unit LM. Returns (model in eval mode, dictionary, info dict)."""
    ckpt, default_dict = resolve_paths(path)
    dict_path = Path(dict_path) if dict_path else default_dict
    if not dict_path.is_file():
        raise MissingFileError(
            f"{dict_path}: missing. The unit LM {ckpt} needs the dict.txt it was trained with "
            f"(it fixes which row of the embedding is which unit); place it next to the checkpoint or pass dict_path")
    dictionary = Dictionary.load(dict_path)
    state = load_container(ckpt, LM_CHECKPOINT)
    if not isinstance(state, dict) or "model" not in state:
        from s3prl_speechprompt.readers import describe
        raise CheckpointError(f"{ckpt}: is {describe(state)}, expected {LM_CHECKPOINT} (a dict with a 'model' entry)")
    sd, has_final_norm = upgrade_state_dict(state["model"])
    emb = sd.get("decoder.embed_tokens.weight")
    if emb is None:
        raise CheckpointError(f"{ckpt}: no decoder.embed_tokens.weight; is this a transformer_lm checkpoint? "
                              f"keys start with {sorted(sd)[:3]}")
    if emb.size(0) != len(dictionary):
        raise CheckpointError(
            f"{dict_path} has {len(dictionary.units)} symbols (+4 specials = {len(dictionary)}) but the embedding "
            f"in {ckpt} has {emb.size(0)} rows: this dict.txt does not belong to this checkpoint")
    cfg = config_from_hparams(model_hparams(state), len(dictionary), source=str(ckpt))
    # fairseq builds the final LayerNorm only for pre-LN and drops it when loading version <= 2 weights
    cfg.final_norm = cfg.final_norm and cfg.normalize_before and has_final_norm
    if not has_final_norm:
        sd.pop("decoder.layer_norm.weight", None), sd.pop("decoder.layer_norm.bias", None)
    if emb.size(1) != cfg.embed_dim:
        raise CheckpointError(f"{ckpt}: embedding width {emb.size(1)} != decoder_embed_dim {cfg.embed_dim} in its config")
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("decoder.layers.")})
    if n_layers != cfg.layers:
        raise CheckpointError(f"{ckpt}: config says {cfg.layers} layers, weights have {n_layers}")
    model = UnitLM(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not match the {cfg.arch} layout "
                              f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    model.to(map_location).eval()
    info = {
        "checkpoint": str(ckpt), "dict": str(dict_path),
        "epoch": ((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch"),
        "num_updates": (state.get("optimizer_history") or [{}])[-1].get("num_updates"),
    }
    return model, dictionary, info


# --------------------------------------------------------------------------------------------- writing
def fairseq_cfg(cfg: ULMConfig, data_dir: str) -> Dict[str, Any]:
    """A plain-dict fairseq config (the post-2021 era) that fairseq's loader accepts."""
    d, positions = cfg.embed_dim, cfg.max_positions
    model = {
        "_name": "transformer_lm", "activation_fn": cfg.activation, "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": cfg.activation_dropout,
        "decoder_embed_dim": d, "decoder_output_dim": d, "decoder_input_dim": d, "decoder_ffn_embed_dim": cfg.ffn_dim,
        "decoder_layers": cfg.layers, "decoder_attention_heads": cfg.heads,
        "decoder_normalize_before": cfg.normalize_before, "no_decoder_final_norm": not cfg.final_norm,
        "no_scale_embedding": not cfg.scale_embedding, "share_decoder_input_output_embed": True,
        "decoder_learned_pos": False, "tokens_per_sample": positions, "max_target_positions": positions,
        "add_bos_token": False,
    }
    task = {"_name": "language_modeling", "data": data_dir, "tokens_per_sample": cfg.max_positions,
            "sample_break_mode": "eos", "output_dictionary_size": -1, "self_target": False,
            "future_target": False, "past_target": False, "add_bos_token": False}
    return {"_name": None, "common": {"seed": 1}, "task": task, "model": model,
            "criterion": {"_name": "cross_entropy"}, "optimizer": None, "lr_scheduler": None}


def save_ulm(model: UnitLM, dictionary: Dictionary, out_dir, name: str = "checkpoint_best.pt",
             extra_state: Optional[Dict[str, Any]] = None, optimizer_state=None, num_updates: int = 0,
             optimizer_name: str = "Adam") -> Path:
    """Write ``<out_dir>/<name>`` + ``dict.txt`` in fairseq's format (atomically); fairseq loads both."""
    out_dir = Path(out_dir)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    sd["decoder.version"] = torch.tensor([3.0])
    state = {
        "args": None,
        "cfg": fairseq_cfg(model.cfg, str(out_dir.resolve())),
        "model": sd,
        "criterion": {},
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": optimizer_name,
                               "lr_scheduler_state": {"best": None}, "num_updates": num_updates}],
        "task_state": {},
        "extra_state": dict(extra_state or {"train_iterator": {"epoch": 1}}),
        "last_optimizer_state": optimizer_state,
    }
    dictionary.save(out_dir / "dict.txt")
    path = out_dir / name
    atomic_torch_save(state, path)
    return path
