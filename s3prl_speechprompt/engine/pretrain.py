"""Pretrain a GSLM-style unit LM on the source units of a unit file, on CPU.

GSLM's uLM recipe, scaled down: each utterance is one sequence, ``</s> u1..un`` -> ``u1..un </s>``
(fairseq ``language_modeling`` with ``--sample-break-mode eos``), batches by token count, Adam
(0.9, 0.98), inverse-sqrt schedule after a linear warmup, dropout 0.1, clip-norm 1.0. Labels in the
file are ignored. Checkpoints are written with ``save_ulm`` (fairseq's container + dict.txt), so the
result loads in fairseq and in ``load_ulm``; ``checkpoint_last.pt`` also carries the optimizer state
(``last_optimizer_state``) and the data position and RNG (``extra_state['engine']``) for ``--resume``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from s3prl_speechprompt import precision
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, encode_sources, read_records
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
        """fairseq inverse_sqrt: linear warmup to ``lr``, then lr * sqrt(warmup / update)."""
        w = max(self.warmup_updates, 1)
        if update < w:
            return self.warmup_init_lr + (self.lr - self.warmup_init_lr) * update / w
        return self.lr * math.sqrt(w / update)


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


@torch.no_grad()
def _valid_loss(model, seqs, max_tokens) -> float:
    model.eval()
    total, n = 0.0, 0
    for idx in bucketed_batches([len(s) + 1 for s in seqs], max_sentences=10**9, max_tokens=max_tokens * 2,
                                shuffle=False):
        inputs, targets = _lm_batch(seqs, idx)
        total += float(_nll(model, inputs, targets))
        n += int(targets.ne(PAD).sum())
    model.train()
    return total / max(n, 1)


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
            raise ValueError(f"{last}: has no engine state (extra_state['engine']); it was not written by "
                             f"`speechprompt pretrain-ulm`, so it cannot be resumed. Use a fresh --out")
        if saved["config"]["arch"] != cfg.arch:
            raise ValueError(f"{last}: was trained with --arch {saved['config']['arch']}, not {cfg.arch}; "
                             f"resume with the same --arch or use a fresh --out")
        dictionary = Dictionary.load(out / "dict.txt")
    else:
        dictionary = build_dictionary(dict_path, train_records + valid_records)
    train = encode_sources(train_records, dictionary, train_path)
    valid = encode_sources(valid_records, dictionary, valid_path) if valid_records else []

    torch.manual_seed(cfg.seed)
    model = UnitLM(ULMConfig.from_arch(cfg.arch, len(dictionary), dropout=cfg.dropout,
                                       attention_dropout=cfg.dropout))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    scaler = precision.grad_scaler("fp32")          # pretraining runs in fp32: a pass-through scaler
    prog = {"updates": 0, "epoch": 0, "batch": 0, "best_loss": None, "last_valid": None, "seconds": 0.0}
    if state is not None:
        sd, _ = upgrade_state_dict(state["model"])
        model.load_state_dict(sd)
        opt.load_state_dict(state["last_optimizer_state"])
        prog = dict(state["extra_state"]["engine"]["progress"])
        torch.set_rng_state(state["extra_state"]["engine"]["rng"])
        log(f"pretrain-ulm: resumed from {last} at update {prog['updates']}")
    out.mkdir(parents=True, exist_ok=True)
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(out / "tb"))
    n_tokens = sum(len(s) + 1 for s in train)
    log(f"pretrain-ulm: {cfg.arch} ({model.num_parameters():,} parameters), {len(dictionary.units)} units, "
        f"{len(train)} train utterances / {n_tokens:,} tokens, {len(valid)} valid, {cfg.max_updates} updates")

    def save(name, extra_best=False):
        engine_state = {"progress": dict(prog), "rng": torch.get_rng_state(), "config": asdict(cfg)}
        extra = {"train_iterator": {"epoch": prog["epoch"] + 1}, "engine": engine_state}
        save_ulm(model, dictionary, out, name=name, extra_state=extra, num_updates=prog["updates"],
                 optimizer_state=opt.state_dict() if name == "checkpoint_last.pt" else None)

    def validate():
        loss = _valid_loss(model, valid, cfg.max_tokens) if valid else None
        prog["last_valid"] = loss
        if loss is not None:
            writer.add_scalar("valid/loss", loss, prog["updates"])
        if prog["best_loss"] is None or (loss is not None and loss < prog["best_loss"]) or loss is None:
            prog["best_loss"] = loss if loss is not None else prog["best_loss"]
            save("checkpoint_best.pt")
        save("checkpoint_last.pt")
        return loss

    model.train()
    lengths = [len(s) + 1 for s in train]
    bar = tqdm(total=cfg.max_updates, initial=prog["updates"], desc="pretrain-ulm", unit="upd", mininterval=5)
    t0 = time.time() - prog["seconds"]
    while prog["updates"] < cfg.max_updates:
        batches = bucketed_batches(lengths, max_sentences=10**9, max_tokens=cfg.max_tokens, seed=cfg.seed,
                                   epoch=prog["epoch"])
        while prog["batch"] < len(batches) and prog["updates"] < cfg.max_updates:
            inputs, targets = _lm_batch(train, batches[prog["batch"]])
            lr = cfg.lr_at(prog["updates"] + 1)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = _nll(model, inputs, targets) / targets.ne(PAD).sum()
            opt.zero_grad(set_to_none=True)
            precision.optimizer_step(loss, opt, model.parameters(), scaler, cfg.clip_norm)
            prog["updates"] += 1
            prog["batch"] += 1
            bar.update(1)
            if prog["updates"] % 10 == 0:
                writer.add_scalar("train/loss", loss.item(), prog["updates"])
                writer.add_scalar("train/lr", lr, prog["updates"])
                bar.set_postfix(loss=f"{loss.item():.3f}", valid=prog["last_valid"] and f"{prog['last_valid']:.3f}")
            if prog["updates"] % cfg.valid_interval == 0 and prog["updates"] < cfg.max_updates:
                prog["seconds"] = time.time() - t0
                validate()
        if prog["batch"] >= len(batches):
            prog["epoch"] += 1
            prog["batch"] = 0
    bar.close()
    prog["seconds"] = time.time() - t0
    final = validate()
    writer.close()
    summary = {"out": str(out), "updates": prog["updates"], "epochs": round(prog["epoch"] + prog["batch"] / max(
        len(bucketed_batches(lengths, max_sentences=10**9, max_tokens=cfg.max_tokens, seed=cfg.seed,
                             epoch=prog["epoch"])), 1), 3),
               "valid_loss": final, "best_valid_loss": prog["best_loss"], "parameters": model.num_parameters(),
               "arch": cfg.arch, "seconds": round(prog["seconds"], 1)}
    return summary
