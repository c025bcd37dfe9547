"""Writing one split of a prepared dataset as parquet shards: one int32 column per field, plus `label`.

Shared by `prepare` (raw logs) and `synth` (synthetic data), so both produce exactly the same layout:
`DIR/{split}/part-NNNNN.parquet`, each shard at most `rows_per_shard` rows in row groups of
`row_group_size` rows (the unit that the stream shuffles and splits across ranks and workers).
Readers open shards inside `reading(path)`, so a truncated or corrupt shard is a `ShardError` naming the
file (one line) instead of a pyarrow traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoias_pl.data.schema import LABEL, SchemaError, shard_path

DEFAULT_ROWS_PER_SHARD = 1_048_576
DEFAULT_ROW_GROUP_SIZE = 65_536


class ShardError(SchemaError):
    """A parquet shard cannot be read (truncated, corrupt, not parquet); the message names the file."""


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn pyarrow's errors while reading the shard `path` into a one-line `ShardError` naming it."""
    try:
        yield
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"{path}: not a readable parquet shard ({_one_line(e)})") from e


def _one_line(error: BaseException) -> str:
    """pyarrow's message on one printable line (thrift errors span lines and quote raw bytes)."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def shard_arrow_schema(field_names: list[str]) -> pa.Schema:
    return pa.schema([pa.field(n, pa.int32(), nullable=False) for n in field_names] + [pa.field(LABEL, pa.int8())])


class ShardWriter:
    """Append encoded rows to a split; rolls over to a new shard every `rows_per_shard` rows."""

    def __init__(
        self,
        directory: str | Path,
        split: str,
        field_names: list[str],
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    ) -> None:
        if rows_per_shard < 1 or row_group_size < 1:
            raise ValueError("rows_per_shard and row_group_size must be positive")
        self.directory, self.split, self.field_names = Path(directory), split, list(field_names)
        self.rows_per_shard, self.row_group_size = rows_per_shard, min(row_group_size, rows_per_shard)
        self.schema = shard_arrow_schema(self.field_names)
        self.rows = 0
        self._shards = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        (self.directory / split).mkdir(parents=True, exist_ok=True)

    def write(self, features: np.ndarray, labels: np.ndarray) -> None:
        """features: (R, n) integer ids; labels: (R,) 0/1."""
        if features.ndim != 2 or features.shape[1] != len(self.field_names) or len(labels) != len(features):
            raise ValueError(f"expected ({len(labels)}, {len(self.field_names)}) features, got {features.shape}")
        if len(labels) == 0:
            return
        cols = [pa.array(np.ascontiguousarray(features[:, j], dtype=np.int32)) for j in range(features.shape[1])]
        cols.append(pa.array(np.asarray(labels, dtype=np.int8)))
        self._pending.append(pa.Table.from_arrays(cols, schema=self.schema))
        self._pending_rows += len(labels)
        self.rows += len(labels)
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        head, tail = table.slice(0, rows), table.slice(rows)
        self._pending, self._pending_rows = ([tail] if tail.num_rows else []), tail.num_rows
        while head.num_rows:
            if self._writer is None:
                path = shard_path(self.directory, self.split, self._shards)
                self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
                self._shards += 1
            take = min(head.num_rows, self.rows_per_shard - self._in_shard)
            self._writer.write_table(head.slice(0, take), row_group_size=self.row_group_size)
            self._in_shard += take
            head = head.slice(take)
            if self._in_shard >= self.rows_per_shard:
                self._writer.close()
                self._writer, self._in_shard = None, 0

    def close(self) -> int:
        """Flush what is pending and close the current shard; returns the split's row count."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.rows
