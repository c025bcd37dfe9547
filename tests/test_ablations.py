"""`python -m autoias_pl.experiments.ablations` on tiny data: every study (2 values each, 1 seed, a few batches), the
files, the tables' shape, resuming without retraining, a study run alone, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from autoias_pl.data.synth import synthesize
from autoias_pl.experiments import ablations

TINY_VALUES = {"beta": [0.0, 0.5], "students": [1, 9], "sampler": ["generator", "uniform"], "reward_archs": [1, 2]}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablation-data") / "synth"
    synthesize(out, 3000, fields=5, planted_pairs=2, seed=0, vocab_range=(20, 60))
    return out


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int, str, int]]:
    """Two values per study, 2 validation points, 2 fixed architectures; returns the list of the
    runs actually trained, as (beta, N, sampler, M), as they happen."""
    for study, values in TINY_VALUES.items():
        monkeypatch.setitem(ablations.STUDIES, study, (values, ablations.STUDIES[study][1]))
    monkeypatch.setitem(ablations.BASE, "checks", 2)
    monkeypatch.setitem(ablations.BASE, "eval_archs", 2)
    trained: list[tuple[float, int, str, int]] = []
    train_one = ablations.train_one

    def counting(data: Path, schema: Any, settings: dict[str, Any], seed: int, *args: Any) -> dict[str, Any]:
        trained.append((settings["beta"], settings["num_students"], settings["sampler"], settings["num_reward_archs"]))
        return train_one(data, schema, settings, seed, *args)

    monkeypatch.setattr(ablations, "train_one", counting)
    return trained


def cli(data: Path, out: Path, *extra: str) -> dict[str, Any]:
    return ablations.main(["--data", str(data), "--out", str(out), "--seeds", "1", "--train-rows", "1024", *extra])


def tables(report: str) -> dict[str, list[list[str]]]:
    """study heading's figure name -> the rows (cells) of its table, header first."""
    out, study = {}, None
    for line in report.splitlines():
        if m := re.match(r"!\[(\w+)\]", line):
            study, out[m.group(1)] = m.group(1), []
        elif line.startswith("|") and study and not line.startswith("|---"):
            out[study].append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_every_study_files_tables_and_resume(tiny_data: Path, tmp_path: Path, tiny: list) -> None:
    out = tmp_path / "abl"
    results = cli(tiny_data, out)
    # beta = 0.5 and N = 9 are the same settings: 8 (study, value) pairs, 7 runs trained
    assert len(tiny) == 7 == results["trained"]
    for study, values in TINY_VALUES.items():
        assert (out / f"{study}.png").stat().st_size > 1000
        for v in values:
            assert (out / ablations.RECORDS / study / f"{v}-seed0.json").is_file()
    assert json.loads((out / ablations.RECORDS / "students/9-seed0.json").read_text())["reused_from"] == "beta=0.5"
    report = (out / "report.md").read_text()
    found = tables(report)
    assert set(found) == set(TINY_VALUES)
    for study, rows in found.items():
        header, body = rows[0], rows[1:]
        assert [r[0] for r in body] == [str(v) for v in TINY_VALUES[study]]  # one row per value, in order
        assert sum("mean ± std" in h for h in header) == len(ablations.COLUMNS)
        assert all(len(r) == len(header) for r in body)
        assert all(re.fullmatch(r"-?\d+\.\d+ ± \d+\.\d+", c) for r in body for c in r[2:-1])
    assert report.count("Paper:") == 4
    saved = json.loads((out / "results.json").read_text())
    for study, rows in saved["studies"].items():
        assert [r["value"] for r in rows] == TINY_VALUES[study]
        for r in rows:
            assert {"mean", "std", "per_seed"} <= set(r["final_student_loss"])
            assert len(r["curve"]["rows"]) == len(r["curve"]["student_loss"]) == 2  # 2 validation points
            assert r["curve"]["rows"][-1] == 1024

    tiny.clear()
    again = cli(tiny_data, out, "--budget-minutes", "5")  # resumes with the saved plan: nothing retrains
    assert tiny == [] and again["trained"] == 0
    assert json.loads(json.dumps(again["studies"])) == saved["studies"]


def test_one_study_alone_and_a_lost_run_is_redone(tiny_data: Path, tmp_path: Path, tiny: list) -> None:
    out = tmp_path / "abl"
    cli(tiny_data, out, "--studies", "sampler")
    assert len(tiny) == 2 and sorted(p.name for p in out.glob("*.png")) == ["sampler.png"]
    (out / ablations.RECORDS / "sampler/uniform-seed0.json").unlink()
    tiny.clear()
    cli(tiny_data, out, "--studies", "sampler")
    assert [t[2] for t in tiny] == ["uniform"]
    assert len(tables((out / "report.md").read_text())["sampler"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/nowhere"], "no schema.json"),
    (["--data", "{data}", "--studies", "beta,depth"], "--studies: unknown ['depth']"),
    (["--data", "{data}", "--seeds", "0"], "must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_data: Path, tmp_path: Path, args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, data=tiny_data) for a in args] + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        ablations.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_budget_sizing_fits_the_runs(tiny_data: Path) -> None:
    """More budget, more batches; the estimate of the sized runs stays within the budget."""
    from autoias_pl.data.schema import Schema

    schema = Schema.load(tiny_data)
    costs = ablations.Costs(student_step=0.01, teacher_step=0.01, forward_row=1e-6)
    runs = [ablations.model_settings(s, v, ablations.BASE) for s, (vs, _) in ablations.STUDIES.items() for v in vs]
    small, large = (ablations.size_runs(b, runs, schema, costs, ablations.BASE) for b in (120.0, 600.0))
    assert small.batches < large.batches
    for budget, sizing in ((120.0, small), (600.0, large)):
        assert sum(costs.run_seconds(r, sizing, schema, ablations.BASE) for r in runs) <= budget
        assert sizing.checks >= 1 and sizing.batches_per_epoch % sizing.val_every == 0


def test_mean_std_over_seeds_propagates_a_warm_up_nan() -> None:
    """A validation point inside the warm-up has no candidate AUC (NaN) in every seed; the report's curves
    must carry it as NaN, not fail (statistics.stdev raises on NaN)."""
    nan = float("nan")
    assert ablations.mean_std([1.0, 3.0]) == (2.0, 2.0 ** 0.5)
    assert ablations.mean_std([5.0]) == (5.0, 0.0)
    for values in ([nan, nan, nan], [nan, 1.0, 2.0]):
        mean, std = ablations.mean_std(values)
        assert mean != mean and std != std  # NaN
