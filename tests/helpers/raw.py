"""Raw log lines in the Criteo and Avazu layouts, and a writer: the inputs of the prepare and serve tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoias_pl.data.readers import AVAZU_COLUMNS


def criteo_row(label: str = "0", ints: dict[int, str] | None = None, cats: dict[int, str] | None = None) -> str:
    """One raw Criteo line: label, I1..I13, C1..C26 (defaults: I = '1', C = 'aa')."""
    i = [(ints or {}).get(k, "1") for k in range(1, 14)]
    c = [(cats or {}).get(k, "aa") for k in range(1, 27)]
    return "\t".join([label, *i, *c]) + "\n"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


AVAZU_HEAD = ",".join(AVAZU_COLUMNS) + "\n"


AVAZU_OK = ",".join(["1", "0", "14102100", *["x"] * 21]) + "\n"


def criteo_lines(rng: np.random.Generator, rows: int, pool: int) -> list[str]:
    """Raw Criteo lines: label, 13 integers (some empty or negative), 26 categoricals from `pool` values."""
    lines = []
    for _ in range(rows):
        ints = ["" if rng.random() < 0.1 else str(rng.integers(-3, 2000)) for _ in range(13)]
        cats = ["" if rng.random() < 0.05 else f"{k:x}{rng.integers(pool):04x}" for k in range(26)]
        lines.append("\t".join([str(rng.integers(2)), *ints, *cats]) + "\n")
    return lines
