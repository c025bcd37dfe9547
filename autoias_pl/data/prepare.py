"""`autoias-data prepare`: raw click logs -> vocabularies + int32 parquet shards, in two streaming passes.

Pass 1 parses the text once: every block's values get *provisional* ids (first-seen order, through a
growing per-field dictionary keyed by 64-bit hashes of the raw strings), are counted with np.bincount
(training rows only: the vocabulary never sees validation/test data) and spilled to one int32 temp file.
Pass 2 never touches the text: it remaps provisional -> final ids with one lookup array per field and
writes the shards. Memory is bounded by the vocabularies and one block, never by the row count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autoias_pl.data.progress import Progress
from autoias_pl.data.readers import (
    EMPTY_CODE,
    NEGATIVE_CODE,
    MissingInputError,
    RawBlock,
    RawFormat,
    read_blocks,
)
from autoias_pl.data.schema import OOV_ID, SPLITS, FieldSpec, Schema, SchemaError
from autoias_pl.data.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter
from autoias_pl.errors import ConfigError
from autoias_pl.io import atomic_output_dir

VOCAB_FILE = "vocab.parquet"
SPILL_FILE = ".pass1.bin"
PRESETS: dict[str, dict[str, object]] = {
    "paper": {"min_count": {"criteo": 20, "avazu": 20, "csv": 20}, "split": (0.72, 0.08, 0.20)},
    "bars": {"min_count": {"criteo": 10, "avazu": 2, "csv": 10}, "split": (0.8, 0.1, 0.1)},
}
_MIX = np.uint64(0x9E3779B97F4A7C15)


def resolve_protocol(preset: str, format_name: str, min_count: int | None,
                     split: tuple[float, ...] | None) -> tuple[int, tuple[float, float, float]]:
    """The preset's (min_count, split), overridden by explicit values; checks both."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    p = PRESETS[preset]
    mc = p["min_count"][format_name] if min_count is None else min_count  # type: ignore[index]
    return check_protocol(mc, tuple(p["split"] if split is None else split))  # type: ignore[arg-type]


def check_protocol(min_count: int, split: tuple[float, ...]) -> tuple[int, tuple[float, float, float]]:
    if min_count < 1:
        raise ConfigError(f"min_count must be >= 1, got {min_count}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"split must be three non-negative fractions summing to 1, got {list(split)}")
    return min_count, (float(split[0]), float(split[1]), float(split[2]))


def string_keys(values: pa.Array) -> np.ndarray:
    """(U,) strings -> (U,) uint64 keys. A string of <= 8 bytes is its own key (its bytes, zero-padded:
    exact for text without NUL bytes); a longer one is hashed (`_long_hashes`). Colliding keys of distinct
    values (a 64-bit hash collision) would merge them; at 1e7 values the chance is ~1e-5."""
    values = values.cast(pa.string())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    offsets = offsets.astype(np.int64)  # (U + 1,) absolute positions in the data buffer
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)  # (U,)
    if len(lengths) and np.all((lengths == 8) | (lengths == 0)):  # e.g. hex ids: the bytes are the keys
        keys = np.zeros(len(lengths), dtype=np.uint64)
        keys[lengths == 8] = data[offsets[0] : offsets[-1]].view(np.uint64)
        return keys
    data = np.concatenate([data[: offsets[-1]], np.zeros(8, np.uint8)])  # (bytes + 8,)
    window = data[offsets[:-1, None] + np.arange(8)]  # (U, 8) the first 8 bytes of each string
    window[np.arange(8) >= lengths[:, None]] = 0
    keys = np.ascontiguousarray(window).view(np.uint64)[:, 0]  # (U,)
    long = np.flatnonzero(lengths > 8)
    if len(long):
        keys[long] = _long_hashes(data, offsets[long], lengths[long])
    return keys


def _long_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(K,) strings given as (start, length) in `data` -> (K,) uint64: polynomial hash + splitmix64."""
    pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (bytes,)
    flat = data[np.repeat(starts, lengths) + pos].astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(int(lengths.max()), 0x100000001B3, dtype=np.uint64))
        h = np.add.reduceat(flat * powers[pos], np.cumsum(lengths) - lengths)  # (K,), every length > 8
        h ^= lengths.astype(np.uint64) * _MIX
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


class ProvisionalDictionary:
    """Raw string -> provisional id (first-seen order) for one categorical field; keys kept sorted."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)  # (V,) sorted hashes
        self.ids = np.zeros(0, dtype=np.int32)  # (V,) provisional id of keys[i]
        self.chunks: list[pa.Array] = []  # the raw values, in provisional id order
        self.size = 0

    def encode(self, column: pa.DictionaryArray, out: np.ndarray | None = None) -> np.ndarray:
        """(R,) dictionary-encoded strings -> (R,) int32 provisional ids (into `out`); new values appended."""
        h = string_keys(column.dictionary)  # (U,)
        by_hash = np.argsort(h)  # sorted needles: searchsorted walks the keys in cache order
        hs = h[by_hash]
        pos = np.searchsorted(self.keys, hs)
        found = pos < self.size
        found[found] = self.keys[pos[found]] == hs[found]
        local = np.empty(len(h), dtype=np.int32)
        local[by_hash[found]] = self.ids[pos[found]]
        new = np.sort(by_hash[~found])  # dictionary positions of unseen values, in first-seen order
        if len(new):
            local[new] = np.arange(self.size, self.size + len(new), dtype=np.int32)
            self.keys = np.insert(self.keys, pos[~found], hs[~found])
            self.ids = np.insert(self.ids, pos[~found], local[by_hash[~found]])
            self.chunks.append(column.dictionary.take(pa.array(new)))
            self.size += len(new)
        return np.take(local, column.indices.to_numpy(), out=out)

    def values(self) -> pa.Array:
        return pa.concat_arrays(self.chunks) if self.chunks else pa.array([], pa.string())


def code_values(codes: np.ndarray, kind: str) -> pa.Array:
    """Vocabulary strings of numeric/derived codes: numeric '' (empty), '<0', else the bucket."""
    if kind == "derived":
        return pa.array(codes.astype(str).tolist(), pa.string())
    text = (codes - 2).astype(str).astype(object)
    text[codes == EMPTY_CODE], text[codes == NEGATIVE_CODE] = "", "<0"
    return pa.array(text.tolist(), pa.string())


def value_codes(values: pa.Array, kind: str) -> np.ndarray:
    """Inverse of `code_values`: (K,) vocabulary strings -> (K,) int64 codes."""
    if kind == "derived":
        return pc.cast(values, pa.int64()).to_numpy()
    empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
    neg = pc.equal(values, "<0").to_numpy(zero_copy_only=False)
    clean = pc.if_else(pc.or_(pc.equal(values, ""), pc.equal(values, "<0")), "-2", values)
    return np.where(empty, EMPTY_CODE, np.where(neg, NEGATIVE_CODE, pc.cast(clean, pa.int64()).to_numpy() + 2))


class FieldState:
    """Pass-1 state of one field: provisional ids and their training-row counts."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.dictionary = ProvisionalDictionary() if kind == "categorical" else None
        self.counts = np.zeros(0, dtype=np.int64)  # (V,) count of each provisional id in training rows
        self._codes = 0  # numeric/derived: 1 + the largest code seen in any split

    def encode(self, block: RawBlock, out: np.ndarray) -> None:
        """Write the block's (R,) int32 provisional ids into `out`: categorical via the dictionary,
        numeric/derived codes as they are."""
        if self.dictionary is not None:
            self.dictionary.encode(block.strings[self.name], out)
            return
        codes = block.codes[self.name]  # (R,) int64
        self._codes = max(self._codes, int(codes.max(initial=-1)) + 1)
        out[:] = codes

    def count(self, prov: np.ndarray) -> None:
        c = np.bincount(prov, minlength=len(self.counts))
        c[: len(self.counts)] += self.counts
        self.counts = c

    @property
    def size(self) -> int:
        return self.dictionary.size if self.dictionary is not None else self._codes

    def values(self) -> pa.Array:
        """(V,) raw values in provisional id order."""
        if self.dictionary is not None:
            return self.dictionary.values()
        return code_values(np.arange(self.size), self.kind)

    def final_ids(self, min_count: int) -> tuple[np.ndarray, pa.Table]:
        """Lookup provisional -> final id ((V,) int32; rare -> 0) and the field's vocabulary table.

        Known ids 1..K go by descending training count, ties by value, so they do not depend on the order
        in which values first appeared.
        """
        counts = np.zeros(self.size, dtype=np.int64)
        counts[: len(self.counts)] = self.counts
        keep = np.flatnonzero(counts >= min_count)
        table = pa.table({"value": self.values().take(pa.array(keep, pa.int64())), "count": counts[keep]})
        order = pc.sort_indices(table, [("count", "descending"), ("value", "ascending")]).to_numpy()
        lut = np.zeros(self.size, dtype=np.int32)
        lut[keep[order]] = np.arange(1, len(keep) + 1, dtype=np.int32)
        vocab = table.take(pa.array(order)).append_column("id", pa.array(np.arange(1, len(keep) + 1), pa.int32()))
        vocab = vocab.add_column(0, "field", pa.array([self.name] * len(keep), pa.string()))
        return lut, vocab


class Spill:
    """Pass-1 output on disk: per block, provisional ids (n, R) int32, labels (R,) int8, splits (R,) int8.

    Blocks are written by one background thread (file writes release the GIL), at most two behind.
    """

    def __init__(self, path: Path, num_fields: int) -> None:
        self.path, self.num_fields, self.blocks = path, num_fields, []
        self._f = open(path, "wb")  # closed by finish(), also when pass 1 fails
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spill")
        self._pending: deque[Future] = deque()

    def write(self, prov: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> None:
        """Queue one block; the arrays must not be modified afterwards."""
        self._pending.append(self._pool.submit(self._write, prov, labels, splits))
        self.blocks.append(len(labels))
        while len(self._pending) > 2:
            self._pending.popleft().result()

    def _write(self, prov: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> None:
        prov.astype(np.int32, copy=False).tofile(self._f)
        labels.astype(np.int8, copy=False).tofile(self._f)
        splits.astype(np.int8, copy=False).tofile(self._f)

    def finish(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._f.close()

    def read(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with open(self.path, "rb") as f:
            for r in self.blocks:
                prov = np.fromfile(f, dtype=np.int32, count=self.num_fields * r).reshape(self.num_fields, r)
                yield prov, np.fromfile(f, dtype=np.int8, count=r), np.fromfile(f, dtype=np.int8, count=r)


def prepare(
    output: str | Path,
    fmt: RawFormat,
    inputs: list[str | Path] | None = None,
    *,
    train: list[str | Path] | None = None,
    val: list[str | Path] | None = None,
    test: list[str | Path] | None = None,
    min_count: int = 10,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 2018,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = 1 << 25,
) -> Schema:
    """Prepare raw logs into `output` (schema.json, vocab.parquet, {train,val,test}/part-*.parquet).

    Either `inputs` (randomly split per row by `split` and `seed`) or `train`/`val`/`test` (pre-split).
    The vocabulary counts training rows only. Nothing is left at `output` if anything fails.
    """
    sources = _sources(inputs, train, val, test)
    min_count, split = check_protocol(min_count, split)
    if rows_per_shard < 1:
        raise ConfigError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    fields = fmt.fields()
    total_bytes = sum(p.stat().st_size for p, _ in sources)
    with atomic_output_dir(output, overwrite) as tmp:
        spill = Spill(tmp / SPILL_FILE, len(fields))
        states = [FieldState(name, kind) for name, kind in fields]
        with Progress("pass 1/2: parse", total_bytes, progress) as bar:
            bad = _pass1(sources, fmt, states, spill, split, seed, skip_bad, chunk_bytes, bar)
        luts, vocabs = zip(*(s.final_ids(min_count) for s in states), strict=True)
        pq.write_table(pa.concat_tables(vocabs), tmp / VOCAB_FILE)
        with Progress("pass 2/2: write", spill.path.stat().st_size, progress) as bar:
            rows = _pass2(spill, list(luts), tmp, [n for n, _ in fields], rows_per_shard, bar)
        (tmp / SPILL_FILE).unlink()
        presplit = inputs is None
        schema = Schema(
            format=fmt.name,
            fields=[FieldSpec(n, int(lut.max(initial=0)) + 1, k) for (n, k), lut in zip(fields, luts, strict=True)],
            rows=rows, min_count=min_count, seed=seed,
            split=[rows[s] / max(sum(rows.values()), 1) for s in SPLITS] if presplit else list(split),
            bad_rows_skipped=bad, vocab_file=VOCAB_FILE,
            extra={"raw_format": asdict(fmt), "vocab_from": "train", "presplit": presplit,
                   "inputs": [str(p) for p, _ in sources]},
        )
        schema.save(tmp)
    return schema


def _sources(inputs: list[str | Path] | None, train: list[str | Path] | None, val: list[str | Path] | None,
             test: list[str | Path] | None) -> list[tuple[Path, int | None]]:
    """(path, fixed split index or None for a random split) for every raw file, all checked to exist."""
    if (inputs is None) == (train is None):
        raise ConfigError("give either inputs (random split) or train/val/test files (pre-split), not both")
    if inputs is not None:
        sources = [(Path(p), None) for p in inputs]
    else:
        sources = [(Path(p), i) for i, group in enumerate((train, val, test)) for p in (group or [])]
    for path, _ in sources:
        if not path.is_file():
            raise MissingInputError(f"{path}: no such file")
    return sources


def _pass1(sources: list[tuple[Path, int | None]], fmt: RawFormat, states: list[FieldState], spill: Spill,
           split: tuple[float, float, float], seed: int, skip_bad: bool, chunk_bytes: int,
           bar: Progress) -> int:
    """Parse every file once: provisional ids to the spill, training counts to `states`; returns bad rows."""
    rng = np.random.default_rng(seed)  # one uniform draw per good row, in stream order
    bounds = np.cumsum(split)[:2]
    bad, done = 0, 0
    try:
        for path, fixed in sources:
            for block in read_blocks(path, fmt, skip_bad, chunk_bytes):
                r = len(block.labels)
                if fixed is None:
                    splits = np.searchsorted(bounds, rng.random(r), side="right").astype(np.int8)  # (R,)
                else:
                    splits = np.full(r, fixed, dtype=np.int8)
                train = None if fixed == 0 else np.flatnonzero(splits == 0)  # (R_train,) or all rows
                prov = np.empty((len(states), r), dtype=np.int32)  # (n, R)
                for j, state in enumerate(states):
                    state.encode(block, out=prov[j])
                    state.count(prov[j] if train is None else prov[j].take(train))
                spill.write(prov, block.labels, splits)
                bad += block.skipped
                bar.update(r, done + block.bytes_read)
            done += path.stat().st_size
    finally:
        spill.finish()
    return bad


def _pass2(spill: Spill, luts: list[np.ndarray], out: Path, names: list[str], rows_per_shard: int,
           bar: Progress) -> dict[str, int]:
    """Remap the spilled provisional ids to final ids and write each split's shards.

    Each split's writer runs in its own thread (parquet encoding releases the GIL), one block behind the
    remapping in the main thread; at most two blocks per split are in flight.
    """
    writers = {s: ShardWriter(out, s, names, rows_per_shard) for s in SPLITS}
    pools = {s: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{s}") for s in SPLITS}
    pending: dict[str, deque[Future]] = {s: deque() for s in SPLITS}
    done = 0
    try:
        for prov, labels, splits in spill.read():
            for i, s in enumerate(SPLITS):
                rows = np.flatnonzero(splits == i)  # (R_s,)
                if len(rows):
                    final = np.empty((len(luts), len(rows)), dtype=np.int32)  # (n, R_s); .T columns are rows
                    for j, lut in enumerate(luts):
                        np.take(lut, prov[j][rows], out=final[j])
                    pending[s].append(pools[s].submit(writers[s].write, final.T, labels[rows]))
                    while len(pending[s]) > 2:
                        pending[s].popleft().result()
            done += prov.nbytes + 2 * len(labels)
            bar.update(len(labels), done)
        for s in SPLITS:
            while pending[s]:
                pending[s].popleft().result()
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
    return {s: w.close() for s, w in writers.items()}


class Encoder:
    """Encode new raw rows exactly as `prepare` encoded its own: loads DIR's schema and vocabularies."""

    def __init__(self, directory: str | Path) -> None:
        self.schema = Schema.load(directory)
        if not self.schema.vocab_file or "raw_format" not in self.schema.extra:
            raise SchemaError(f"{directory}: not a dataset made by `prepare` (no vocabulary or raw format)")
        self.format = RawFormat(**self.schema.extra["raw_format"])
        vocab = pq.read_table(Path(directory) / self.schema.vocab_file)
        self._tables: dict[str, pa.Array | np.ndarray] = {}
        for spec in self.schema.fields:
            rows = vocab.filter(pc.equal(vocab["field"], spec.name)).sort_by("id")
            if spec.kind == "categorical":
                self._tables[spec.name] = rows["value"].combine_chunks()  # (K,) value of id 1..K
            else:
                codes = value_codes(rows["value"].combine_chunks(), spec.kind)
                lut = np.zeros(int(codes.max(initial=-1)) + 2, dtype=np.int32)  # code -> id; last slot: unseen
                lut[codes] = rows["id"].to_numpy()
                self._tables[spec.name] = lut

    def encode_block(self, block: RawBlock) -> np.ndarray:
        """(R, n) int32 ids of a block read with this dataset's RawFormat."""
        out = np.empty((self.schema.num_fields, len(block.labels)), dtype=np.int32)  # (n, R)
        for j, spec in enumerate(self.schema.fields):
            table = self._tables[spec.name]
            if isinstance(table, np.ndarray):
                out[j] = table[np.minimum(block.codes[spec.name], len(table) - 1)]
            else:
                col = block.strings[spec.name]
                ids = pc.fill_null(pc.add(pc.index_in(col.dictionary, value_set=table), 1), OOV_ID)
                out[j] = ids.to_numpy()[col.indices.to_numpy()]
        return out.T

    def encode_file(self, path: str | Path, skip_bad: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (features (R, n) int32, labels (R,) int8) per block of a raw file."""
        for block in read_blocks(path, self.format, skip_bad):
            yield self.encode_block(block), block.labels
