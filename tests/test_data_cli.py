"""The `autoias-data` command line: exit codes, one-line errors, presets, inspect and synth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoias_pl.data.cli import main
from autoias_pl.data.schema import Schema
from tests.helpers.raw import AVAZU_HEAD, AVAZU_OK, criteo_row, write
from tests.helpers.shards import DAMAGE


@pytest.fixture
def bool_labels(tmp_path: Path) -> Path:
    """A Criteo file whose labels are 'True'/'False': every row is bad."""
    return write(tmp_path / "day0.tsv", [criteo_row(str(i % 4 == 0), cats={1: str(i % 3)}) for i in range(300)])


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prepare_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "good.tsv", [criteo_row(str(int(i % 4 == 0)), cats={1: str(i % 3)}) for i in range(300)])
    out = tmp_path / "ds"
    code, _, err = run(["prepare", "--format", "criteo", "--input", str(raw), "--output", str(out),
                        "--min-count", "1"], capsys)
    assert code == 0, err
    schema = Schema.load(out)
    code, text, _ = run(["inspect", str(out)], capsys)
    assert code == 0
    assert "format:       criteo" in text and schema.hash in text
    assert f"{schema.rows['train']:,} rows" in text and "positive rate 0.2" in text
    assert "C1" in text and "search space:" in text


def test_bad_row_is_one_line_error_exit_2(tmp_path: Path, bool_labels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["prepare", "--format", "criteo", "--input", str(bool_labels), "--output",
                        str(tmp_path / "ds")], capsys)
    assert code == 2
    assert err.startswith("autoias-data: error: ") and "day0.tsv:1: label 'label' is 'True'" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()


def test_skip_bad_rows_records_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "a.csv", [AVAZU_HEAD, AVAZU_OK, AVAZU_OK.replace(",0,", ",2,", 1), AVAZU_OK, "1,2\n"])
    code, _, err = run(["prepare", "--format", "avazu", "--input", str(raw), "--output", str(tmp_path / "ds"),
                        "--on-bad-row", "skip"], capsys)
    assert code == 0, err
    schema = json.loads((tmp_path / "ds" / "schema.json").read_text())
    assert schema["bad_rows_skipped"] == 2 and sum(schema["rows"].values()) == 2
    assert schema["min_count"] == 2  # the bars preset's Avazu min_count


def test_missing_and_empty_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["prepare", "--format", "criteo", "--input", str(tmp_path / "no.tsv"),
                        "--output", str(tmp_path / "ds")], capsys)
    assert code == 2 and "no.tsv: no such file" in err
    empty = write(tmp_path / "e.tsv", [])
    code, _, err = run(["prepare", "--format", "criteo", "--input", str(empty), "--output",
                        str(tmp_path / "ds")], capsys)
    assert code == 2 and "e.tsv: empty file" in err and not (tmp_path / "ds").exists()


def test_existing_dir_refused_then_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "good.tsv", [criteo_row()] * 30)
    (tmp_path / "ds").mkdir()
    argv = ["prepare", "--format", "criteo", "--input", str(raw), "--output", str(tmp_path / "ds")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "already exists" in err
    assert run([*argv, "--overwrite"], capsys)[0] == 0


def test_paper_preset_and_explicit_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "good.tsv", [criteo_row()] * 30)
    base = ["prepare", "--format", "criteo", "--input", str(raw), "--preset", "paper"]
    assert run([*base, "--output", str(tmp_path / "p")], capsys)[0] == 0
    paper = Schema.load(tmp_path / "p")
    assert paper.min_count == 20 and paper.split == [0.72, 0.08, 0.2]
    assert run([*base, "--output", str(tmp_path / "q"), "--min-count", "3", "--split", "0.5,0.5,0"], capsys)[0] == 0
    q = Schema.load(tmp_path / "q")
    assert q.min_count == 3 and q.split == [0.5, 0.5, 0.0] and q.rows["test"] == 0


def test_presplit_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tr, te = write(tmp_path / "tr.tsv", [criteo_row()] * 4), write(tmp_path / "te.tsv", [criteo_row()] * 2)
    code, _, err = run(["prepare", "--format", "criteo", "--train", str(tr), "--test", str(te),
                        "--output", str(tmp_path / "ds"), "--min-count", "1"], capsys)
    assert code == 0, err
    assert Schema.load(tmp_path / "ds").rows == {"train": 4, "val": 0, "test": 2}


def test_csv_unknown_column_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "l.tsv", ["y\tcity\n", "1\tparis\n"])
    code, _, err = run(["prepare", "--format", "csv", "--input", str(raw), "--output", str(tmp_path / "ds"),
                        "--label", "y", "--categorical", "city,town", "--delimiter", "\\t"], capsys)
    assert code == 2 and "l.tsv:1: no column 'town'" in err


def test_synth_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["synth", "--output", str(tmp_path / "s"), "--rows", "2000", "--fields", "4",
                        "--planted-pairs", "1", "--seed", "3"], capsys)
    assert code == 0, err
    assert Schema.load(tmp_path / "s").num_fields == 4


@pytest.mark.parametrize("damage", ["truncated", "footer"])
def test_inspect_names_a_damaged_shard_in_one_line(
    synth_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    src = synth_factory(rows=3000, fields=4, planted_pairs=1, seed=1, rows_per_shard=1024, row_group_size=256)
    data = Path(shutil.copytree(src, tmp_path / "data"))
    shard = DAMAGE[damage](data / "val" / "part-00000.parquet")
    code, _, err = run(["inspect", str(data)], capsys)
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.startswith(f"autoias-data: error: {shard}: not a readable "
                                                                f"parquet shard ("), err


def test_data_tools_import_no_lightning() -> None:
    code = ("import sys, autoias_pl.data.cli, autoias_pl.data.prepare, autoias_pl.data.readers; "
            "sys.exit(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
