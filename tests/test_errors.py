"""One convention for every entry point (autoias_pl/errors.py): a known error is one line `<prog>: error: ...`
with exit status 2 and no traceback; outputs get the umask's permissions; a closed pipe ends quietly.

Each entry point runs once as a program (`python -m ...`: the wiring from the command line) with a missing
input, and once in-process with an existing output (the demo has no input; `autoias` writes versioned run
folders and never refuses one, so its second case is a missing architecture file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autoias_pl import cli
from autoias_pl.data import cli as data_cli
from autoias_pl.errors import EXIT_BROKEN_PIPE, ConfigError, main_status, run_main
from autoias_pl.experiments import ablations, compare, demo
from autoias_pl.io import atomic_output_dir, atomic_write_text
from autoias_pl.serve import cli as serve_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
MODULES = {"autoias": "autoias_pl.cli", "autoias-data": "autoias_pl.data.cli", "autoias-serve": "autoias_pl.serve.cli",
           "demo": "autoias_pl.experiments.demo", "compare": "autoias_pl.experiments.compare", "ablations": "autoias_pl.experiments.ablations"}
PROGS = {"autoias": "autoias", "autoias-data": "autoias-data", "autoias-serve": "autoias-serve",
         "demo": "python -m autoias_pl.experiments.demo", "compare": "python -m autoias_pl.experiments.compare",
         "ablations": "python -m autoias_pl.experiments.ablations"}


@pytest.fixture(scope="module")
def tiny(synth_factory) -> Path:
    return synth_factory(rows=600, fields=3, planted_pairs=1, seed=4)


def one_line(err: str, prog: str, what: str) -> None:
    assert err.startswith(f"{prog}: error: ") and what in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err


MISSING = {  # entry point -> (arguments, what the line says); {m} is a path that does not exist
    "autoias": (["fit", "-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "retrain.yaml"),
                 "--data.data_dir", "{m}", "--trainer.logger", "false"], "{m}/schema.json: no schema.json"),
    "autoias-data": (["inspect", "{m}"], "{m}/schema.json: no schema.json"),
    "autoias-serve": (["score", "--bundle", "{m}", "--format", "criteo", "--input", "{m}.txt", "--output",
                       "{m}.parquet"], "{m}/bundle.json: no bundle.json"),
    "compare": (["--data", "{m}", "--models", "lr", "--out", "{m}-out"], "{m}/schema.json: no schema.json"),
    "ablations": (["--data", "{m}", "--out", "{m}-out"], "{m}/schema.json: no schema.json"),
}


@pytest.fixture(scope="module")
def missing_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    """Every program of MISSING started at once (their imports overlap): entry -> (cwd, status, stderr)."""
    procs = {}
    for entry, (args, _) in MISSING.items():
        cwd = tmp_path_factory.mktemp(entry)
        argv = [sys.executable, "-m", MODULES[entry], *(a.format(m=cwd / "missing") for a in args)]
        procs[entry] = cwd, subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             text=True)
    done = {entry: (cwd, proc.communicate()[1]) for entry, (cwd, proc) in procs.items()}  # reads stderr as it comes
    return {entry: (cwd, procs[entry][1].returncode, err) for entry, (cwd, err) in done.items()}


@pytest.mark.parametrize("entry", sorted(MISSING))
def test_a_missing_input_is_one_line_from_the_program(entry: str, missing_runs) -> None:
    cwd, status, err = missing_runs[entry]
    assert status == 2, err[-3000:]
    one_line(err.splitlines(keepends=True)[-1], PROGS[entry], MISSING[entry][1].format(m=cwd / "missing"))
    assert "Traceback" not in err and not list(cwd.iterdir()), err[-3000:]


def test_the_demo_refuses_an_output_it_did_not_make_from_the_program(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", MODULES["demo"], "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    one_line(done.stderr, PROGS["demo"], f"{tmp_path}: exists and was not made by the demo")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def in_process(main: Callable[[list[str]], object], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `main(argv)`; its exit status must be 2 (raised or returned); returns stderr."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    return capsys.readouterr().err


def test_an_existing_output_is_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    (out / "lr" / "seed0").mkdir(parents=True)
    cases = [
        (data_cli.main, ["synth", "--output", str(out), "--rows", "100", "--fields", "3"], "autoias-data",
         f"{out}: already exists (pass --overwrite"),
        (serve_cli.main, ["export", "--ckpt", str(tiny / "schema.json"), "--data", str(tiny), "--output", str(out)],
         "autoias-serve", f"{out}: already exists (pass --overwrite"),
        (compare.main, ["--data", str(tiny), "--models", "lr", "--seeds", "1", "--out", str(out)], PROGS["compare"],
         f"{out / 'lr' / 'seed0'}: exists (an earlier comparison?)"),
        (demo.main, ["--quick", "--out", str(out)], PROGS["demo"], f"{out}: exists and was not made by the demo"),
    ]
    for main, argv, prog, what in cases:
        one_line(in_process(main, argv, capsys), prog, what)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["lr", "lr/seed0"]  # nothing written


def test_an_ablation_output_of_another_dataset_is_one_line(tiny: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    atomic_write_text(out / "plan.json", json.dumps({"schema_hash": "other"}))
    err = in_process(ablations.main, ["--data", str(tiny), "--out", str(out), "--studies", "sampler",
                                      "--train-rows", "256", "--seeds", "1"], capsys)
    one_line(err.splitlines(keepends=True)[-1], PROGS["ablations"], f"{out / 'plan.json'}: made for another dataset")
    assert "Traceback" not in err


def test_autoias_names_a_missing_architecture_file(tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "best_architecture.json"
    err = in_process(cli.main, ["fit", "-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "retrain.yaml"),
                                "--data.data_dir", str(tiny), "--model.init_args.architecture", str(missing),
                                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)], capsys)
    one_line(err.splitlines(keepends=True)[-1], "autoias", str(missing))


def test_an_unexpected_error_keeps_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main("prog", broken)
    with pytest.raises(ZeroDivisionError):
        main_status("prog", lambda: 1 / 0)
    assert capsys.readouterr().err == ""
    assert main_status("prog", lambda: (_ for _ in ()).throw(ConfigError("--rows: must be positive"))) == 2
    assert capsys.readouterr().err == "prog: error: --rows: must be positive\n"
    assert main_status("prog", lambda: None) == 0


def test_a_closed_pipe_ends_quietly(tiny: Path) -> None:
    """`autoias-data inspect DIR | head -0`: the reader is gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", MODULES["autoias-data"], "inspect", str(tiny)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait() == EXIT_BROKEN_PIPE and err == "", err


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_outputs_get_the_umask_permissions(mask: int, tmp_path: Path) -> None:
    """Not tempfile's 0700/0600: a prepared dataset, a bundle or a result file is as readable as any file."""
    with umask(mask):
        assert data_cli.main(["synth", "--output", str(tmp_path / "d"), "--rows", "200", "--fields", "3"]) == 0
        atomic_write_text(tmp_path / "r.json", "{}")
        with atomic_output_dir(tmp_path / "bundle") as tmp:
            (tmp / "f").write_text("x")
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes["d"] == modes["d/train"] == modes["bundle"] == 0o777 & ~mask, modes
    assert modes["d/schema.json"] == modes["r.json"] == modes["bundle/f"] == 0o666 & ~mask, modes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "d", "r.json"]  # no temporary left
