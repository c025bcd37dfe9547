"""The parquet stream: sharding over rank x worker, equal batch counts, per-epoch order, eval, endless."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from autoias_pl.data.schema import FieldSpec, Schema, SchemaError
from autoias_pl.data.shards import ShardError, ShardWriter
from autoias_pl.data.stream import ParquetStream, StreamLoader, _cap, plan_units, read_rows
from tests.helpers.shards import DAMAGE, break_pages

ROWS = {"train": 2503, "val": 777, "test": 10}
B = 64


@pytest.fixture(scope="module")
def id_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Column `rid` holds each row's index in file order; uneven shards (700 rows) and row groups (300)."""
    out = tmp_path_factory.mktemp("ids")
    names = ["rid", "f"]
    for split, rows in ROWS.items():
        writer = ShardWriter(out, split, names, rows_per_shard=700, row_group_size=300)
        rid = np.arange(rows)
        writer.write(np.column_stack([rid, rid % 7]), (rid % 3 == 0).astype(np.int8))
        writer.close()
    Schema("synthetic", [FieldSpec("rid", max(ROWS.values())), FieldSpec("f", 7)], dict(ROWS)).save(out)
    return out


def stream(id_dir: Path, rank: int = 0, world: int = 2, split: str = "train", **kw) -> ParquetStream:
    return ParquetStream(id_dir, split, B, rank=rank, world_size=world, seed=3, **kw)


def run(ds: ParquetStream, epoch: int, workers: int) -> list[list[torch.Tensor]]:
    """Row ids of each batch, per worker (explicit worker simulation)."""
    ds.set_epoch(epoch)
    return [[b.features[:, 0] for b in ds.iter_worker(w, workers)] for w in range(workers)]


def flat(batches: list[list[torch.Tensor]]) -> list[int]:
    return [i for worker in batches for b in worker for i in b.tolist()]


def test_units_come_from_footers_and_are_uneven(id_dir: Path) -> None:
    units = plan_units(id_dir, "train")
    assert sum(u.rows for u in units) == ROWS["train"]
    assert len({u.rows for u in units}) >= 3 and len({u.path for u in units}) == 4


def test_train_epoch_each_row_at_most_once_equal_batches_exact_remainder(id_dir: Path) -> None:
    for epoch in range(3):
        streams = [stream(id_dir, r) for r in range(2)]
        per_rank = [run(ds, epoch, workers=2) for ds in streams]
        counts = [sum(len(w) for w in r) for r in per_rank]
        plan = streams[0].plan(epoch, workers=2)
        capacity = [sum(sum(u.rows for u in slot.units) // B for slot in rank) for rank in plan]
        assert counts[0] == counts[1] == min(capacity)  # equal per rank, the documented cap
        for ds in streams:
            ds.num_workers = 2
            assert len(ds) == counts[0]
        seen = [i for r in per_rank for i in flat(r)]
        assert len(seen) == len(set(seen)) == 2 * min(capacity) * B  # no duplicates, exact remainder
        assert ROWS["train"] - len(seen) <= 2 * 2 * (B - 1) + B * (max(capacity) - min(capacity))
        for r, rank in enumerate(plan):
            for w, slot in enumerate(rank):
                own = {i for u in slot.units for i in _unit_ids(id_dir, u)}
                assert set(flat([per_rank[r][w]])) <= own  # a worker reads only its units
                assert all(len(b) == B for b in per_rank[r][w])


def _unit_ids(id_dir: Path, unit) -> range:
    offset = 0
    for u in plan_units(id_dir, "train"):
        if u == unit:
            return range(offset, offset + u.rows)
        offset += u.rows
    raise AssertionError(unit)


def test_order_changes_with_epoch_and_repeats_for_same_seed_and_epoch(id_dir: Path) -> None:
    first = flat(run(stream(id_dir), 0, 2))
    assert flat(run(stream(id_dir), 0, 2)) == first  # a fresh dataset, same (seed, epoch)
    assert flat(run(stream(id_dir), 1, 2)) != first
    plans = [[slot.units for slot in stream(id_dir).plan(e, 2)[0]] for e in (0, 1)]
    assert plans[0] != plans[1]  # units are re-dealt to ranks and workers every epoch
    other_seed = ParquetStream(id_dir, "train", B, rank=0, world_size=2, seed=4)
    assert flat(run(other_seed, 0, 2)) != first


def test_rows_are_shuffled_within_buffers_not_just_units(id_dir: Path) -> None:
    ids = np.array(flat(run(stream(id_dir, world=1), 0, 1)))
    steps = np.abs(np.diff(ids))
    assert (steps == 1).mean() < 0.05  # consecutive file rows rarely stay neighbours
    unshuffled = np.array(flat(run(stream(id_dir, world=1, shuffle=False), 0, 1)))
    np.testing.assert_array_equal(unshuffled, np.arange(len(unshuffled)))


def test_eval_sees_every_row_exactly_once_with_partial_batches(id_dir: Path) -> None:
    seen = []
    for r in range(2):
        ds = stream(id_dir, r, split="val", mode="eval")
        ds.num_workers = 2
        batches = run(ds, 5, 2)
        assert len(ds) == sum(len(w) for w in batches)
        seen += flat(batches)
    assert Counter(seen) == Counter(range(ROWS["val"]))


def test_real_workers_match_the_simulated_split(id_dir: Path) -> None:
    ds = stream(id_dir, rank=1)
    loader = StreamLoader(ds, num_workers=2, epoch_fn=lambda: 2)
    got = [b for b in loader]
    assert len(got) == len(loader)
    assert all(b.features.dtype == torch.int64 and b.features.shape == (B, 2) for b in got)
    assert all(b.labels.dtype == torch.float32 and b.labels.shape == (B,) for b in got)
    expected = run(stream(id_dir, rank=1), 2, 2)
    assert Counter(i for b in got for i in b.features[:, 0].tolist()) == Counter(flat(expected))


def test_persistent_workers_follow_set_epoch(id_dir: Path) -> None:
    epoch = {"value": 0}
    loader = StreamLoader(
        stream(id_dir), num_workers=2, epoch_fn=lambda: epoch["value"], persistent_workers=True
    )
    orders = []
    for e in (0, 1):
        epoch["value"] = e
        orders.append(sorted(tuple(b.features[:, 0].tolist()) for b in loader))
    assert orders[0] != orders[1]
    assert orders[1] == sorted(tuple(b.tolist()) for w in run(stream(id_dir), 1, 2) for b in w)


def test_loader_without_epoch_fn_counts_iterations(id_dir: Path) -> None:
    loader = StreamLoader(stream(id_dir, world=1))
    a = [b.features[:, 0].tolist() for b in loader]
    b = [b.features[:, 0].tolist() for b in loader]
    assert loader.dataset.epoch == 1 and a != b


def test_endless_stream_outlives_its_split_and_ranks_differ(id_dir: Path) -> None:
    ds = [stream(id_dir, r, split="val", mode="endless") for r in range(2)]
    its = [iter(d) for d in ds]
    take = 3 * ROWS["val"] // B  # three passes' worth
    batches = [[next(it) for _ in range(take)] for it in its]
    assert all(len(b.labels) == B for r in batches for b in r)
    firsts = [set(torch.cat([b.features[:, 0] for b in r[:3]]).tolist()) for r in batches]
    assert not firsts[0] & firsts[1]  # different rows on different ranks
    with pytest.raises(TypeError):
        len(ds[0])


def test_endless_stream_with_more_slots_than_row_groups_still_yields(id_dir: Path) -> None:
    ds = stream(id_dir, rank=1, world=2, split="val", mode="endless")
    assert len(plan_units(id_dir, "val")) < 2 * 4
    for w in range(4):
        it = ds.iter_worker(w, 4)
        assert all(len(next(it).labels) == B for _ in range(30))


def test_read_rows_takes_the_first_rows_in_file_order(id_dir: Path) -> None:
    batch = read_rows(id_dir, "val", 500)
    np.testing.assert_array_equal(batch.features[:, 0].numpy(), np.arange(500))
    assert batch.features.dtype == torch.int64 and batch.labels.dtype == torch.float32
    assert len(read_rows(id_dir, "test", 10_000).labels) == ROWS["test"]


def test_too_few_rows_for_a_batch_per_rank_raises(id_dir: Path) -> None:
    with pytest.raises(ValueError, match="too few rows"):
        iter(ParquetStream(id_dir, "test", B, rank=0, world_size=2))


def test_missing_data_raises_schema_error(tmp_path: Path, id_dir: Path) -> None:
    with pytest.raises(SchemaError, match=str(tmp_path)):
        ParquetStream(tmp_path, "train", B)
    with pytest.raises(SchemaError, match="nosuch"):
        ParquetStream(id_dir, "nosuch", B)


def test_cap_spreads_the_total_within_capacity() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        cap = rng.integers(0, 20, size=rng.integers(1, 6))
        total = int(rng.integers(0, cap.sum() + 1))
        quota = _cap(cap, total)
        assert quota.sum() == total and (quota <= cap).all() and (quota >= 0).all()


def test_eval_split_smaller_than_the_slots_still_feeds_every_rank(id_dir: Path) -> None:
    """One 10-row row group, 2 ranks x 2 workers: row slices give every rank a batch (DDP needs one)."""
    assert len(plan_units(id_dir, "test")) == 1
    seen = []
    for r in range(2):
        ds = stream(id_dir, r, split="test", mode="eval")
        ds.num_workers = 2
        batches = run(ds, 0, 2)
        assert len(ds) == sum(len(w) for w in batches) >= 1
        seen += flat(batches)
    assert Counter(seen) == Counter(range(ROWS["test"]))


# --- damaged files: one line naming the file, exit code 2 (streamed here, by `autoias` and `autoias-data`) ---


@pytest.fixture
def damaged_copy(synth_factory, tmp_path: Path) -> Path:
    """A private copy of a tiny prepared dataset (train: 3 shards of 4 row groups) to damage."""
    src = synth_factory(rows=3000, fields=4, planted_pairs=1, seed=1, rows_per_shard=1024, row_group_size=256)
    return Path(shutil.copytree(src, tmp_path / "data"))


def assert_one_line(message: str, path: Path) -> None:
    assert message.startswith(f"{path}: not a readable parquet shard (") and "\n" not in message, message


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_shard_is_a_shard_error_naming_the_file(damaged_copy: Path, damage: str) -> None:
    shard = DAMAGE[damage](damaged_copy / "train" / "part-00001.parquet")
    with pytest.raises(ShardError) as error:  # footers are read when the stream is built, pages when read
        list(ParquetStream(damaged_copy, "train", 128, rank=0, world_size=1))
    assert_one_line(str(error.value), shard)
    assert isinstance(error.value, SchemaError)


def test_workers_hand_a_damaged_row_group_to_the_main_process_as_one_line(damaged_copy: Path) -> None:
    """Without the forwarding the DataLoader re-raises with the worker's traceback inside the message."""
    shard = break_pages(damaged_copy / "train" / "part-00002.parquet")
    loader = StreamLoader(ParquetStream(damaged_copy, "train", 128, rank=0, world_size=1), num_workers=2)
    with pytest.raises(ShardError) as error:
        list(loader)
    assert_one_line(str(error.value), shard)


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def autoias_error(capsys: pytest.CaptureFixture[str], subcommand: str, data: Path, *overrides: str) -> list[str]:
    """Run `autoias <subcommand>` (retrain LR, one short epoch), expect exit code 2: its stderr lines."""
    from autoias_pl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([subcommand, "-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "retrain.yaml"),
              "-c", str(CONFIGS / "trainer/cpu.yaml"), f"--data.data_dir={data}", "--data.batch_size=128",
              "--data.eval_batch_size=512", "--model.init_args.architecture=lr", "--trainer.max_epochs=1",
              "--trainer.logger=false", f"--trainer.default_root_dir={data.parent / 'runs'}",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *overrides])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()  # (an uncaught error would not exit with 2)


@pytest.mark.parametrize(("subcommand", "split", "damage", "workers"), [
    ("fit", "train", "truncated", 0),
    ("test", "test", "footer", 0),
    ("fit", "train", "pages", 2),
])
def test_autoias_reports_a_damaged_shard_in_one_line(
    damaged_copy: Path, capsys: pytest.CaptureFixture[str], subcommand: str, split: str, damage: str, workers: int
) -> None:
    shard = DAMAGE[damage](damaged_copy / split / "part-00000.parquet")
    err = autoias_error(capsys, subcommand, damaged_copy, f"--data.num_workers={workers}")
    assert err[-1].startswith("autoias: error: ")
    assert_one_line(err[-1].removeprefix("autoias: error: "), shard)


def test_autoias_refuses_an_architecture_file_of_another_version(
    damaged_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The format version of an architecture JSON is checked through the command line too (space.py)."""
    from autoias_pl.space import Architecture, SearchSpace

    d = Architecture.teacher(SearchSpace.from_schema(Schema.load(damaged_copy))).to_json_dict()
    d["autoias_architecture_version"] = 99
    path = damaged_copy.parent / "old.json"
    path.write_text(json.dumps(d))
    err = autoias_error(capsys, "fit", damaged_copy, f"--model.init_args.architecture={path}")
    assert err[-1].startswith(f"autoias: error: {path}: autoias_architecture_version 99, expected ")
