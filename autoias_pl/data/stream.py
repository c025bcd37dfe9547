"""Whole `CTRBatch`es straight from parquet row groups, split over DDP rank x dataloader worker.

Lightning never shards an IterableDataset, so `ParquetStream` does it: the unit of work is one (file,
row group), planned once from the parquet footers. Three modes:

- "train": units are shuffled per epoch from (seed, epoch) and dealt to ranks, then to workers, balancing
  rows. Every rank yields the SAME number N of full batches (an unequal count hangs DDP at the epoch end):
  each worker can give floor(its rows / B) full batches, N is the smallest rank total of those, and each
  rank's workers are capped so that they add up to N. Rows dropped per epoch: less than B per worker
  (world * workers * (B - 1)) plus the rank imbalance, all listed by `plan()`. Rows are shuffled within
  a buffer of `shuffle_buffer_row_groups` row groups; the remainder of a buffer is carried to the next.
- "eval": no shuffle; every row exactly once across ranks, each worker's last partial batch kept. Batch
  counts per rank may then differ by a batch or two, so eval steps must not call collectives per step
  (sync metrics at epoch end).
- "endless": the "train" shuffle without an end or a cap, reseeded per pass from (seed, epoch, pass);
  for the generator's reward batches. Ranks see different rows.

Features are int64 (the `CTRBatch` contract; torch.gather and most index ops need int64), labels float32.
Workers see `set_epoch` through a shared-memory tensor, so persistent workers follow the epoch too.
A shard that pyarrow cannot read is a one-line `ShardError` naming the file: from the footers when the
stream is built (truncated or corrupt footer), else when its row group is read. A worker hands that error
to the main process as an item, and `StreamLoader` raises it there as it is (the DataLoader would re-raise
it with the worker's traceback inside its message).

Exact mid-epoch resume ("train" and "endless"): `StreamLoader.state_dict()` is (epoch, batches this rank
has consumed in it) plus the plan's inputs; `load_state_dict` makes the next `iter()` of that epoch yield
exactly the batches a straight run would still yield, in the same order. Each worker derives its own share
of the consumed batches from the DataLoader's round-robin order (worker 0, 1, ..., a finished worker
drops out) and the plan's quotas, and the workers are rotated so that the round-robin resumes with the
worker that was next. Skipping replays only the shuffle: the permutations of the skipped buffers are
drawn on row indices, without reading them; the buffer where the skip ends is read, plus the units that
hold its carried-in rows (fewer than a batch). A state saved with another world size, worker count, batch
size, seed or split is refused (`ValueError`): the plan, hence the order, would differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.schema import LABEL, Schema, SchemaError
from autoias_pl.data.shards import ShardError, reading

Mode = Literal["train", "eval", "endless"]
_TAGS = {"train": 0, "eval": 1, "endless": 2}
_BLOCK = 8192  # rows transposed at once by read_units


@dataclass(frozen=True)
class Unit:
    """One parquet row group: the unit of work that is shuffled and dealt to ranks and workers."""

    path: str
    row_group: int
    rows: int
    offset: int = 0  # first row within the row group (a slice of it, see `_refine`)


def plan_units(directory: str | Path, split: str) -> list[Unit]:
    """All row groups of a split, in file then row-group order, from the parquet footers only."""
    folder = Path(directory) / split
    if not folder.is_dir():
        raise SchemaError(f"{folder}: split folder missing (is {directory} a prepared dataset?)")
    units = []
    for path in sorted(folder.glob("*.parquet")):
        with reading(path):
            meta = pq.ParquetFile(path).metadata
        units += [Unit(str(path), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return [u for u in units if u.rows > 0]


def _refine(units: list[Unit], slots: int) -> list[Unit]:
    """Cut row groups into row slices when there are fewer of them than rank x worker slots.

    Otherwise a small split (one row group, say) leaves some rank with no batch at all, which Lightning
    cannot run under DDP. Large splits are untouched (the slicing costs a whole row-group read per slice).
    """
    if len(units) >= slots:
        return units
    k = -(-slots // len(units))  # slices per row group
    out = []
    for u in units:
        bounds = np.linspace(0, u.rows, k + 1).astype(np.int64)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if b > a:
                out.append(Unit(u.path, u.row_group, b - a, u.offset + a))
    return out


def _deal(rows: np.ndarray, order: np.ndarray, slots: int) -> list[np.ndarray]:
    """Give each unit index, in `order`, to the slot holding the fewest rows so far (ties: lowest slot)."""
    out: list[list[int]] = [[] for _ in range(slots)]
    load = np.zeros(slots, dtype=np.int64)
    for u in order.tolist():
        s = int(np.argmin(load))
        out[s].append(u)
        load[s] += rows[u]
    return [np.array(o, dtype=np.int64) for o in out]


def _cap(capacity: np.ndarray, total: int) -> np.ndarray:
    """Per-worker quotas <= capacity that add up to `total` <= capacity.sum(), near-proportionally."""
    quota = capacity * total // max(int(capacity.sum()), 1)  # (W,)
    for w in np.argsort(quota - capacity, kind="stable")[: total - int(quota.sum())]:
        quota[w] += 1  # short by < W: top up the workers with the most spare capacity
    return quota


@dataclass(frozen=True)
class SlotPlan:
    """What one (rank, worker) reads in one epoch; quota None = all its rows (eval, endless)."""

    units: list[Unit]
    quota: int | None


class ParquetStream(IterableDataset):
    """Yields `CTRBatch`es: features (B, n) int64, labels (B,) float32. See the module docstring."""

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        batch_size: int,
        mode: Mode = "train",
        shuffle: bool = True,
        shuffle_buffer_row_groups: int = 4,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1 or shuffle_buffer_row_groups < 1:
            raise ValueError("batch_size and shuffle_buffer_row_groups must be positive")
        if mode not in _TAGS:
            raise ValueError(f"mode must be one of {list(_TAGS)}, got {mode!r}")
        self.schema = Schema.load(data_dir)
        self.data_dir, self.split, self.batch_size, self.mode = str(data_dir), split, batch_size, mode
        self.shuffle = shuffle and mode != "eval"
        self.buffer_units, self.seed = shuffle_buffer_row_groups, seed
        self.units = plan_units(data_dir, split)
        if not self.units:
            raise SchemaError(f"{Path(data_dir) / split}: no rows")
        self._explicit = (rank, world_size)
        self.rank, self.world_size = self._resolve_rank()
        self.num_workers = num_workers  # the DataLoader's; StreamLoader keeps it in sync
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skip = torch.zeros((), dtype=torch.int64).share_memory_()  # batches of the epoch to skip

    def _resolve_rank(self) -> tuple[int, int]:
        rank, world = self._explicit
        if rank is None or world is None:
            on = dist.is_available() and dist.is_initialized()
            rank, world = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        return rank, world

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (train) or reward passes (endless); call in the main process.
        Clears `resume_from`."""
        self._epoch.fill_(int(epoch))
        self._skip.fill_(0)
        if get_worker_info() is None:
            self.rank, self.world_size = self._resolve_rank()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def resume_from(self, batches: int) -> None:
        """Until the next `set_epoch`: iterations of the current epoch leave out the first `batches`
        batches this rank would yield in it (all workers together, in the DataLoader's order)."""
        if batches < 0:
            raise ValueError(f"batches must be non-negative, got {batches}")
        if batches and self.mode == "eval":
            raise ValueError("an eval stream has no mid-epoch position to resume from")
        self._skip.fill_(int(batches))

    @property
    def skipped(self) -> int:
        return int(self._skip.item())

    def plan(self, epoch: int, workers: int | None = None, pass_: int = 0) -> list[list[SlotPlan]]:
        """[rank][worker] -> SlotPlan for an epoch (and pass, endless). Same on every rank and worker."""
        workers = max(1, self.num_workers if workers is None else workers)
        all_units = _refine(self.units, self.world_size * workers)
        order = np.arange(len(all_units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, _TAGS[self.mode], epoch, pass_]).permutation(order)
        rows = np.array([u.rows for u in all_units], dtype=np.int64)  # (U,)
        slots = [_deal(rows, idx, workers) for idx in _deal(rows, order, self.world_size)]  # [rank][worker]
        units = [[[all_units[i] for i in w.tolist()] for w in r] for r in slots]
        if self.mode != "train":
            return [[SlotPlan(w, None) for w in r] for r in units]
        capacity = np.array([[rows[w].sum() // self.batch_size for w in r] for r in slots])  # (world, W)
        total = int(capacity.sum(axis=1).min())
        return [
            [SlotPlan(w, int(q)) for w, q in zip(r, _cap(cap, total), strict=True)]
            for r, cap in zip(units, capacity, strict=True)
        ]

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (undefined for the endless stream)."""
        if self.mode == "endless":
            raise TypeError("the endless stream has no length")
        plan = self.plan(self.epoch)[self.rank]
        if self.mode == "train":
            return sum(s.quota or 0 for s in plan)
        return sum(-(-sum(u.rows for u in s.units) // self.batch_size) for s in plan)

    def __iter__(self) -> Iterator[CTRBatch]:
        info = get_worker_info()
        if info is None:
            self.rank, self.world_size = self._resolve_rank()
            return self.iter_worker(0, 1)
        return _forward_errors(self.iter_worker(info.id, info.num_workers))

    def iter_worker(self, worker: int, workers: int) -> Iterator[CTRBatch]:
        """What dataloader worker `worker` of `workers` yields on this rank in the current epoch."""
        epoch, skip = self.epoch, self.skipped
        if self.mode == "endless":
            skips, shift = _worker_skips([None] * workers, skip)
            worker = (worker + shift) % workers
            return self._endless(epoch, worker, workers, skips[worker])
        plan = self.plan(epoch, workers)
        if self.mode == "train" and not any(s.quota for s in plan[self.rank]):
            raise ValueError(
                f"{self.data_dir}/{self.split}: too few rows for one batch of {self.batch_size} per rank "
                f"(world {self.world_size} x {workers} workers)"
            )
        skips, shift = _worker_skips([s.quota for s in plan[self.rank]], skip)
        worker = (worker + shift) % workers  # the worker this DataLoader worker stands in for
        slot = plan[self.rank][worker]
        rng = np.random.default_rng([self.seed, _TAGS[self.mode], epoch, 0, self.rank, worker])
        groups = self._groups(slot.units, rng)
        return self._batches(groups, rng, slot.quota, keep_partial=self.mode == "eval", skip=skips[worker])

    def _endless(self, epoch: int, worker: int, workers: int, skip: int = 0) -> Iterator[CTRBatch]:
        def groups() -> Iterator[list[Unit]]:
            for pass_ in itertools.count():
                # a slot without units (more ranks x workers than row groups) reads them all, in its own order
                units = self.plan(epoch, workers, pass_)[self.rank][worker].units or self.units
                tag = _TAGS["endless"]
                yield from self._groups(
                    units, np.random.default_rng([self.seed, tag, epoch, pass_, self.rank, worker])
                )

        rows_rng = np.random.default_rng([self.seed, _TAGS["endless"], epoch, self.rank, worker, 1])
        return self._batches(groups(), rows_rng, quota=None, keep_partial=False, skip=skip)

    def _groups(self, units: list[Unit], rng: np.random.Generator) -> Iterator[list[Unit]]:
        """Units in groups of `shuffle_buffer_row_groups`, in shuffled order when shuffling."""
        if self.shuffle:
            units = [units[k] for k in rng.permutation(len(units))]
        for start in range(0, len(units), self.buffer_units):
            yield units[start : start + self.buffer_units]

    def _batches(
        self,
        groups: Iterator[list[Unit]],
        rng: np.random.Generator,
        quota: int | None,
        keep_partial: bool,
        skip: int = 0,
    ) -> Iterator[CTRBatch]:
        """Read each group (after the last one's remainder), shuffle its rows, cut batches of `batch_size`;
        with `skip`, the first `skip` batches are left out (see `_fast_forward`)."""
        b, emitted, files = self.batch_size, 0, {}
        x = np.empty((0, self.schema.num_fields), np.int32)  # (carry, n)
        y = np.empty(0, np.float32)  # (carry,)
        if quota == 0 or (quota is not None and skip >= quota):
            return
        groups = iter(groups)
        if skip:
            x, y = self._fast_forward(groups, rng, skip, files)
            emitted = skip
        while True:
            full = len(y) // b
            for k in range(full):
                yield _batch(x[k * b : (k + 1) * b], y[k * b : (k + 1) * b])
                emitted += 1
                if emitted == quota:
                    return
            x, y = x[full * b :], y[full * b :]
            group = next(groups, None)
            if group is None:
                break
            x, y = read_units(group, self.schema.field_names, files, head=(x, y))  # (R, n), (R,)
            if self.shuffle:
                perm = rng.permutation(len(y))  # (R,)
                x, y = np.take(x, perm, axis=0), y[perm]  # np.take: ~5x faster than x[perm] on 2-D
        if keep_partial and len(y):
            yield _batch(x, y)

    def _fast_forward(
        self, groups: Iterator[list[Unit]], rng: np.random.Generator, skip: int, files: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """What `_batches` holds after its first `skip` batches, consuming `groups` and `rng` as it does.

        Rows are tracked as (unit, row) indices and shuffled with the same permutations; only the rows
        left over at the point where `skip` is reached are read: features (R, n) int32, labels (R,).
        """
        b, seen, done = self.batch_size, [], 0
        src_u = np.empty(0, np.int64)  # (carry,) index into `seen`
        src_r = np.empty(0, np.int64)  # (carry,) row within that unit
        for group in groups:
            base = len(seen)
            seen += group
            src_u = np.concatenate([src_u, *(np.full(u.rows, base + i) for i, u in enumerate(group))])
            src_r = np.concatenate([src_r, *(np.arange(u.rows) for u in group)])
            if self.shuffle:
                perm = rng.permutation(len(src_r))  # (R,) the draw `_batches` makes on this buffer
                src_u, src_r = src_u[perm], src_r[perm]
            full = len(src_r) // b
            cut = min(full, skip - done) * b
            done += cut // b
            src_u, src_r = src_u[cut:], src_r[cut:]
            if done == skip:
                break
        return self._gather(seen, src_u, src_r, files)

    def _gather(
        self, units: list[Unit], src_u: np.ndarray, src_r: np.ndarray, files: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows (units[src_u[i]], src_r[i]) in that order: features (R, n) int32, labels (R,) float32."""
        x = np.empty((len(src_r), self.schema.num_fields), np.int32)  # (R, n)
        y = np.empty(len(src_r), np.float32)  # (R,)
        for u in np.unique(src_u).tolist():
            at = np.flatnonzero(src_u == u)  # (r,)
            ux, uy = read_units([units[u]], self.schema.field_names, files)
            x[at], y[at] = ux[src_r[at]], uy[src_r[at]]
        return x, y


def _worker_skips(quotas: list[int | None], batches: int) -> tuple[list[int], int]:
    """How many of the first `batches` batches each worker gave, and the worker that gives the next one.

    The DataLoader takes batches from workers 0, 1, ..., W-1, 0, ... and drops a worker when it ends
    (quota None: never). Returns (per-worker counts, shift): DataLoader worker p of a resumed iteration
    stands in for worker (p + shift) % W, so that its round-robin continues the interrupted one.
    """
    workers = len(quotas)
    if batches == 0:
        return [0] * workers, 0
    if all(q is None for q in quotas):
        return [batches // workers + (w < batches % workers) for w in range(workers)], batches % workers
    q = np.array([0 if v is None else v for v in quotas], dtype=np.int64)  # (W,)
    left = min(batches, int(q.sum()))
    counts = np.zeros(workers, dtype=np.int64)
    last = 0
    for r in range(int(q.max())):
        active = np.flatnonzero(q > r)  # workers still giving batches in round r
        take = active[: min(left, len(active))]
        counts[take] += 1
        left -= len(take)
        last = int(take[-1])
        if left == 0:
            break
    return counts.tolist(), (last + 1) % workers


def _forward_errors(batches: Iterator[CTRBatch]) -> Iterator[CTRBatch | ShardError]:
    """In a DataLoader worker: yield a `ShardError` as the last item instead of raising it."""
    try:
        yield from batches
    except ShardError as e:
        yield e


def _raise_forwarded(items: Iterator[CTRBatch | ShardError]) -> Iterator[CTRBatch]:
    """In the main process: raise a `ShardError` that a worker forwarded, with its one-line message."""
    for item in items:
        if isinstance(item, ShardError):
            raise item
        yield item


def _batch(x: np.ndarray, y: np.ndarray) -> CTRBatch:
    """(B, n) int32 and (B,) float32 views -> a CTRBatch that owns its memory (int64 features)."""
    return CTRBatch(torch.from_numpy(x).long(), torch.from_numpy(y.copy()))


def read_units(
    units: list[Unit],
    field_names: list[str],
    files: dict[str, pq.ParquetFile] | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`head` rows, then the rows of `units`: features (R, n) int32 C-order, labels (R,) float32.

    Columns are gathered into a small (n, BLOCK) array and transposed by torch into place, block by block:
    ~2.5x faster than strided column writes into (R, n) or one big numpy transpose.
    """
    files = {} if files is None else files
    n = len(field_names)
    head_x, head_y = head if head is not None else (np.empty((0, n), np.int32), np.empty(0))
    rows = len(head_y) + sum(u.rows for u in units)
    x = np.empty((rows, n), dtype=np.int32)  # (R, n)
    y = np.empty(rows, dtype=np.float32)  # (R,)
    x[: len(head_y)], y[: len(head_y)] = head_x, head_y
    block = np.empty((n, _BLOCK), dtype=np.int32)  # (n, BLOCK), stays in cache
    offset = len(head_y)
    for u in units:
        with reading(u.path):
            if u.path not in files:
                files[u.path] = pq.ParquetFile(u.path)
            table = files[u.path].read_row_group(u.row_group, columns=[*field_names, LABEL], use_threads=False)
        if u.offset or u.rows != table.num_rows:
            table = table.slice(u.offset, u.rows).combine_chunks()
        columns = [c.to_numpy() for c in table.columns]  # zero-copy int32 views (one chunk per row group)
        for start in range(0, table.num_rows, _BLOCK):
            end = min(start + _BLOCK, table.num_rows)
            for j in range(n):
                block[j, : end - start] = columns[j][start:end]
            target = torch.from_numpy(x[offset + start : offset + end])  # (end - start, n)
            target.copy_(torch.from_numpy(block[:, : end - start]).T)
        y[offset : offset + table.num_rows] = columns[-1]
        offset += table.num_rows
    return x, y


def read_rows(data_dir: str | Path, split: str, rows: int) -> CTRBatch:
    """The first `rows` rows of a split (all of them if it has fewer), in file order: a fixed reward set."""
    schema = Schema.load(data_dir)
    units, taken = [], 0
    for u in plan_units(data_dir, split):
        if taken >= rows:
            break
        units.append(u)
        taken += u.rows
    x, y = read_units(units, schema.field_names)
    return _batch(x[:rows], y[:rows])


class StreamLoader(DataLoader):
    """A DataLoader over a `ParquetStream` that calls `dataset.set_epoch(epoch)` on every `iter()`.

    Lightning calls `set_epoch` only on samplers, never on an IterableDataset; this does it instead, in
    the main process before the workers start. The epoch is `epoch_fn()` (e.g. the trainer's
    `current_epoch`, so a resumed run replays the same order) or, when that is None or returns None, the
    number of earlier `iter()` calls. With workers, it raises the `ShardError` a worker forwarded (see the
    module docstring). `sampler`/`batch_sampler` exist only so that Lightning can rebuild the loader (it
    does for predict); they must stay None.

    `state_dict()`/`load_state_dict()` (which Lightning calls on train loaders when it saves and restores a
    checkpoint) hold the epoch and the batches consumed in it: `position_fn()` (the training loop's count of
    batches done, which is behind what a prefetching fetcher has taken) or, when that is None or returns
    None, the batches this loader's current iterator has yielded. The next `iter()` in that epoch resumes
    after them (module docstring); in another epoch the state is dropped.
    """

    def __init__(
        self,
        dataset: ParquetStream,
        num_workers: int = 0,
        epoch_fn: Callable[[], int | None] | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        sampler: None = None,
        batch_sampler: None = None,
        position_fn: Callable[[], int | None] | None = None,
    ) -> None:
        if sampler is not None or batch_sampler is not None:
            raise ValueError(
                "a ParquetStream shards and batches itself: sampler and batch_sampler must be None"
            )
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
        )
        self.epoch_fn, self.position_fn = epoch_fn, position_fn
        self._iters = 0
        self._yielded = 0  # batches of the current epoch given out (including resumed-over ones)
        self._pending: tuple[int, int] | None = None  # (epoch, batches) from load_state_dict
        dataset.num_workers = num_workers

    def _identity(self) -> dict[str, object]:
        """What fixes the plan and the order: a state is only valid for a loader with the same."""
        ds = self.dataset
        return {"mode": ds.mode, "split": ds.split, "world_size": ds.world_size, "num_workers": self.num_workers,
                "batch_size": ds.batch_size, "seed": ds.seed, "shuffle": ds.shuffle,
                "shuffle_buffer_row_groups": ds.buffer_units, "rows": sum(u.rows for u in ds.units)}

    def state_dict(self) -> dict[str, object]:
        position = self.position_fn() if self.position_fn is not None else None
        batches = self._yielded if position is None else int(position)
        return {"epoch": self.dataset.epoch, "batches": batches, **self._identity()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Resume the next `iter()` in `state["epoch"]` after `state["batches"]` batches (see the class)."""
        ours = self._identity()
        if self.dataset.mode == "eval" and int(state["batches"]):  # type: ignore[arg-type]
            raise ValueError("an eval loader has no mid-epoch position to resume from")
        differ = {k: (state.get(k), v) for k, v in ours.items() if state.get(k) != v}
        if differ:
            detail = ", ".join(f"{k} {a!r} in the checkpoint, {b!r} now" for k, (a, b) in differ.items())
            raise ValueError(
                f"cannot resume the {self.dataset.split} stream mid-epoch: {detail}. The epoch's order depends "
                "on them; resume with the same settings or from an end-of-epoch checkpoint"
            )
        self._pending = (int(state["epoch"]), int(state["batches"]))  # type: ignore[arg-type]

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self._iters if epoch is None else int(epoch)
        self.dataset.set_epoch(epoch)
        self._iters += 1
        pending, self._pending = self._pending, None
        skip = pending[1] if pending is not None and pending[0] == epoch else 0
        if skip:
            self.dataset.resume_from(skip)  # before the workers start (they read it at their iter())
        self._yielded = skip
        iterator = super().__iter__()
        return self._count(iterator if self.num_workers == 0 else _raise_forwarded(iterator))

    def _count(self, items: Iterator[CTRBatch]) -> Iterator[CTRBatch]:
        for item in items:
            self._yielded += 1
            yield item
