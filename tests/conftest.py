"""Shared fixtures: small synthetic datasets written once per session by `synthesize`, one short search run
of the CPU recipe shared by the tests that need a trained search, a per-test seed of the global RNGs
(autouse) and a one-thread switch."""

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


CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# the short search shared by test_cli.py and test_retrain_checkpoint.py: configs/search/cpu.yaml with 4 batches of
# 1024 rows (a warm-up of 2), 2 students (1 uniform) and 1024 reward rows
SHORT_SEARCH = ["--data.batch_size=1024", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
                "--model.init_args.schedule.warmup_epochs=0.5", "--model.init_args.distill.num_students=2",
                "--model.init_args.distill.uniform_students=1", "--model.init_args.reward.rows=1024",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="session")
def search_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A very short `autoias fit` of the cpu recipe on `synth_dir` (SHORT_SEARCH): its run folder, with
    best_architecture.json, config.yaml and checkpoints/last.ckpt. Shared by the session: treat it as read-only."""
    from autoias_pl.cli import run

    out = tmp_path_factory.mktemp("search")
    run(["fit", "-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "search/cpu.yaml"),
         "-c", str(CONFIGS / "trainer/cpu.yaml"), f"--data.data_dir={synth_dir}", *SHORT_SEARCH,
         f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=",
         "--trainer.logger.init_args.version=s"])
    return out / "s"


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
