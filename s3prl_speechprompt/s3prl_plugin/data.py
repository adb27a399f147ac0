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


class BalancedSampler(Sampler):
    """Class-balanced sampling with replacement (SUPERB's KS ``WeightedRandomSampler``), DDP-aware.

    Every rank draws the same seeded epoch-dependent sample and keeps its own stride of it, which is what
    s3prl's catalyst ``DistributedSamplerWrapper`` does, without catalyst.
    """

    def __init__(self, items: Sequence[Item], seed: int = 0, rank: int = 0, world_size: int = 1):
        counts = {}
        for it in items:
            counts[it.labels] = counts.get(it.labels, 0) + 1
        self.weights = torch.tensor([1.0 / counts[it.labels] for it in items], dtype=torch.double)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world_size, 0
        self.per_rank = math.ceil(len(items) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        picks: List[int] = torch.multinomial(self.weights, self.per_rank * self.world, True, generator=g).tolist()
        return iter(picks[self.rank::self.world])
