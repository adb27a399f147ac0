"""Datasets and samplers handed to s3prl's runner; defined here (a real module) so spawn workers can unpickle them."""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from s3prl_speechprompt.tasks.base import Item, read_item_audio


class ItemDataset(Dataset):
    """``(wav, label_tokens, id)`` per utterance; the runner takes the first element as the wav."""

    def __init__(self, items: Sequence[Item]):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        it = self.items[i]
        return read_item_audio(it), it.labels, it.id


def collate(batch):
    wavs, labels, ids = zip(*batch)
    return list(wavs), list(labels), list(ids)


class EpochSampler(Sampler):
    """The training order of one epoch, a pure function of (seed, epoch): class-balanced sampling with
    replacement (SUPERB's KS ``WeightedRandomSampler``) or a permutation; DDP-aware (every rank draws the
    same order and keeps its own stride, what s3prl's catalyst ``DistributedSamplerWrapper`` does, without
    catalyst); ``skip`` drops the first indices so a resumed run continues mid-epoch where it stopped.
    """

    def __init__(self, items: Sequence[Item], seed: int = 0, balanced: bool = True, rank: int = 0,
                 world_size: int = 1, skip: int = 0):
        self.n = len(items)
        self.weights = None
        if balanced:
            counts = {}
            for it in items:
                counts[it.labels] = counts.get(it.labels, 0) + 1
            self.weights = torch.tensor([1.0 / counts[it.labels] for it in items], dtype=torch.double)
        self.seed, self.rank, self.world, self.epoch, self.skip = seed, rank, world_size, 0, skip
        self.per_rank = math.ceil(self.n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return max(self.per_rank - self.skip, 0)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.world
        if self.weights is not None:
            order: List[int] = torch.multinomial(self.weights, total, True, generator=g).tolist()
        else:
            order = torch.randperm(self.n, generator=g).tolist()
            order = (order * (total // max(self.n, 1) + 1))[:total]       # pad so every rank gets per_rank
        return iter(order[self.rank::self.world][self.skip:])
