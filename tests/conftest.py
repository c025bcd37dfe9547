"""Shared fixtures: small synthetic datasets written once per session by `synthesize`, a per-test seed of
the global RNGs (autouse) and a one-thread switch."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from autoias_pl.data.schema import Schema
from autoias_pl.data.synth import synthesize

SynthFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def synth_factory(tmp_path_factory: pytest.TempPathFactory) -> SynthFactory:
    """make(rows=..., fields=..., planted_pairs=..., seed=..., **synthesize kwargs) -> dataset folder.

    Cached per session by arguments: the same call returns the same folder. Treat it as read-only.
    """
    cache: dict[tuple, Path] = {}

    def make(
        rows: int = 20_000, fields: int = 10, planted_pairs: int = 3, seed: int = 0, **kwargs: object
    ) -> Path:
        key = (rows, fields, planted_pairs, seed, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("synth") / "data"
            synthesize(out, rows, fields, planted_pairs=planted_pairs, seed=seed, **kwargs)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def synth_dir(synth_factory: SynthFactory) -> Path:
    """10 fields, 3 planted pairs, 20k rows (16k/2k/2k), row groups of 2048 rows over shards of 8192."""
    return synth_factory(
        rows=20_000, fields=10, planted_pairs=3, seed=0, rows_per_shard=8192, row_group_size=2048
    )


@pytest.fixture(scope="session")
def synth_schema(synth_dir: Path) -> Schema:
    return Schema.load(synth_dir)


@pytest.fixture(autouse=True)
def seeded_rng() -> None:
    """Every test starts from the same global RNG state (torch, numpy, random), so module inits and any
    unseeded draw are the same as in a run of that test alone: a failure reproduces with `pytest -k`."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests on tiny tensors: on a shared machine extra threads only add
    spin-waiting (a 2 ms supernet step took 70 ms with two). Use with `pytest.mark.usefixtures`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
