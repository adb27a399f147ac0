"""Unit BLSTM classifier: the from-scratch baseline on the same unit sequences PT/FT-LM see.

embedding -> 2-layer BLSTM -> mean pool over the real frames -> one linear head per label slot
(KS: one head over 12 classes; IC: three heads, action/object/location, a sample is right only
if all three are). Trained by the same loop as PT/FT-LM (engine.loop, through engine.trainer.fit_engine) and scored by
the same ``speechprompt evaluate``. Needs fixed-length labels (classification tasks).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s3prl_speechprompt.atomic import atomic_torch_save
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, read_records
from s3prl_speechprompt.engine.loop import FORMAT, Job, mean_loss
from s3prl_speechprompt.engine.trainer import TrainConfig, check_resume_config, fit_engine, lr_schedule, write_config
from s3prl_speechprompt.errors import InputFileError
from s3prl_speechprompt.prompt.verbalizer import natural_order
from s3prl_speechprompt.readers import read_torch

PAD_ID, UNK_ID = 0, 1


class UnitBLSTM(nn.Module):
    def __init__(self, n_symbols: int, classes_per_slot: Sequence[int], embed: int = 256, hidden: int = 256,
                 layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, embed, padding_idx=PAD_ID)
        self.blstm = nn.LSTM(embed, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                             dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(2 * hidden, n) for n in classes_per_slot)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> List[torch.Tensor]:
        """tokens (B, T) padded with 0, lengths (B,) -> one (B, n_classes) logit tensor per slot."""
        x = self.dropout(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.blstm(packed)[0], batch_first=True, total_length=tokens.size(1))
        mask = (torch.arange(tokens.size(1)).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
        pooled = self.dropout((h * mask).sum(1) / lengths.unsqueeze(1).clamp(min=1))
        return [head(pooled) for head in self.heads]


class Vocab:
    """Unit symbols -> ids (0 pad, 1 unknown) and per-slot label tables, all taken from the train split."""

    def __init__(self, units: List[str], slots: List[List[str]]):
        self.units, self.slots = units, slots
        self.unit_id = {u: i + 2 for i, u in enumerate(units)}
        self.label_id = [{l: i for i, l in enumerate(s)} for s in slots]

    @classmethod
    def from_records(cls, records, path) -> "Vocab":
        k = {len(r.labels) for r in records}
        if len(k) != 1 or 0 in k:
            raise InputFileError(f"{path}: the BLSTM baseline classifies a fixed number of label tokens per utterance, "
                             f"but label lengths here are {sorted(k)[:5]}; use --method pt/ftlm for sequence labels")
        n = k.pop()
        return cls(natural_order({u for r in records for u in r.units}),
                   [natural_order({r.labels[j] for r in records}) for j in range(n)])

    def tokens(self, records):
        return [[self.unit_id.get(u, UNK_ID) for u in r.units] for r in records]

    def labels(self, records, path):
        out = []
        for r in records:
            if len(r.labels) != len(self.slots):
                raise InputFileError(f"{path}: utterance {r.id} has {len(r.labels)} label tokens, expected "
                                 f"{len(self.slots)}")
            out.append([self.label_id[j].get(l, -100) for j, l in enumerate(r.labels)])   # unseen: ignored
        return out


def _batch(seqs, idx):
    lengths = torch.tensor([len(seqs[i]) for i in idx])
    tokens = torch.full((len(idx), int(lengths.max())), PAD_ID, dtype=torch.long)
    for r, i in enumerate(idx):
        tokens[r, :len(seqs[i])] = torch.as_tensor(seqs[i])
    return tokens, lengths


def build_model(meta: dict) -> UnitBLSTM:
    return UnitBLSTM(len(meta["units"]) + 2, [len(s) for s in meta["slots"]], embed=meta["embed"],
                     hidden=meta["hidden"], dropout=meta["dropout"])


class BLSTMJob(Job):
    """The BLSTM's cross entropy per label slot, averaged over the labels seen in training; the best model in
    EXP/model.pt."""

    def __init__(self, model: UnitBLSTM, cfg: TrainConfig, exp: Path, meta: dict, train, valid):
        self.model, self.cfg, self.exp, self.meta = model, cfg, exp, meta
        (self.tr_x, self.tr_y), (self.va_x, self.va_y) = train, valid
        self.parameters = list(model.parameters())
        self.va_batches = bucketed_batches([len(x) for x in self.va_x], max_sentences=256, shuffle=False)

    def batches(self, epoch):
        return bucketed_batches([len(x) for x in self.tr_x], max_sentences=self.cfg.batch_size, seed=self.cfg.seed,
                                epoch=epoch)

    def _summed(self, x, y, idx):
        tokens, lengths = _batch(x, idx)
        logits = self.model(tokens, lengths)
        target = y[idx]
        return sum(F.cross_entropy(lg, target[:, j], ignore_index=-100, reduction="sum")
                   for j, lg in enumerate(logits)), int(target.ne(-100).sum())

    def loss(self, batch):
        self.model.train()
        s, n = self._summed(self.tr_x, self.tr_y, batch)
        return s / max(n, 1)

    def validate(self):
        return mean_loss(self.model, self.va_batches, lambda idx: self._summed(self.va_x, self.va_y, idx))

    def state(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state(self, state):
        self.model.load_state_dict(state)

    def save_best(self, progress):
        atomic_torch_save({"format": FORMAT, "method": "blstm", "meta": json.dumps(self.meta),
                           "state_dict": self.state()}, self.exp / "model.pt")


def train_blstm(train_path, valid_path, exp, cfg: TrainConfig, resume=False, log=print) -> dict:
    exp = Path(exp)
    torch.set_num_threads(cfg.threads or default_threads())
    train_rec, valid_rec = read_records(train_path, "training"), read_records(valid_path, "dev")
    vocab = Vocab.from_records(train_rec, train_path)
    tr_x, tr_y = vocab.tokens(train_rec), torch.tensor(vocab.labels(train_rec, train_path))
    va_x, va_y = vocab.tokens(valid_rec), torch.tensor(vocab.labels(valid_rec, valid_path))
    meta = {"units": vocab.units, "slots": vocab.slots, "embed": cfg.blstm_embed, "hidden": cfg.blstm_hidden,
            "dropout": cfg.dropout if cfg.dropout is not None else 0.2}
    torch.manual_seed(cfg.seed)
    model = build_model(meta)
    n_params = sum(p.numel() for p in model.parameters())
    lr = cfg.lr if cfg.lr is not None else 1e-3
    exp.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume_config(exp, cfg)
    write_config(exp, {"format": FORMAT, "task": cfg.task, "method": "blstm", "train": str(train_path),
                       "valid": str(valid_path), "train_config": asdict(cfg), "blstm": {k: v for k, v in meta.items()
                       if k not in ("units", "slots")}, "effective": {"lr": lr}, "trainable_params": n_params,
                       "max_label_tokens": len(vocab.slots)})
    log(f"train: blstm on {cfg.task}: {n_params:,} parameters, {len(vocab.units)} units, "
        f"{[len(s) for s in vocab.slots]} classes per slot, {len(tr_x)} train / {len(va_x)} dev utterances")

    job = BLSTMJob(model, cfg, exp, meta, (tr_x, tr_y), (va_x, va_y))
    summary = fit_engine(job, exp, cfg, lr_schedule(cfg, lr, warmup=0), resume=resume, log=log)
    summary.update(trainable_params=n_params, exp=str(exp))
    return summary


def load_blstm(exp: Path):
    ck = read_torch(exp / "model.pt", "the unit BLSTM's model.pt (written by `speechprompt train --method blstm`)",
                    is_expected=lambda c: isinstance(c, dict) and {"meta", "state_dict"} <= set(c))
    meta = json.loads(ck["meta"])
    model = build_model(meta)
    model.load_state_dict(ck["state_dict"])
    return model.eval(), Vocab(meta["units"], meta["slots"])


@torch.no_grad()
def predict_blstm(model: UnitBLSTM, vocab: Vocab, records, batch_size: int = 256) -> List[List[str]]:
    seqs = vocab.tokens(records)
    out: List[List[str]] = [[] for _ in records]
    for idx in bucketed_batches([len(s) for s in seqs], max_sentences=batch_size, shuffle=False):
        tokens, lengths = _batch(seqs, idx)
        preds = [lg.argmax(-1).tolist() for lg in model(tokens, lengths)]
        for r, i in enumerate(idx):
            out[i] = [vocab.slots[j][preds[j][r]] for j in range(len(preds))]
    return out
