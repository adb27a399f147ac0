"""Pretrain a GSLM-style unit LM on the source units of a unit file, on CPU.

GSLM's uLM recipe, scaled down: one sequence per utterance, ``</s> u1..un`` -> ``u1..un </s>`` (fairseq
``language_modeling``, ``--sample-break-mode eos``), batches by token count, Adam (0.9, 0.98), inverse-sqrt after a
linear warmup, dropout 0.1, clip-norm 1.0; labels are ignored. ``save_ulm`` writes fairseq's container + dict.txt
(loads in fairseq and ``load_ulm``); ``checkpoint_last.pt`` also carries the optimizer state and the data position
and RNG (``extra_state['engine']``) for ``--resume``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from s3prl_speechprompt import schedules
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, encode_sources, read_records
from s3prl_speechprompt.engine.loop import Checkpoint, Job, Progress, Saved, Settings, fit, mean_loss
from s3prl_speechprompt.errors import CheckpointError, ConfigError
from s3prl_speechprompt.prompt.verbalizer import natural_order
from s3prl_speechprompt.ulm.checkpoint import load_container, save_ulm, upgrade_state_dict
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

EOS, PAD = Dictionary.eos_index, Dictionary.pad_index


@dataclass
class PretrainConfig:
    """Defaults: ulm_small (4 layers, d=256, 3.2M parameters) trains at ~2,000 tokens/s on 2 idle CPU cores,
    so 600 updates of 4,096 tokens (~2 epochs of the 1.2M-token peer KS train split) take ~20 min."""

    arch: str = "ulm_small"
    max_updates: int = 600
    max_tokens: int = 4096           # GSLM: 4096 per GPU x 8 GPUs x update-freq 16
    lr: float = 2e-3                 # GSLM: 5e-4 at d=1024 over 500k updates; small + short runs take more
    warmup_updates: int = 100        # GSLM: 4000
    warmup_init_lr: float = 1e-7
    dropout: float = 0.1
    clip_norm: float = 1.0
    seed: int = 1
    valid_interval: int = 200        # updates between validations / checkpoints
    threads: int = 0                 # 0 = all cores this process may use

    def lr_at(self, update: int) -> float:
        """fairseq inverse_sqrt: linear warmup from ``warmup_init_lr`` to ``lr``, then lr * sqrt(warmup / update)."""
        return schedules.inverse_sqrt(update, self.lr, max(self.warmup_updates, 1), self.warmup_init_lr)


def _lm_batch(seqs, idx):
    T = max(len(seqs[i]) for i in idx) + 1
    inputs = torch.full((len(idx), T), PAD, dtype=torch.long)
    targets = torch.full((len(idx), T), PAD, dtype=torch.long)
    for r, i in enumerate(idx):
        s = torch.as_tensor(seqs[i], dtype=torch.long)
        inputs[r, 0], inputs[r, 1:len(s) + 1] = EOS, s
        targets[r, :len(s)], targets[r, len(s)] = s, EOS
    return inputs, targets


def _nll(model, inputs, targets):
    logits = model(inputs)
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=PAD, reduction="sum")


class Containers(Checkpoint):
    """pretrain-ulm's checkpoints: fairseq containers (:func:`save_ulm`), checkpoint_last.pt with the optimizer
    state (``last_optimizer_state``) and, in ``extra_state['engine']``, the progress, RNG and config."""

    def __init__(self, out: Path, model: UnitLM, dictionary: Dictionary, cfg: "PretrainConfig", loaded=None):
        super().__init__(out / "checkpoint_last.pt")
        self.out, self.model, self.dictionary, self.cfg, self.loaded = out, model, dictionary, cfg, loaded

    def save(self, name: str, progress: Progress, optimizer=None) -> None:
        engine_state = {"progress": progress.to_dict(), "rng": torch.get_rng_state(), "config": asdict(self.cfg)}
        extra = {"train_iterator": {"epoch": progress.epoch + 1}, "engine": engine_state}
        save_ulm(self.model, self.dictionary, self.out, name=name, extra_state=extra, num_updates=progress.updates,
                 optimizer_state=optimizer.state_dict() if optimizer is not None else None)

    def write(self, job, optimizer, scaler, progress) -> None:      # fp32 only: no scaler to keep
        self.save("checkpoint_last.pt", progress, optimizer)

    def read(self) -> Optional[Saved]:
        """The container :func:`pretrain_ulm` loaded (and checked) to take its dictionary."""
        if self.loaded is None:
            return None
        engine = self.loaded["extra_state"]["engine"]
        return Saved(self.loaded["model"], self.loaded["last_optimizer_state"], None,
                     Progress.from_dict(engine["progress"]), engine["rng"])


class LMJob(Job):
    """Next-unit prediction, ``</s> u1..un`` -> ``u1..un </s>``, loss per target token; batches by token count."""

    def __init__(self, model: UnitLM, cfg: "PretrainConfig", train, valid, containers: Containers):
        self.model, self.cfg, self.train, self.valid, self.containers = model, cfg, train, valid, containers
        self.parameters = list(model.parameters())
        self.lengths = [len(s) + 1 for s in train]
        self.va_batches = bucketed_batches([len(s) + 1 for s in valid], max_sentences=10**9,
                                           max_tokens=cfg.max_tokens * 2, shuffle=False)

    def batches(self, epoch):
        return bucketed_batches(self.lengths, max_sentences=10**9, max_tokens=self.cfg.max_tokens, seed=self.cfg.seed,
                                epoch=epoch)

    def loss(self, batch):
        self.model.train()
        inputs, targets = _lm_batch(self.train, batch)
        return _nll(self.model, inputs, targets) / targets.ne(PAD).sum()

    def validate(self):
        if not self.valid:
            return None

        def summed(idx):
            inputs, targets = _lm_batch(self.valid, idx)
            return _nll(self.model, inputs, targets), targets.ne(PAD).sum()
        return mean_loss(self.model, self.va_batches, summed)

    def state(self):
        return self.model.state_dict()

    def load_state(self, state):
        self.model.load_state_dict(upgrade_state_dict(state)[0])

    def save_best(self, progress):
        self.containers.save("checkpoint_best.pt", progress)


def build_dictionary(dict_path, records) -> Dictionary:
    """``--dict`` if given (keeps e.g. CPC's frequency order), else the units in natural order: integer
    units as ``0..max`` (so k-means ids unseen in training still have a row), others as seen."""
    if dict_path:
        return Dictionary.load(dict_path)
    seen = {u for r in records for u in r.units}
    if all(u.isdigit() for u in seen):
        return Dictionary([str(i) for i in range(max(int(u) for u in seen) + 1)])
    return Dictionary(natural_order(seen))


def pretrain_ulm(train_path, out_dir, valid_path=None, dict_path=None, cfg: Optional[PretrainConfig] = None,
                 resume: bool = False, log=print) -> dict:
    """Train (or continue) a unit LM; returns a summary dict (best/last valid loss, updates, seconds)."""
    cfg = cfg or PretrainConfig()
    out = Path(out_dir)
    torch.set_num_threads(cfg.threads or default_threads())
    train_records = read_records(train_path, "training")
    valid_records = read_records(valid_path, "validation") if valid_path else []
    last = out / "checkpoint_last.pt"
    state = None
    if resume and last.is_file():
        state = load_container(last)
        saved = (state.get("extra_state") or {}).get("engine")
        if not saved:
            raise CheckpointError(f"{last}: has no engine state (extra_state['engine']); it was not written by "
                             f"`speechprompt pretrain-ulm`, so it cannot be resumed. Use a fresh --out")
        if saved["config"]["arch"] != cfg.arch:
            raise ConfigError(f"{last}: was trained with --arch {saved['config']['arch']}, not {cfg.arch}; "
                             f"resume with the same --arch or use a fresh --out")
        dictionary = Dictionary.load(out / "dict.txt")
    else:
        dictionary = build_dictionary(dict_path, train_records + valid_records)
    train = encode_sources(train_records, dictionary, train_path)
    valid = encode_sources(valid_records, dictionary, valid_path) if valid_records else []

    torch.manual_seed(cfg.seed)
    model = UnitLM(ULMConfig.from_arch(cfg.arch, len(dictionary), dropout=cfg.dropout,
                                       attention_dropout=cfg.dropout))
    out.mkdir(parents=True, exist_ok=True)
    containers = Containers(out, model, dictionary, cfg, loaded=state)
    job = LMJob(model, cfg, train, valid, containers)
    n_tokens = sum(len(s) + 1 for s in train)
    log(f"pretrain-ulm: {cfg.arch} ({model.num_parameters():,} parameters), {len(dictionary.units)} units, "
        f"{len(train)} train utterances / {n_tokens:,} tokens, {len(valid)} valid, {cfg.max_updates} updates")
    settings = Settings(cfg.lr_at, name="pretrain-ulm", max_updates=cfg.max_updates, valid_interval=cfg.valid_interval,
                        validate_every_epoch=False, clip_norm=cfg.clip_norm, valid_name="valid")
    o = fit(job, settings, containers, out / "tb", resume=state is not None, log=log)
    return {"out": str(out), "updates": o.updates, "epochs": round(o.epochs, 3), "valid_loss": o.last_loss,
            "best_valid_loss": o.best_loss, "parameters": model.num_parameters(), "arch": cfg.arch,
            "seconds": o.seconds, "cpu_seconds": o.cpu_seconds}
