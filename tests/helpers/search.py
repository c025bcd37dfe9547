"""Tiny in-memory data and small search modules for the search tests (and the DDP worker script)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.memory import MemoryDataModule
from autoias_pl.search import AutoIASSearch
from autoias_pl.space import Architecture


def tiny_data(rows: int, fields: int = 5, vocab: int = 16, seed: int = 0) -> CTRBatch:
    """Random ids with one first-order effect (field 0) and one planted pair (fields 1 x 2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(vocab, (rows, fields), generator=g)  # (R, n)
    first = torch.randn(vocab, generator=g)[x[:, 0]]  # (R,)
    pair = torch.randn(vocab, 2, generator=g)
    logit = first + 1.5 * (pair[x[:, 1]] * pair[x[:, 2]]).sum(1) - 1.0  # (R,)
    y = (torch.rand(rows, generator=g) < torch.sigmoid(logit)).float()  # (R,)
    return CTRBatch(x, y)


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


FIELDS = [f"C{i}" for i in range(5)]


SMALL = {"emb_dims": (2, 4), "proj_dims": (2, 4), "num_layers": 2, "hidden_units": (4, 8), "num_students": 3}


def make(**kw: Any) -> AutoIASSearch:
    """A small search over 5 fields of 16 ids (`SMALL`), 512 reward rows; `kw` overrides flat recipe keywords
    (search/config.py's `recipe_from_flat`)."""
    return AutoIASSearch.from_flat(FIELDS, [16] * 5, **{**SMALL, "reward_rows": 512, **kw})


@pytest.fixture(scope="module")
def data() -> MemoryDataModule:
    """The `data` fixture: 2048 training and 1024 validation rows of `tiny_data`."""
    return MemoryDataModule(tiny_data(2048, seed=0), tiny_data(1024, seed=1), batch_size=256, eval_batch_size=512)


def trainer(tmp_path: Path, epochs: int = 1, **kw: Any) -> Trainer:
    """A quiet CPU Trainer (no logger, no checkpoints unless `kw` asks) writing under `tmp_path`."""
    kw = {"logger": False, "enable_checkpointing": False, **kw}
    return Trainer(accelerator="cpu", max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, default_root_dir=str(tmp_path), **kw)
