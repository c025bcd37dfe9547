"""Helpers shared by the benchmark scripts (run as `python benchmarks/bench_*.py`, so this folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from autoias_pl.data.schema import Schema, SchemaError
from autoias_pl.data.synth import synthesize


def cached_synth(cache: Path, rows: int, fields: int) -> Path:
    """A synthetic dataset of `rows` rows x `fields` fields under `cache`, written once and then reused."""
    path = cache / f"synth-{fields}x{rows}"
    try:
        if sum(Schema.load(path).rows.values()) == rows:
            return path
    except SchemaError:
        pass
    synthesize(path, rows, fields, seed=0, overwrite=True)
    return path
