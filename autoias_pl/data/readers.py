"""Raw click-log formats (Criteo, Avazu, any delimited log) read as a stream of validated, tokenized blocks.

Every column is read by pyarrow's streaming CSV reader as a *dictionary* array, so per block the work that
depends on the values (validation, integer bucketing, Avazu's hour split) runs on the few distinct values
of the block, never per row. A block comes out as: labels, numeric/derived fields as small integer codes,
categorical fields as dictionary arrays of their raw strings.

Line numbers: the fast path does not track them. When a block holds a bad row, the file is re-scanned
line by line (`locate_bad_line`, the slow reference validator) to name the first bad line exactly.
Limitation: a newline inside a quoted value is not supported (that row is reported as malformed);
blank lines are skipped (as pyarrow does) but still counted in line numbers.
"""

from __future__ import annotations

import csv
import gzip
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from autoias_pl.data.schema import LABEL
from autoias_pl.errors import AutoIASError

DICT = pa.dictionary(pa.int32(), pa.string())
INT_RE = r"^-?[0-9]{1,18}$"  # longer integers would overflow int64: reported as non-integers
HOUR_RE = r"^[0-9]{8}$"
_NON_SPACE = re.compile(rb"\S")  # a chunk of blank lines holds no rows
EMPTY_CODE, NEGATIVE_CODE = 0, 1  # numeric codes: 0 empty, 1 negative, bucket k -> k + 2
AVAZU_COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
                 "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
                 "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
HOUR_FIELDS = ["hour_of_day", "weekday", "is_weekend"]


class DataFormatError(AutoIASError, ValueError):
    """Raw input that cannot be prepared; the message names the file (and line, column where known)."""


class BadRowError(DataFormatError):
    """A row with the wrong column count, a label not 0/1, or a non-integer in an integer column."""


class EmptyInputError(DataFormatError):
    """An input file with no data rows."""


class MissingInputError(DataFormatError, FileNotFoundError):
    """An input file that does not exist."""


class UnknownColumnError(DataFormatError):
    """A column named on the command line (or required by the format) that the file's header lacks."""


@dataclass(frozen=True)
class RawFormat:
    """Layout of a raw log: which column is the label, which are categorical, numeric (bucketed) or hour."""

    name: str
    label: str
    categorical: list[str]
    numeric: list[str] = field(default_factory=list)
    hour: str | None = None  # Avazu's YYMMDDHH column, split into HOUR_FIELDS
    delimiter: str = ","
    header: bool = True
    columns: list[str] | None = None  # the raw column names when the file has no header

    def fields(self) -> list[tuple[str, str]]:
        """(name, kind) of every output field, in column order."""
        out = [(n, "numeric") for n in self.numeric] + [(n, "categorical") for n in self.categorical]
        return out + [(n, "derived") for n in (HOUR_FIELDS if self.hour else [])]


def criteo_format() -> RawFormat:
    ints, cats = [f"I{i}" for i in range(1, 14)], [f"C{i}" for i in range(1, 27)]
    return RawFormat("criteo", LABEL, cats, ints, None, "\t", False, [LABEL, *ints, *cats])


def avazu_format() -> RawFormat:
    cats = [c for c in AVAZU_COLUMNS if c not in ("id", "click", "hour")]
    return RawFormat("avazu", "click", cats, [], "hour", ",", True)


def csv_format(label: str, categorical: list[str], numeric: list[str], delimiter: str = ",") -> RawFormat:
    return RawFormat("csv", label, list(categorical), list(numeric), None, delimiter, True)


@dataclass
class RawBlock:
    """One parsed block of valid rows (R of them)."""

    labels: np.ndarray  # (R,) int8 in {0, 1}
    codes: dict[str, np.ndarray]  # numeric/derived field -> (R,) int64 code
    strings: dict[str, pa.DictionaryArray]  # categorical field -> (R,) raw values
    skipped: int  # bad rows dropped from this block (skip mode)
    bytes_read: int  # position in the raw (possibly compressed) file after this block


def numeric_codes(x: np.ndarray) -> np.ndarray:
    """(U,) int64 -> (U,) int64 code: bucket floor(ln(x)^2) if x > 2 else x, shifted by 2; negatives -> 1."""
    big = np.floor(np.log(np.maximum(x, 3).astype(np.float64)) ** 2).astype(np.int64)
    return np.where(x < 0, NEGATIVE_CODE, np.where(x > 2, big, x) + 2)


def hour_codes(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U,) int64 YYMMDDHH -> hour of day, weekday (Monday 0), is_weekend, each (U,) int64."""
    yy, mm, dd, hh = hours // 1_000_000, hours // 10_000 % 100, hours // 100 % 100, hours % 100
    months = ((2000 + yy - 1970) * 12 + (mm - 1)).astype("datetime64[M]")
    days = (months.astype("datetime64[D]") + (dd - 1)).astype(np.int64)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    return hh, weekday, (weekday >= 5).astype(np.int64)


def read_header(path: Path, fmt: RawFormat) -> list[str]:
    """The raw column names: the format's own, or the file's first line (checked against what is needed)."""
    if not fmt.header:
        assert fmt.columns is not None
        return fmt.columns
    with _open_text(path) as f:
        first = f.readline()
    if not first.strip("\r\n"):
        raise EmptyInputError(f"{path}: empty file (no header line)")
    names = next(csv.reader([first], delimiter=fmt.delimiter))
    needed = [fmt.label, *fmt.numeric, *fmt.categorical, *([fmt.hour] if fmt.hour else [])]
    for col in needed:
        if col not in names:
            raise UnknownColumnError(f"{path}:1: no column {col!r} in the header ({len(names)} columns)")
    return names


def read_blocks(path: str | Path, fmt: RawFormat, skip_bad: bool = False,
                chunk_bytes: int = 1 << 25) -> Iterator[RawBlock]:
    """Stream `path` (plain or .gz) as RawBlocks; bad rows raise BadRowError, or are dropped if skip_bad."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyInputError(f"{path}: empty file")
    names = read_header(path, fmt)
    malformed = _Malformed()  # rows with the wrong column count, filled by pyarrow's callback
    raw = pa.OSFile(str(path))
    stream = pa.CompressedInputStream(raw, "gzip") if path.suffix == ".gz" else raw
    tables = _Prefetch(lambda: _parse_chunks(stream, raw, path, fmt, names, malformed, chunk_bytes))
    rows = seen_bad = 0
    try:
        for table, bytes_read in tables:
            for batch in table.to_batches():
                block, bad = _tokenize(batch, fmt, skip_bad)
                if (bad or malformed.count > seen_bad) and not skip_bad:
                    raise locate_bad_line(path, fmt, malformed.first)
                block.skipped, seen_bad = bad + malformed.count - seen_bad, malformed.count
                block.bytes_read = bytes_read
                rows += len(block.labels) + block.skipped
                yield block
    finally:
        tables.close()
        raw.close()
    if malformed.count and not skip_bad:
        raise locate_bad_line(path, fmt, malformed.first)
    if rows == 0:
        raise EmptyInputError(f"{path}: no data rows")


@dataclass
class _Malformed:
    """Rows pyarrow rejected for their column count: how many, and the first one's text."""

    count: int = 0
    first: str | None = None

    def __call__(self, row: pcsv.InvalidRow) -> str:
        self.count, self.first = self.count + 1, self.first if self.count else row.text
        return "skip"


class _Prefetch:
    """Run a generator in one background thread, at most one item ahead: overlaps parsing (pyarrow's
    threads) with the consumer's work while bounding memory (pyarrow's streaming reader reads ahead
    without a bound when the consumer is slower, so peak RSS grew with the file)."""

    _END = object()

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            for item in make():
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _parse_chunks(stream: pa.NativeFile, raw: pa.NativeFile, path: Path, fmt: RawFormat, names: list[str],
                  malformed: _Malformed, chunk_bytes: int) -> Iterator[tuple[pa.Table, int]]:
    """Cut the text at line ends into ~chunk_bytes pieces, parse each with pyarrow (multi-threaded)."""
    used = [fmt.label, *fmt.numeric, *fmt.categorical, *([fmt.hour] if fmt.hour else [])]
    read = pcsv.ReadOptions(column_names=names, block_size=max(chunk_bytes // 4, 1 << 20))
    parse = pcsv.ParseOptions(delimiter=fmt.delimiter, quote_char='"' if fmt.header else False,
                              invalid_row_handler=malformed)
    convert = pcsv.ConvertOptions(column_types={c: DICT for c in used}, include_columns=used,
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    for chunk in _line_chunks(stream, fmt.header, chunk_bytes):
        try:
            table = pcsv.read_csv(pa.BufferReader(chunk), read, parse, convert)
        except pa.ArrowInvalid as e:  # e.g. invalid UTF-8: name the first bad line if the slow check finds one
            located = locate_bad_line(path, fmt, None)
            if "line not located" not in str(located):
                raise located from e
            raise DataFormatError(f"{path}: {str(e).splitlines()[0]}") from e
        yield table, raw.tell()


def _line_chunks(stream: pa.NativeFile, skip_header: bool, chunk_bytes: int) -> Iterator[pa.Buffer]:
    """Whole lines of the stream, ~chunk_bytes at a time (the header line dropped), without copying them."""
    rest = b""
    while data := stream.read(chunk_bytes):
        buf = rest + data if rest else data
        cut = buf.rfind(b"\n") + 1
        start = buf.find(b"\n") + 1 if skip_header and cut else 0
        skip_header = skip_header and not cut
        rest = buf[cut:]
        if _NON_SPACE.search(buf, start, cut):
            yield pa.py_buffer(buf)[start:cut]
    if _NON_SPACE.search(rest) and not skip_header:
        yield pa.py_buffer(rest)


def _valid_ints(values: pa.Array, pattern: str) -> np.ndarray:
    """(U,) dictionary values -> (U,) bool: matches `pattern` or is empty."""
    ok = pc.or_(pc.match_substring_regex(values, pattern), pc.equal(values, ""))
    return ok.to_numpy(zero_copy_only=False)


def _parse_ints(values: pa.Array, ok: np.ndarray) -> np.ndarray:
    """(U,) strings -> (U,) int64 (invalid or empty -> 0)."""
    cleaned = pc.if_else(pa.array(ok) if not ok.all() else True, values, "0")
    cleaned = pc.if_else(pc.equal(cleaned, ""), "0", cleaned)
    return pc.cast(cleaned, pa.int64()).to_numpy()


def _tokenize(batch: pa.RecordBatch, fmt: RawFormat, skip_bad: bool) -> tuple[RawBlock, int]:
    """Validate and tokenize one batch on its dictionaries; returns the block of good rows, bad count."""
    bad = np.zeros(batch.num_rows, dtype=bool)  # (R,)
    label = batch.column(fmt.label)
    lab_ok = pc.is_in(label.dictionary, pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
    lab_val = pc.equal(label.dictionary, "1").to_numpy(zero_copy_only=False).astype(np.int8)
    bad |= ~lab_ok[label.indices.to_numpy()]
    codes: dict[str, np.ndarray] = {}
    labels = lab_val[label.indices.to_numpy()]  # (R,) int8
    for name in fmt.numeric:
        col = batch.column(name)
        idx, ok = col.indices.to_numpy(), _valid_ints(col.dictionary, INT_RE)
        dict_codes = np.where(pc.equal(col.dictionary, "").to_numpy(zero_copy_only=False), EMPTY_CODE,
                              numeric_codes(_parse_ints(col.dictionary, ok)))
        bad |= ~ok[idx]
        codes[name] = dict_codes[idx]
    if fmt.hour:
        col = batch.column(fmt.hour)
        idx, ok = col.indices.to_numpy(), _valid_ints(col.dictionary, HOUR_RE)
        ok &= pc.not_equal(col.dictionary, "").to_numpy(zero_copy_only=False)
        bad |= ~ok[idx]
        for name, c in zip(HOUR_FIELDS, hour_codes(_parse_ints(col.dictionary, ok)), strict=True):
            codes[name] = c[idx]
    strings = {name: batch.column(name) for name in fmt.categorical}
    n_bad = int(bad.sum())
    if n_bad and skip_bad:
        keep = ~bad
        labels, codes = labels[keep], {k: v[keep] for k, v in codes.items()}
        strings = {k: v.filter(pa.array(keep)) for k, v in strings.items()}
    return RawBlock(labels, codes, strings, 0, 0), n_bad


def _open_text(path: Path) -> TextIO:
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", errors="replace", newline="")


def check_row(values: list[str], names: list[str], fmt: RawFormat) -> str | None:
    """The slow reference validator for one row (already split into values): None if good, else the fault."""
    if len(values) != len(names):
        return f"expected {len(names)} columns, got {len(values)}"
    row = dict(zip(names, values, strict=True))
    if row[fmt.label] not in ("0", "1"):
        return f"label {fmt.label!r} is {row[fmt.label]!r}, not 0 or 1"
    for col in fmt.numeric:
        if row[col] != "" and not re.match(INT_RE, row[col]):
            return f"column {col!r} is {row[col]!r}, not an integer"
    if fmt.hour and not re.match(HOUR_RE, row[fmt.hour]):
        return f"column {fmt.hour!r} is {row[fmt.hour]!r}, not a YYMMDDHH hour"
    return None


def locate_bad_line(path: Path, fmt: RawFormat, malformed_text: str | None) -> BadRowError:
    """Re-scan `path` line by line (error path only) and describe its first bad row with its line number."""
    names = read_header(path, fmt)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if (fmt.header and lineno == 1) or not text:
                continue
            if fmt.header:
                values = next(csv.reader([text], delimiter=fmt.delimiter))
            else:
                values = text.split(fmt.delimiter)
            problem = check_row(values, names, fmt)
            if problem:
                return BadRowError(f"{path}:{lineno}: {problem}")
    return BadRowError(f"{path}: malformed row {malformed_text!r} (line not located)")
