"""`make demo` at a tiny size (`--quick`): every stage runs and the comparison is written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from autoias_pl.experiments import demo
from tests.helpers.drivers import quick_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_demo(tmp_path_factory)


@pytest.mark.slow
def test_demo_writes_the_comparison(demo_run: Path) -> None:
    rows = list(csv.DictReader((demo_run / "results.csv").open()))
    assert [r["model"] for r in rows] == ["autoias", *demo.BASELINE_NAMES, "bayes-optimal", "first-order only"]
    for r in rows:
        assert 0.5 < float(r["test_auc"]) <= 1.0 and float(r["test_logloss"]) > 0, r
    bayes = float(rows[-2]["test_auc"])
    assert all(float(r["test_auc"]) <= bayes + 0.02 for r in rows[:-2])  # nothing beats the true model
    md = (demo_run / "results.md").read_text()
    assert "| autoias |" in md and "planted pairs found by the search" in md


@pytest.mark.slow
def test_demo_runs_are_cli_runs(demo_run: Path) -> None:
    """Each model's folder holds what `autoias fit` + `autoias test` write."""
    assert (demo_run / "search" / "best_architecture.json").is_file()
    # finalize chose among the pick and the generator's top model, each also at its widest widths, and the
    # chosen one is what step 3 retrained as "autoias"
    report = json.loads((demo_run / "search" / "final_architecture.report.json").read_text())
    assert report["widen"] and 2 <= len(report["candidates"]) <= 4 and report["recipe"]
    trained = json.loads((demo_run / "autoias" / "test_metrics.json").read_text())["architecture"]
    assert Path(trained) == demo_run / "search" / "final_architecture.json"
    for name in ("autoias", *demo.BASELINE_NAMES):
        run = demo_run / demo.folder(name)
        assert (run / "config.yaml").is_file() and (run / "config_test.yaml").is_file()
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert json.loads((run / "test_metrics.json").read_text())["architecture"]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:  # one line, exit 2 (tests/test_errors.py: also as a program)
        demo.main(["--quick", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_runs_at_its_threads_and_restores_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads holds for every step (finalize's subprocesses follow it: tests/test_finalize.py); the caller's
    thread count comes back after, also when a step fails; without it nothing is changed."""
    seen = []

    def step(args: object) -> list:
        seen.append(torch.get_num_threads())
        if len(seen) == 2:
            raise RuntimeError("a failing step")
        return []

    monkeypatch.setattr(demo, "_main", step)
    before = torch.get_num_threads()
    demo.main(["--out", str(tmp_path), "--threads", "3"])
    with pytest.raises(RuntimeError, match="a failing step"):  # unexpected: it keeps its traceback
        demo.main(["--out", str(tmp_path), "--threads", "2"])
    demo.main(["--out", str(tmp_path)])
    assert seen == [3, 2, before] and torch.get_num_threads() == before
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--threads", "0"])
    assert exit_.value.code == 2


def test_duration_rounds_once() -> None:
    assert demo.duration(539.6) == "540 s (9 min 0 s)"
    assert demo.duration(59.4) == "59 s (0 min 59 s)" and demo.duration(3600.2) == "3600 s (60 min 0 s)"
