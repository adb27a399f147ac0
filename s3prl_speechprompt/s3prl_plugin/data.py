"""Datasets and samplers handed to s3prl's runner; defined here (a real module) so spawn workers can unpickle them."""
from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path
from typing import List, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from s3prl_speechprompt.errors import InputFileError
from s3prl_speechprompt.tasks.audio import audit_split
from s3prl_speechprompt.tasks.base import Item, get_task, read_item_audio
from s3prl_speechprompt.trained import LOADER_KEYS
from s3prl_speechprompt.ulm.checkpoint import load_container


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
    """The training order of one epoch, a pure function of (seed, epoch): class-balanced sampling with replacement
    (SUPERB's KS ``WeightedRandomSampler``) or a permutation; DDP-aware as s3prl's catalyst
    ``DistributedSamplerWrapper`` (every rank draws the same order, keeps its stride); ``skip`` drops the first
    indices so a resumed run continues mid-epoch.
    """

    def __init__(self, items: Sequence[Item], seed: int = 0, balanced: bool = True, rank: int = 0,
                 world_size: int = 1, skip: int = 0):
        self.n = len(items)
        self.weights = None
        if balanced:
            counts = Counter(it.labels for it in items)
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


def saved_extra_state(init_ckpt, key: str):
    """An expert's ``_extra_state`` in the checkpoint the runner resumes / evaluates (``-a``/``-e``/``-i``),
    recognised by ``key``; None for a fresh run."""
    if not init_ckpt:
        return None
    ckpt = load_container(init_ckpt)          # restricted: reading a checkpoint never runs code from it
    extra = (ckpt.get("Downstream") or {}).get("_extra_state")
    return extra if isinstance(extra, dict) and key in extra else None


class SplitData:
    """Splits and DataLoaders of an expert (held by the prompt and the baseline expert as ``expert.data``).

    ``datarc``: the task's keys + :data:`~s3prl_speechprompt.trained.LOADER_KEYS`; ``kwargs``: what s3prl's runner
    passed the expert. The training sampler skips the batches the expert's ``train_progress`` buffer ``(epoch,
    batches consumed)`` says this epoch already consumed.
    """

    def __init__(self, task: str, datarc: dict, expdir, kwargs: dict, balanced_sampling: bool, bad_audio: str):
        self.expdir = Path(expdir)
        self.kwargs = dict(kwargs)
        self.mode = self.kwargs.get("mode") or "train"
        self.seed = int(self.kwargs.get("seed") or 0)
        self.balanced_sampling, self.bad_audio = balanced_sampling, bad_audio
        datarc = dict(datarc)
        self.loader_rc = {k: datarc.pop(k) for k in LOADER_KEYS if k in datarc}
        self.task = get_task(task)(**datarc)
        self.items = {}

    def check_run_splits(self, known=None) -> None:
        """Read and check, before the first training step, every split this run will touch (train and the
        runner's ``eval_dataloaders``, or ``-t`` when evaluating), so bad audio or unseen labels in the
        test set stop the run at start instead of after hours of training. ``known``: the label tokens the
        expert can output (None: any)."""
        if self.mode == "inference":      # -t is an audio file there, not a split; nothing of the corpus is read
            return
        if self.mode == "train":
            splits = ["train"] + list((self.kwargs.get("runner") or {}).get("eval_dataloaders") or [])
        else:
            splits = [self.kwargs.get("evaluate_split") or "test"]
        for split in dict.fromkeys(splits):
            self.task.check_split(split)
            items = self.split(split)
            if known is None or split == "train":
                continue
            unseen = Counter(t for it in items for t in it.labels if t not in known)
            if unseen:
                listed = ", ".join(f"{t!r} ({n}x)" for t, n in sorted(unseen.items(), key=lambda kv: -kv[1])[:10])
                raise InputFileError(f"split {split!r} has label(s) never seen in the training split: {listed}. "
                                 f"The model can never output them; add training utterances with these labels, or "
                                 f"remove those utterances from {split!r}")

    @staticmethod
    def load_audio(filepath) -> torch.Tensor:
        """s3prl's ``-m inference -t FILE`` reads the file through this hook: 16 kHz mono (resampled /
        averaged like the corpora), and an unreadable file is an error naming it."""
        from s3prl_speechprompt.tasks.audio import read_audio_file
        return torch.from_numpy(read_audio_file(filepath))

    @staticmethod
    def _rank_world():
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)

    @property
    def leader(self) -> bool:
        return self._rank_world()[0] == 0

    def split(self, split: str) -> List[Item]:
        """The split's items, read once and audio-checked (bad files: error or skipped and counted)."""
        if split not in self.items:
            leader = self.leader
            self.items[split], _ = audit_split(self.task.read_split(split), split, self.bad_audio,
                                               report_dir=self.expdir if leader else None, progress=leader)
        return self.items[split]

    def get_dataloader(self, split: str, train_progress: torch.Tensor, epoch: int = 0):
        items = self.split(split)
        rank, world = self._rank_world()
        train = split == "train"
        bs = self.loader_rc.get("batch_size", 32) if train else self.loader_rc.get("eval_batch_size", 32)
        sampler = None
        if train:
            # s3prl restarts an epoch from its first batch on resume; skipping the batches this epoch already
            # consumed (counted in a checkpointed buffer) makes `-a` continue exactly where the run stopped
            done_epoch, done_batches = (int(v) for v in train_progress)
            skip = done_batches * bs if done_epoch == epoch else 0
            train_progress.copy_(torch.tensor([epoch, skip // bs]))
            sampler = EpochSampler(items, seed=self.seed, balanced=self.balanced_sampling,
                                   rank=rank, world_size=world, skip=skip)
            sampler.set_epoch(epoch)
        # its own generator: creating an iterator must not draw from the global RNG that dropout uses
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return DataLoader(ItemDataset(items), batch_size=bs, sampler=sampler, shuffle=False, generator=generator,
                          num_workers=self.loader_rc.get("num_workers", 0), collate_fn=collate, drop_last=False)

    @staticmethod
    def rng_state() -> dict:
        """The global RNG state, stored with each checkpoint: dropout draws from it, so a resumed run
        (`-a`) continues the very stream the interrupted one was using."""
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def restore_rng(state) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])

    @staticmethod
    def stored_bytes(module: torch.nn.Module) -> int:
        """Bytes of what a checkpoint stores for an expert (its state_dict, serialized)."""
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        return buf.tell()
