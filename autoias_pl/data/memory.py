"""A LightningDataModule over rows held in memory (`CTRBatch`es): the slice of `CTRDataModule`'s API the search
uses, for tests, the whole-space proof and the benchmarks that time the search step without parquet reads.

Like `CTRDataModule`, the order is a function of (seed, epoch); under DDP every rank gets the same number of
full training batches and its own share of the validation rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, IterableDataset

from autoias_pl.data.batch import CTRBatch


class MemoryBatches(IterableDataset):
    """Batches of in-memory rows: shuffled from (seed, epoch_fn()) when `shuffle`, this rank's share only,
    the same number of full batches on every rank; `endless` restarts with a new order each pass."""

    def __init__(self, rows: CTRBatch, batch_size: int, seed: int, epoch_fn: Callable[[], int],
                 shuffle: bool = True, endless: bool = False, rank: int = 0, world: int = 1) -> None:
        self.rows, self.batch_size, self.seed, self.epoch_fn = rows, batch_size, seed, epoch_fn
        self.shuffle, self.endless, self.rank, self.world = shuffle, endless, rank, world

    def __len__(self) -> int:
        if self.endless:  # unsized, so CombinedLoader("min_size") follows the train loader only
            raise TypeError("an endless stream has no length")
        return self._per_pass()

    def _per_pass(self) -> int:
        return self.rows.labels.numel() // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[CTRBatch]:
        n, pass_ = self.rows.labels.numel(), 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_fn() * 1009 + pass_)
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)  # (R,)
            for b in range(self._per_pass()):
                idx = order[(b * self.world + self.rank) * self.batch_size:][: self.batch_size]  # (B,)
                yield CTRBatch(self.rows.features[idx], self.rows.labels[idx])
            if not self.endless:
                return
            pass_ += 1


class MemoryDataModule(LightningDataModule):
    """The slice of CTRDataModule's API the search uses, over in-memory rows (tests and the proof)."""

    def __init__(self, train: CTRBatch, val: CTRBatch, batch_size: int = 256, seed: int = 0,
                 reward_stream: bool = False, reward_batch_size: int = 256, eval_batch_size: int = 4096) -> None:
        super().__init__()
        self.train, self.val, self.batch_size, self.seed = train, val, batch_size, seed
        self.reward_stream, self.reward_batch_size, self.eval_batch_size = reward_stream, reward_batch_size, eval_batch_size

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        rank, world = self._rank()
        train = DataLoader(MemoryBatches(self.train, self.batch_size, self.seed, self._epoch, True, False, rank, world),
                           batch_size=None)
        if not self.reward_stream:
            return train
        reward = DataLoader(MemoryBatches(self.val, self.reward_batch_size, self.seed + 1, self._epoch, True, True,
                                          rank, world), batch_size=None)
        return CombinedLoader({"train": train, "reward": reward}, "min_size")

    def val_dataloader(self) -> DataLoader:
        """Every validation row once: rank r takes rows r::world, in batches (the last one partial)."""
        rank, world = self._rank()
        x, y = self.val.features[rank::world], self.val.labels[rank::world]
        step = self.eval_batch_size
        return DataLoader([CTRBatch(x[i:i + step], y[i:i + step]) for i in range(0, len(y), step)], batch_size=None)

    def reward_set(self, rows: int) -> CTRBatch:
        return CTRBatch(self.val.features[:rows], self.val.labels[:rows])
