"""Score raw logs with a bundle: raw text (or .gz) -> the bundle's encoder -> its exported program -> parquet.

The rows stream: blocks of the raw reader (`data/readers.py`, the one `prepare` uses: same validation,
same `file:line` errors) are encoded by `data/prepare.py`'s `Encoder` with the bundle's vocabularies
(unknown and rare values -> the OOV id 0, as `prepare` does), scored in batches and appended to a parquet
file beside the output, renamed into place at the end (a failed or interrupted score leaves no output
file). Memory is bounded by the vocabularies, one raw block and one batch, never by the row count.

Output columns: `row` (int64, the 0-based index of the input row among the data rows of all inputs in
order: header and blank lines are not rows, bad rows keep their index) and `prob` (float32, P(click): the
bundle's calibrated probability where it has a calibrator, else sigmoid of the logit).
With `skip_bad` bad rows are left out (their indices are missing) and counted.

Two runtimes score the same ids: "pt2" (default) loads the program with `torch.export.load`; "onnx" runs
the bundle's model.onnx with onnxruntime (the `onnx` extra). Imports no Lightning, no search and no model
code.
"""

from __future__ import annotations

import csv
import gzip
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from autoias_pl.data.prepare import Encoder
from autoias_pl.data.readers import (
    DataFormatError,
    MissingInputError,
    RawFormat,
    check_row,
    read_blocks,
    read_header,
)
from autoias_pl.io import atomic_write
from autoias_pl.serve.bundle import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    ONNX_PROB,
    Bundle,
    BundleError,
    load_bundle,
    onnx_session,
    outputs,
)

OUTPUT_SCHEMA = pa.schema([("row", pa.int64()), ("prob", pa.float32())])
RUNTIMES = ("pt2", "onnx")
DEFAULT_BATCH_SIZE = 1024  # DeepFM over 39 fields: (B, 741, 16) pair tensors, ~50 MB each at 1024


@dataclass
class ScoreReport:
    """What a score run did: rows scored, bad rows skipped per input file, seconds."""

    output: Path
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # all of it, loading the bundle included
    load_seconds: float = 0.0  # checking and loading the bundle

    @property
    def bad_rows(self) -> int:
        return sum(self.skipped.values())


class Scorer:
    """A loaded bundle: `encode` raw blocks, `predict` ids -> probabilities with the `runtime`'s model
    ("pt2": the torch.export program; "onnx": model.onnx in onnxruntime with `threads` intra-op threads,
    None: torch's current number)."""

    def __init__(self, bundle: str | Path | Bundle, runtime: str = "pt2", threads: int | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.runtime = runtime
        self.calibrated = bool(self.bundle.meta.get("calibration"))  # the program's second output: P(click)
        self.encoder = Encoder(self.bundle.path)
        self.format: RawFormat = self.encoder.format
        if runtime == "pt2":
            self.program = torch.export.load(self.bundle.program_path).module()
            return
        path = self.bundle.onnx_path
        if path is None:
            reason = (self.bundle.meta.get("onnx") or {}).get("reason", "not written")
            raise BundleError(f"{self.bundle.path}: the bundle has no ONNX model ({reason}); "
                              "score it with --runtime pt2, or export it again with onnx installed")
        try:
            self.session = onnx_session(path, threads if threads is not None else torch.get_num_threads())
        except ImportError as e:
            raise BundleError(f"{path}: --runtime onnx needs onnxruntime (pip install 'autoias-pl[onnx]'): "
                              f"{e}") from e

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(b, n) int64 ids -> (b,) float32 raw logits of one model call."""
        return self._call(x, ONNX_OUTPUT)

    def _call(self, x: np.ndarray, output: str) -> np.ndarray:
        """(b, n) int64 ids -> (b,) float32: the program's `output` (ONNX_OUTPUT or ONNX_PROB)."""
        if self.runtime == "onnx":
            return self.session.run([output], {ONNX_INPUT: x})[0]
        with torch.inference_mode():
            logits, probs = outputs(self.program, torch.from_numpy(x))
            return (logits if output == ONNX_OUTPUT else probs).float().numpy()  # type: ignore[union-attr]

    def predict(self, ids: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """(R, n) integer ids -> (R,) float32 click probabilities (calibrated where the bundle has a
        calibrator), `batch_size` rows per model call."""
        out = np.empty(len(ids), dtype=np.float32)
        for i in range(0, len(ids), batch_size):
            x = np.ascontiguousarray(ids[i : i + batch_size], dtype=np.int64)  # (b, n)
            out[i : i + len(x)] = self._call(x, ONNX_PROB if self.calibrated else ONNX_OUTPUT)
        if self.calibrated:
            return out
        return torch.sigmoid(torch.from_numpy(out)).numpy()  # in place of the logits, the same op per runtime


def bad_row_indices(path: Path, fmt: RawFormat) -> np.ndarray:
    """Sorted 0-based indices (among the data rows of `path`) of the rows the reader rejects: the slow
    line-by-line reference check (`readers.check_row`), run only on a file that has bad rows."""
    names = read_header(path, fmt)
    bad, index = [], 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if (fmt.header and lineno == 1) or not text:
                continue
            values = next(csv.reader([text], delimiter=fmt.delimiter)) if fmt.header else text.split(fmt.delimiter)
            if check_row(values, names, fmt):
                bad.append(index)
            index += 1
    return np.asarray(bad, dtype=np.int64)


def good_row_indices(first: int, count: int, bad: np.ndarray) -> np.ndarray:
    """Indices of the good rows number first .. first + count - 1 of a file whose bad rows are `bad`
    (sorted): the k-th good row is k + #{b in bad: b - rank(b) <= k}."""
    k = np.arange(first, first + count, dtype=np.int64)
    if not len(bad):
        return k
    return k + np.searchsorted(bad - np.arange(len(bad)), k, side="right")


def score(bundle: str | Path | Bundle | Scorer, inputs: Sequence[str | Path], output: str | Path, *,
          format_name: str | None = None, skip_bad: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
          chunk_bytes: int = 1 << 25, runtime: str = "pt2") -> ScoreReport:
    """Score every row of `inputs` (raw logs of the bundle's format) into `output` (parquet: row, prob).

    A bad row raises `DataFormatError` naming file:line (nothing written), or with `skip_bad` is left out
    and counted. `format_name`, when given, must be the bundle's raw format; `runtime` ("pt2" or "onnx")
    is the model that scores when `bundle` is not already a `Scorer`."""
    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scorer = bundle if isinstance(bundle, Scorer) else Scorer(bundle, runtime)
    fmt = scorer.format
    if format_name is not None and format_name != fmt.name:
        raise BundleError(f"{scorer.bundle.path}: the bundle scores {fmt.name!r} rows, not {format_name!r}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files")
    for p in paths:
        if not p.is_file():
            raise MissingInputError(f"{p}: no such file")
    report = ScoreReport(Path(output), load_seconds=time.perf_counter() - start)

    def write(tmp: Path) -> None:
        offset = 0  # data rows of the earlier files
        with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            for path in paths:
                good = skipped = 0
                bad: np.ndarray | None = None  # known once a block of this file reports a bad row
                for block in read_blocks(path, fmt, skip_bad, chunk_bytes):
                    if block.skipped and bad is None:
                        bad = bad_row_indices(path, fmt)
                    r = len(block.labels)
                    probs = scorer.predict(scorer.encoder.encode_block(block), batch_size)  # (R,)
                    rows = offset + good_row_indices(good, r, bad if bad is not None else np.zeros(0, np.int64))
                    writer.write_table(pa.table({"row": rows, "prob": probs}, schema=OUTPUT_SCHEMA))
                    good, skipped = good + r, skipped + block.skipped
                if skipped != (0 if bad is None else len(bad)):
                    raise DataFormatError(f"{path}: the reader skipped {skipped} rows, the line check finds "
                                          f"{0 if bad is None else len(bad)}: row numbers would be wrong")
                report.skipped[str(path)] = skipped
                report.rows += good
                offset += good + skipped

    atomic_write(output, write)
    report.seconds = time.perf_counter() - start
    return report
