"""Tiny in-memory data for the search tests, and the 2-process DDP run that `test_search_ddp.py` launches.

Run as a script (Lightning's DDP launcher re-executes sys.argv, so it cannot run inside pytest):
    python tests/ddp_worker.py OUT_DIR [--batches 4]
Each rank writes OUT_DIR/rank{r}.pt: supernet and generator state, the reward baseline, the batch counter,
global_step and the hashes of every architecture it sampled (students and reward architectures).
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoias_pl.data.batch import CTRBatch  # noqa: E402
from autoias_pl.search import AutoIASSearch  # noqa: E402
from autoias_pl.space import Architecture  # noqa: E402


def tiny_data(rows: int, fields: int = 5, vocab: int = 16, seed: int = 0) -> CTRBatch:
    """Random ids with one first-order effect (field 0) and one planted pair (fields 1 x 2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(vocab, (rows, fields), generator=g)  # (R, n)
    first = torch.randn(vocab, generator=g)[x[:, 0]]  # (R,)
    pair = torch.randn(vocab, 2, generator=g)
    logit = first + 1.5 * (pair[x[:, 1]] * pair[x[:, 2]]).sum(1) - 1.0  # (R,)
    y = (torch.rand(rows, generator=g) < torch.sigmoid(logit)).float()  # (R,)
    return CTRBatch(x, y)


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


def arch_hash(arch: Architecture) -> str:
    return hashlib.sha256(repr(arch.choices).encode()).hexdigest()[:16]


class RecordingSearch(AutoIASSearch):
    """AutoIASSearch that records the hash of every architecture it samples (students and rewards)."""

    def __init__(self, *args, **kwargs) -> None:  # test helper only; the real module takes typed configs
        super().__init__(*args, **kwargs)
        self.sampled: list[str] = []
        sample = self.generator.sample

        def recording_sample(n: int, rng: torch.Generator):
            out = sample(n, rng)
            self.sampled += [arch_hash(a) for a in out.architectures]
            return out

        self.generator.sample = recording_sample  # type: ignore[method-assign]

    def sample_students(self, step: int) -> list[Architecture]:
        archs = super().sample_students(step)
        if not self.proposer.learns or step < self.warmup_batches:  # uniform draws (generator draws: above)
            self.sampled += [arch_hash(a) for a in archs]
        return archs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--reward-stream", action="store_true")
    parser.add_argument("--hang-timeout", type=float, default=120.0)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # a hung collective fails loudly
    torch.set_num_threads(1)
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DDPStrategy

    train, val = tiny_data(4096, seed=0), tiny_data(2048, seed=1)
    dm = MemoryDataModule(train, val, batch_size=128, reward_stream=args.reward_stream, reward_batch_size=256,
                          eval_batch_size=512)
    model = RecordingSearch.from_flat(
        [f"C{i}" for i in range(5)], [16] * 5, emb_dims=(2, 4), proj_dims=(2, 4), num_layers=2,
        hidden_units=(4, 8), num_students=3, num_reward_archs=4, warmup_epochs=1 / args.batches,  # 1 batch
        reward_rows=0 if args.reward_stream else 1024, baseline="leave_one_out", reward_scaling=True,
        entropy_weight=0.01, cost_weight=0.01)
    trainer = Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True,
                      process_group_backend="gloo"), max_epochs=1, limit_train_batches=args.batches,
                      limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(args.out))
    trainer.fit(model, datamodule=dm)
    rank = trainer.global_rank
    torch.save({
        "supernet": {k: v.detach().clone() for k, v in model.supernet.state_dict().items()},
        "generator": {k: v.detach().clone() for k, v in model.generator.state_dict().items()},
        "baseline": float(model.shaper.tau_bar), "sq_ema": float(model.shaper.sq_ema),
        "batch_count": int(model.batch_count), "global_step": trainer.global_step, "sampled": model.sampled,
        "world_size": trainer.world_size, "best_score": model.best_score, "pid": os.getpid(),
    }, args.out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
