"""The README's demo table is what the demo wrote: `benchmarks/sync_readme.py` and its committed copy.

The full demo takes minutes, so the tests check the mechanism: the sync turns a results.md into the README
block deterministically, the README's block holds a table in the exact format of the demo's writer, and
the block is the sync of `benchmarks/readme_demo_results.md` (the last full demo's results.md): updating
that file without running the sync fails here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from autoias_pl.experiments import demo
from tests.helpers.drivers import quick_demo

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "benchmarks" / "sync_readme.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

ROW = re.compile(r"^\| (?P<model>[^|]+?) \| (?P<auc>[\d.]+) \| (?P<logloss>[\d.]+) \| (?P<params>[\d,]*) \| "
                 r"(?P<secs>[\d.]*) \| (?P<note>[^|]*?) ?\|$")


def results_md(results: list[demo.Result], pairs: str = "planted pairs found by the search: 1/1 ['AxB']; "
               "selected pairs 2 of 3: ['AxB', 'AxC']") -> str:
    """A results.md laid out as `demo.main` writes it, around the table of `demo.table`."""
    return ("# AutoIAS demo: 1,000 synthetic rows, 3 fields, 1 planted pairs (seed 4)\n\n" + demo.table(results)[0]
            + "\ntraining s: the notes.\n\n" + pairs + "\n\nTotal wall time 12 s.\n")


def parse_table(table: str) -> list[demo.Result]:
    """The rows of a demo table back as Results (the separator and header checked by the caller)."""
    out = []
    for line in table.splitlines()[2:]:
        m = ROW.match(line)
        assert m, f"not a row of the demo's table: {line!r}"
        out.append(demo.Result(m["model"], float(m["auc"]), float(m["logloss"]),
                               int(m["params"].replace(",", "")) if m["params"] else None,
                               float(m["secs"]) if m["secs"] else None, m["note"]))
    return out


RESULTS = [demo.Result("autoias", 0.81234, 0.4, 1234, 5.04, "searched in 9 s; finalized in 3 s: widened 2 of 4"),
           demo.Result("lr", 0.7, 0.45, 99, 1.0), demo.Result("bayes-optimal", 0.83, 0.39, None, None, "true")]


def test_sync_makes_the_block_from_results_md_deterministically() -> None:
    text = results_md(RESULTS)
    block = sync.readme_block(text)
    assert block == sync.readme_block(text)
    assert block == (demo.table(RESULTS)[0] + "\nplanted pairs found by the search: 1/1 ['AxB']; selected pairs "
                     "2 of 3: ['AxB', 'AxC']\n\nDemo of 1,000 synthetic rows, 3 fields, 1 planted pairs (seed 4). "
                     "training s: the notes.\n")
    readme = f"intro\n{sync.BEGIN}\nold\nlines\n{sync.END}\nafter\n"
    new = sync.splice(readme, block)
    assert new == f"intro\n{sync.BEGIN}\n{block}{sync.END}\nafter\n"
    assert sync.current_block(new) == block and sync.splice(new, block) == new


def test_sync_refuses_what_the_demo_did_not_write() -> None:
    with pytest.raises(ValueError, match="expected 5 paragraphs"):
        sync.readme_block("| a |\n")
    with pytest.raises(ValueError, match="unexpected pairs"):
        sync.readme_block(results_md(RESULTS, pairs="3 pairs"))
    with pytest.raises(ValueError, match="one .* block"):
        sync.current_block("no markers here\n")


def test_readme_block_is_a_table_in_the_demo_writers_format() -> None:
    block = sync.current_block((ROOT / "README.md").read_text())
    table = block.split("\n\n")[0]
    header = demo.table([])[0]
    assert table.startswith(header), "the README table's header is not the one demo.table writes"
    rows = parse_table(table)  # the models' order is the demo's (tests/test_demo.py)
    assert demo.table(rows)[0] == table + "\n"  # rendered again by the demo's writer: the same text


def test_readme_block_is_the_sync_of_the_kept_demo_results() -> None:
    kept = ROOT / "benchmarks" / "readme_demo_results.md"
    assert kept.is_file()
    assert sync.current_block((ROOT / "README.md").read_text()) == sync.readme_block(kept.read_text()), (
        f"README.md's demo block is stale: run `python benchmarks/sync_readme.py {kept.relative_to(ROOT)}`")
    assert sync.main(["--check"]) == 0


@pytest.mark.slow
def test_sync_reads_what_the_quick_demo_writes(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A real (quick) demo's results.md goes through the sync; its table is the demo's results."""
    run = quick_demo(tmp_path_factory)
    block = sync.readme_block((run / "results.md").read_text())
    assert block.startswith(demo.table([])[0])
    assert demo.table(parse_table(block.split("\n\n")[0]))[0] == block.split("\n\n")[0] + "\n"
    readme, kept = tmp_path / "README.md", tmp_path / "kept.md"
    readme.write_text(f"# x\n{sync.BEGIN}\nold\n{sync.END}\n")
    assert sync.main([str(run / "results.md"), "--readme", str(readme), "--kept", str(kept)]) == 0
    assert kept.read_text() == (run / "results.md").read_text()
    assert sync.current_block(readme.read_text()) == block
    assert sync.main(["--check", "--readme", str(readme), "--kept", str(kept)]) == 0


def test_verify_masks_the_seconds_and_nothing_else(tmp_path: Path) -> None:
    """CI's `--verify` passes a fresh demo that differs in seconds only, and fails one with another figure."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{sync.BEGIN}\n{sync.readme_block(results_md(RESULTS))}{sync.END}\n")
    slower = [demo.Result("autoias", 0.81234, 0.4, 1234, 50.5, "searched in 99 s; finalized in 30 s: widened 2 of 4"),
              *RESULTS[1:]]
    fresh = tmp_path / "fresh.md"
    fresh.write_text(results_md(slower))
    assert sync.masked(sync.readme_block(fresh.read_text())) != sync.readme_block(fresh.read_text())
    assert sync.main(["--verify", str(fresh), "--readme", str(readme)]) == 0
    other = [demo.Result("autoias", 0.81244, 0.4, 1234, 5.04, "searched in 9 s; finalized in 3 s: widened 2 of 4"),
             *RESULTS[1:]]
    fresh.write_text(results_md(other))
    assert sync.main(["--verify", str(fresh), "--readme", str(readme)]) == 1
    chosen = [demo.Result("autoias", 0.81234, 0.4, 1234, 5.04, "searched in 9 s; finalized in 3 s: search 1 of 4"),
              *RESULTS[1:]]  # finalize chose another candidate: not a matter of seconds
    fresh.write_text(results_md(chosen))
    assert sync.main(["--verify", str(fresh), "--readme", str(readme)]) == 1
    fresh.write_text(results_md(RESULTS, pairs="planted pairs found by the search: 0/1 []; selected pairs 0 of 3: []"))
    assert sync.main(["--verify", str(fresh), "--readme", str(readme)]) == 1
