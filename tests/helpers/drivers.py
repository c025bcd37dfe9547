"""The experiment drivers at test size: the `--quick` demo (made once per session) and small compare runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoias_pl.experiments import demo


def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `--quick` demo's run folder, made once per session (test_notebook reuses it). Seed 1, not the
    default: every run of the demo must take its seed (CI's `make demo-check` runs seed 0)."""
    out = tmp_path_factory.getbasetemp() / "demo_quick"
    if not (out / "results.csv").exists():
        demo.main(["--quick", "--out", str(out), "--seed", "1"])
    return out


COMPARE_SMALL = [  # `python -m autoias_pl.experiments.compare` options for a run of seconds
    "--max-epochs", "1", "--limit-train-batches", "4", "--batch-size", "512", "--lr", "0.01",
    "--dim", "4", "--hidden", "16", "--layers", "1", "--no-progress-bar"]
