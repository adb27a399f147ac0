"""What a trained PT / FT-LM run *is*, whatever front end trained it, and the one place it is rebuilt for decoding.

A :class:`TrainedTask` holds the task and its options, the method, the LM it runs on (:class:`~.lm_ref.LMRef`: a
name or path and the weights fingerprint), the prompt config and trainable state (a reparameterised prefix
collapsed to plain prompts; FT-LM: the whole LM), the verbalizer, the decoding settings and, for runs trained from
audio, the upstream / layer / featurizer weights and k-means centroids. On disk it is ``DIR/trained_task.json``
(everything but tensors; format :data:`FORMAT`) + ``DIR/trained_task.pt`` (the tensors, read with
``torch.load(weights_only=True)``): the runner expert writes ``<expdir>/trained_task/`` whenever it saves
``dev-best.ckpt``, ``speechprompt train`` writes ``EXP/trained_task/`` at the end of training. Runs from before
(runner ``.ckpt`` files, engine directories) are read by :meth:`TrainedTask.from_runner_checkpoint` /
:meth:`TrainedTask.from_engine_dir`; :meth:`TrainedTask.find` takes any of these.

:meth:`TrainedTask.build` assembles the LM + prompts + verbalizer + k-means for decoding (``speechprompt
evaluate``, ``predict``, the runner expert's ``-m evaluate`` / ``-m inference`` read their configs from here).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from s3prl_speechprompt.atomic import atomic_torch_save, atomic_write_text
from s3prl_speechprompt.errors import CheckpointError, MissingFileError
from s3prl_speechprompt.lm_ref import LMCache, LMRef, check_lm, weights_fingerprint
from s3prl_speechprompt.prompt.prefix import ReparamPrefix
from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
from s3prl_speechprompt.prompt.verbalizer import Verbalizer
from s3prl_speechprompt.readers import RUNNER_CHECKPOINT, is_runner_checkpoint, read_json, read_torch
from s3prl_speechprompt.tasks.base import Task, get_task
from s3prl_speechprompt.units.quantizer import KMeansQuantizer

FORMAT = "s3prl-speechprompt-trained-task/1"
JSON, TENSORS = "trained_task.json", "trained_task.pt"
# datarc keys that are how the runner loads data, not what the task is
LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers")
# the runner Args fields that decide the features a run was trained on
UPSTREAM_ARGS = ("upstream", "upstream_ckpt", "upstream_model_config", "upstream_feature_selection",
                 "upstream_layer_selection", "upstream_feature_normalize")


@dataclass
class Decoding:
    """How the run's own evaluation decoded: the budget of new tokens, greedy (1) or beam, autocast precision."""

    max_new_tokens: int
    beam_size: int = 1
    precision: str = "fp32"


@dataclass
class AudioUnits:
    """How audio becomes the run's units: the upstream (runner ``Args``), its trained layer weights, the k-means."""

    upstream: dict
    centroids: torch.Tensor
    featurizer: Optional[Dict[str, torch.Tensor]] = None


def make_task(name: str, options: dict) -> Task:
    """The task's reader and scorer; a unit-level run (no options) of an unregistered task, or of one whose
    constructor needs corpus paths, scores as the base task (exact-match accuracy)."""
    if options:
        return get_task(name)(**options)
    try:
        return get_task(name)()
    except Exception:
        return Task()


def runner_prompt_config(method: str, prompt: dict, task: Task, verbalizer: Verbalizer) -> PromptConfig:
    """``downstream_expert.prompt`` with the runner's defaults: the task's prompt length, one output per class for
    the learnable verbalizer."""
    prompt = dict(prompt or {})
    prompt.setdefault("prompt_length", task.default_prompt_length)
    if verbalizer.method == "learnable":
        prompt.setdefault("learnable_classes", len(verbalizer.codes))
    return PromptConfig(method=method, **prompt)


def decoding_budget(max_new_tokens: Optional[int], verbalizer: Verbalizer, task: Task) -> int:
    """New tokens a runner run decodes: ``max_new_tokens``, else the task's longest label sequence in verbalizer
    units plus ``</s>``."""
    return max_new_tokens or verbalizer.code_length * task.max_label_tokens + 1


def _collapse(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A reparameterised prefix's state (start + embedding + MLP) -> the plain ``deep_prompt.key`` / ``.value``."""
    sub = {k[len("deep_prompt."):]: v for k, v in state.items() if k.startswith("deep_prompt.")}
    _, layers, length, dim = sub["start"].shape
    with torch.random.fork_rng(devices=[]):   # its throw-away init must not move a training run's RNG (bitwise -a)
        prefix = ReparamPrefix(layers, length, dim, 0.0, sub["embedding"].size(1), sub["start"][0], sub["start"][1])
    prefix.load_state_dict(sub)
    out = {k: v for k, v in state.items() if not k.startswith("deep_prompt.")}
    out["deep_prompt.key"], out["deep_prompt.value"] = prefix.collapse()
    return out


@dataclass
class Served:
    """A trained task built for decoding (:meth:`TrainedTask.build`)."""

    name: str                                  # how outputs name it (the path the user gave)
    trained: "TrainedTask"
    model: PromptedULM
    dictionary: object
    verbalizer: Verbalizer
    task: Task
    quantizer: Optional[KMeansQuantizer]       # None: a unit-level run
    lm_fingerprint: str                        # weights the model decodes with (FT-LM: its own fine-tuned LM)

    @property
    def budget(self) -> int:
        return self.trained.decoding.max_new_tokens

    def label(self, generated) -> Tuple[Optional[str], ...]:
        return tuple(self.verbalizer.decode(self.dictionary.decode(list(generated))))


@dataclass
class TrainedTask:
    """A trained PT / FT-LM run (see the module docstring)."""

    task: str
    method: str                                # pt | ftlm
    lm: LMRef
    prompt: dict                               # PromptConfig fields, reparam 0 (state holds plain prompts)
    state: Dict[str, torch.Tensor]             # the PromptedULM's trainable state (FT-LM: the whole LM)
    verbalizer: dict                           # Verbalizer.to_dict
    decoding: Decoding
    task_options: dict = field(default_factory=dict)   # the task's datarc (without LOADER_KEYS); {}: unit-level
    audio: Optional[AudioUnits] = None         # None: trained on unit files
    trainable_params: int = 0
    stored_params: int = 0
    origin: str = ""                           # what wrote it

    # ------------------------------------------------------------------ files
    def save(self, directory) -> Path:
        """``DIR/trained_task.pt`` (tensors), then ``DIR/trained_task.json`` (the rest), each written atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"state": self.state}
        meta = {"format": FORMAT, "task": self.task, "task_options": self.task_options, "method": self.method,
                "lm": self.lm.to_dict(), "prompt": self.prompt, "verbalizer": self.verbalizer,
                "decoding": asdict(self.decoding), "audio": None, "trainable_params": self.trainable_params,
                "stored_params": self.stored_params, "origin": self.origin}
        if self.audio is not None:
            meta["audio"] = {"upstream": self.audio.upstream}
            tensors["centroids"] = self.audio.centroids
            if self.audio.featurizer:
                tensors["featurizer"] = self.audio.featurizer
        atomic_torch_save(tensors, d / TENSORS)
        atomic_write_text(d / JSON, json.dumps(meta, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory) -> "TrainedTask":
        d = Path(directory)
        meta = read_json(d / JSON, "a trained task's trained_task.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{d / JSON}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                  f"expected {FORMAT!r}; it was written by another version of s3prl-speechprompt")
        tensors = read_torch(d / TENSORS, "a trained task's tensors (trained_task.pt)",
                             is_expected=lambda t: isinstance(t, dict) and "state" in t)
        audio = None
        if meta.get("audio"):
            audio = AudioUnits(meta["audio"]["upstream"], tensors["centroids"], tensors.get("featurizer"))
        return cls(task=meta["task"], method=meta["method"], lm=LMRef.from_dict(meta["lm"]), prompt=meta["prompt"],
                   state=tensors["state"], verbalizer=meta["verbalizer"], decoding=Decoding(**meta["decoding"]),
                   task_options=meta.get("task_options") or {}, audio=audio,
                   trainable_params=meta["trainable_params"], stored_params=meta["stored_params"],
                   origin=meta.get("origin", str(d)))

    # ------------------------------------------------------------------ runs from before
    @classmethod
    def from_runner_checkpoint(cls, ckpt, origin: Optional[str] = None) -> "TrainedTask":
        """The trained task of an s3prl runner checkpoint of the prompt expert (a ``.ckpt`` path, or the dict the
        runner saves): ``Args`` (upstream), ``Config.downstream_expert`` (task, LM, prompt, decoding), the
        ``Featurizer`` entry and the expert's state (``model.*``; k-means, verbalizer, LM fingerprint in
        ``_extra_state``)."""
        if not isinstance(ckpt, dict):
            origin = origin or str(ckpt)
            ckpt = read_runner_checkpoint(ckpt)
        origin = origin or "runner checkpoint"
        state = dict(ckpt["Downstream"])
        extra = state.pop("_extra_state", None)
        if not isinstance(extra, dict) or "centroids" not in extra:
            kind = extra.get("kind") if isinstance(extra, dict) else None
            what = f"a SUPERB {kind} baseline" if kind else \
                f"not a speechprompt prompt run (-d {getattr(ckpt['Args'], 'downstream', '?')})"
            raise CheckpointError(f"{origin}: {what}; predict serves PT / FT-LM checkpoints (-d speechprompt_<task> "
                                  f"or _ftlm). Baselines: speechprompt-run-downstream -m inference -t FILE -e {origin}")
        de = dict(ckpt["Config"]["downstream_expert"])
        method = de.get("method", "pt")
        options = {k: v for k, v in (de.get("datarc") or {}).items() if k not in LOADER_KEYS}
        task = make_task(de["task"], options)               # readers are lazy: the corpus need not exist here
        verbalizer = Verbalizer.from_dict(extra["verbalizer"])
        pcfg = runner_prompt_config(method, de.get("prompt"), task, verbalizer)
        own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        trainable = sum(v.numel() for k, v in own.items() if k != "deep_prompt.start")
        if pcfg.reparam:
            own = _collapse(own)
        args = vars(ckpt["Args"])
        return cls(task=de["task"], method=method, lm=LMRef(str(de["ulm"]), str(extra.get("lm_fingerprint"))),
                   prompt={**pcfg.to_dict(), "reparam": 0}, state=own, verbalizer=verbalizer.to_dict(),
                   decoding=Decoding(decoding_budget(de.get("max_new_tokens"), verbalizer, task),
                                     int(de.get("beam_size", 1)), str(de.get("precision", "fp32"))),
                   task_options=options,
                   audio=AudioUnits({k: args.get(k) for k in UPSTREAM_ARGS}, extra["centroids"],
                                    dict(ckpt.get("Featurizer") or {}) or None),
                   trainable_params=trainable, stored_params=sum(v.numel() for v in own.values()), origin=origin)

    @classmethod
    def from_engine_dir(cls, exp) -> "TrainedTask":
        """The trained task of a ``speechprompt train`` PT / FT-LM directory: config.json + prompt.pt + verbal.json."""
        exp = Path(exp)
        path = exp / "config.json"
        if not path.is_file():
            raise MissingFileError(f"{path}: missing; --exp must be a directory written by `speechprompt train`")
        config = read_json(path, "the config.json of `speechprompt train`")
        if config["method"] not in ("pt", "ftlm"):
            raise CheckpointError(f"{exp}: a {config['method']} baseline, not a prompt run; it has no trained task "
                                  f"(evaluate it with `speechprompt evaluate --exp {exp}`)")
        ck = read_torch(exp / "prompt.pt", "the prompt.pt of `speechprompt train`",
                        is_expected=lambda c: isinstance(c, dict) and "state_dict" in c)
        # prompt.pt holds reparameterised prefixes collapsed to plain ones
        prompt = PromptConfig(**{**config["prompt_config"], "reparam": 0}).to_dict()
        return cls(task=config["task"], method=config["method"], lm=LMRef(config["ulm"], config["ulm_sha256"]),
                   prompt=prompt, state=ck["state_dict"], verbalizer=Verbalizer.load(exp / "verbal.json").to_dict(),
                   decoding=Decoding(config["max_label_tokens"] * config["code_length"] + 1),
                   trainable_params=config["trainable_params"],
                   stored_params=config.get("stored_params", config["trainable_params"]), origin=str(exp))

    @classmethod
    def find(cls, path) -> "TrainedTask":
        """A trained task from a trained_task directory, a run directory holding ``trained_task/``, a runner
        ``.ckpt`` or a ``speechprompt train`` directory from before ``trained_task/``."""
        p = Path(path)
        if p.is_file():
            return cls.from_runner_checkpoint(p)
        if not p.is_dir():
            raise MissingFileError(f"{p}: no such file or directory (give a run directory, its trained_task/, or an "
                                   f"s3prl runner checkpoint such as result/downstream/<expname>/dev-best.ckpt)")
        for d in (p, p / "trained_task"):
            if (d / JSON).is_file():
                return cls.load(d)
        if (p / "config.json").is_file():
            return cls.from_engine_dir(p)
        if (p / "dev-best.ckpt").is_file():
            return cls.from_runner_checkpoint(p / "dev-best.ckpt")
        raise CheckpointError(f"{p}: no trained task here (no {JSON}, trained_task/, config.json of `speechprompt "
                              f"train` or dev-best.ckpt of the runner); give the directory of a PT / FT-LM run")

    # ------------------------------------------------------------------ decoding
    def build(self, lms: Optional[LMCache] = None, ulm: Optional[str] = None, device: str = "cpu",
              name: Optional[str] = None, flag: str = "--ulm") -> Served:
        """The PromptedULM (eval mode) + dictionary + verbalizer + task + k-means of this run. PT runs on the same
        weights share one LM from ``lms``; an FT-LM run gets its own copy. ``ulm`` (given by ``flag``) replaces
        the recorded LM; its weights must be the ones trained on."""
        lms = lms or LMCache()
        source = ulm or self.lm.source
        pt = self.method == "pt"
        lm, dictionary, fp = lms.get(source, self.lm.family) if pt else LMCache.fresh(source, self.lm.family)
        model = PromptedULM(lm, PromptConfig(**{**self.prompt, "method": self.method}))
        check_lm(self.lm, lm, fp, source, what=name or self.origin, flag=flag if ulm else None)
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        # what training changed must all be there; the frozen LM (PT) and the tied output projection (FT-LM: it is
        # the embedding, stored once) are not stored
        missing = sorted(set(model.trainable_parameters()) & set(missing))
        if missing or unexpected:
            raise CheckpointError(f"{name or self.origin}: its trained state does not fit the model its config "
                                  f"builds (missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.to(device).eval()
        if not pt:
            fp = weights_fingerprint(model.lm.state_dict())
        quantizer = KMeansQuantizer(self.audio.centroids).to(device) if self.audio is not None else None
        return Served(name=name or self.origin, trained=self, model=model, dictionary=dictionary,
                      verbalizer=Verbalizer.from_dict(self.verbalizer), task=make_task(self.task, self.task_options),
                      quantizer=quantizer, lm_fingerprint=fp)


def read_runner_checkpoint(path) -> dict:
    """A runner checkpoint's dict, read with ``weights_only=True`` (no code from the file runs)."""
    from s3prl_speechprompt import compat

    compat.apply()                                   # allows s3prl's argparse.Namespace under weights_only
    return read_torch(path, RUNNER_CHECKPOINT, is_expected=is_runner_checkpoint, allow=(argparse.Namespace,))
