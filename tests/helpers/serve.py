"""Reading a scored parquet file, and the check that scoring imported no training code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read_preds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(path)
    assert t.schema.names == ["row", "prob"]
    return t["row"].to_numpy(), t["prob"].to_numpy()


TRAINING_CODE = ("autoias_pl.search", "autoias_pl.retrain", "autoias_pl.ctr_model", "autoias_pl.supernet")


def no_training_code(extra: tuple[str, ...] = ()) -> str:
    """Source lines for a fresh interpreter: fail if Lightning or any of TRAINING_CODE (+ `extra`) was imported."""
    prefixes = TRAINING_CODE + extra
    return ("bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'lightning_fabric')"
            f" or m.startswith({prefixes!r})]\nassert not bad, bad\n")
