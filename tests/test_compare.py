"""`python -m autoias_pl.experiments.compare` on tiny data: 2 models x 2 seeds x 1 epoch, its files and table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autoias_pl.errors import ConfigError
from autoias_pl.experiments import compare
from tests.helpers.drivers import COMPARE_SMALL as SMALL


def test_compare_two_models_over_two_seeds(synth_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    compare.main(["--data", str(synth_dir), "--models", "ref:deepfm", "inspace=deepfm", "--seeds", "2",
                  "--out", str(out), *SMALL])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0]) == compare.COLUMNS
    assert [r["model"] for r in rows] == ["ref:deepfm", "inspace"]
    assert [r["architecture"] for r in rows] == ["ref:deepfm", "deepfm"]
    for r in rows:
        assert r["seeds"] == "2" and float(r["epochs"]) == 1.0
        assert 0.4 < float(r["test_auc_mean"]) <= 1 and float(r["test_auc_std"]) >= 0
        assert float(r["test_logloss_mean"]) > 0 and int(r["params"]) > 0 and int(r["macs_per_sample"]) > 0
        assert float(r["test_logloss_calibrated_mean"]) > 0 and 0 <= float(r["test_ece_mean"]) < 1
        assert r["hit_max_epochs"] == "2"  # one epoch under patience 3: both seeds end at the cap
        assert float(r["train_samples_per_s"]) > 0
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["model"], r["seed"]) for r in runs] == [("ref:deepfm", "0"), ("ref:deepfm", "1"),
                                                       ("inspace", "0"), ("inspace", "1")]
    assert runs[0]["test_auc"] != runs[1]["test_auc"]  # the seeds differ
    md = (out / "results.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + 2 and all(line.count("|") == 11 for line in table)
    assert "| ref:deepfm | " in md[md.index(table[0]) + 2] and " ± " in table[2]
    for name in ("results.png", "reliability.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "early stopping (on val/auc)" in (out / "results.md").read_text()  # the monitor the runs used
    assert (out / "ref-deepfm" / "seed1" / "checkpoints" / "best.ckpt").is_file()
    assert not list(out.glob(".*"))  # no temporary file left behind
    with pytest.raises(SystemExit) as exit_:  # a second comparison into the same folder: one line, exit 2
        compare.main(["--data", str(synth_dir), "--models", "ref:deepfm", "--seeds", "1", "--out", str(out),
                      *SMALL])
    assert exit_.value.code == 2 and "seed0: exists" in capsys.readouterr().err


def test_labels_of_models() -> None:
    assert compare.labelled(["ref:fm", "runs/s/version_0/best_architecture.json", "x/mine.json", "a=deepfm"]) == [
        ("ref:fm", "ref:fm"), ("version_0", "runs/s/version_0/best_architecture.json"),
        ("mine", "x/mine.json"), ("a", "deepfm")]
    with pytest.raises(ConfigError, match="duplicate"):
        compare.labelled(["deepfm", "deepfm"])


def test_duplicate_labels_are_one_line_and_exit_2(synth_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--data", str(synth_dir), "--models", "deepfm", "deepfm", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "error: duplicate model labels" in err
    assert not (tmp_path / "c").exists()  # refused before anything was written
