"""The rules of the house (docs/architecture.md), read from the source: which package may import which.

Every `import` statement counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "autoias_pl"

# the rooms, in the data's order; a module belongs to the first prefix it starts with
LEAVES = ("autoias_pl.io", "autoias_pl.auc", "autoias_pl.errors")
DATA = ("autoias_pl.data",)
CORE = ("autoias_pl.space", "autoias_pl.layout", "autoias_pl.interactions", "autoias_pl.ctr_model",
        "autoias_pl.baselines", "autoias_pl.supernet", "autoias_pl.references", "autoias_pl.calibration")
SEARCH_LOGIC = ("autoias_pl.search.generator", "autoias_pl.search.reward", "autoias_pl.search.refine",
                "autoias_pl.search.config", "autoias_pl.search.proposer", "autoias_pl.search.record")
# Commands: the three entry points and the experiment drivers (demo, compare, ablations), which nothing imports.
CLIS = ("autoias_pl.cli", "autoias_pl.data.cli", "autoias_pl.serve.cli", "autoias_pl.experiments")
SERVE = ("autoias_pl.serve",)
SERVE_EXPORT = "autoias_pl.serve.export"  # reads a retrain checkpoint: the one serve module that may import retrain
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
DATAMODULES = ("autoias_pl.data.datamodule", "autoias_pl.data.memory")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, typing: bool = True) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved); without `typing`, not
    those under `if TYPE_CHECKING:` (names for type hints, no import at run time)."""
    tree, here = ast.parse(path.read_text()), module_name(path)
    for node in ast.walk(tree):
        if not typing and isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = [ast.Pass()]
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


MODULES = {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(sources: tuple[str, ...], forbidden: tuple[str, ...], exact: bool = False) -> list[str]:
    """`module imports name` for every import of a module in `sources` (prefixes, or names with `exact`)
    that falls in `forbidden` (outside `sources` itself)."""
    return sorted(f"{m} imports {i}" for m, deps in MODULES.items() if (m in sources if exact else within(m, sources))
                  for i in deps if within(i, forbidden) and not within(i, sources))


def test_the_rule_table_covers_every_module() -> None:
    known = LEAVES + DATA + CORE + ("autoias_pl.search", "autoias_pl.retrain", "autoias_pl.metrics",
                                    "autoias_pl.cli_callbacks", "autoias_pl.serve", "autoias_pl") + CLIS
    assert MODULES and all(within(m, known) for m in MODULES), sorted(m for m in MODULES if not within(m, known))


def test_leaves_import_nothing_of_the_package() -> None:
    bad = sorted(f"{m} imports {i}" for m, deps in MODULES.items() if within(m, LEAVES)
                 for i in deps if i.startswith("autoias_pl"))
    assert not bad, bad


def test_data_imports_no_core_search_or_lightning() -> None:
    """raw logs -> parquet -> stream stands alone (its command line, `autoias-data`, is a CLI)."""
    rest = CORE + ("autoias_pl.search", "autoias_pl.retrain", "autoias_pl.metrics", "autoias_pl.cli_callbacks")
    data = tuple(m for m in MODULES if within(m, DATA) and not within(m, CLIS))
    assert len(data) > 5 and not offenders(data, rest, exact=True)
    # only the LightningDataModules (over shards, over rows in memory) may use Lightning
    assert not offenders(tuple(m for m in data if m not in DATAMODULES), LIGHTNING, exact=True)


def test_core_imports_neither_lightning_nor_data() -> None:
    later = DATA + ("autoias_pl.search", "autoias_pl.retrain", "autoias_pl.metrics", "autoias_pl.cli_callbacks")
    assert not offenders(CORE, later + LIGHTNING + CLIS)


def test_standalone_model_never_imports_the_supernet() -> None:
    assert not offenders(("autoias_pl.ctr_model", "autoias_pl.layout", "autoias_pl.space",
                          "autoias_pl.interactions", "autoias_pl.baselines"), ("autoias_pl.supernet",))


def test_generator_and_reward_logic_import_no_lightning() -> None:
    assert not offenders(SEARCH_LOGIC, LIGHTNING + ("autoias_pl.search.module", "autoias_pl.search.callbacks"))


def test_retraining_never_imports_the_search() -> None:
    assert not offenders(("autoias_pl.retrain",), ("autoias_pl.search",))


def test_serving_imports_neither_lightning_nor_the_search() -> None:
    """Scoring a bundle needs no training code: serve/ imports no search; only its export command module
    reads a retrain checkpoint (and so Lightning)."""
    serve = tuple(m for m in MODULES if within(m, SERVE))
    assert len(serve) >= 4 and not offenders(serve, ("autoias_pl.search",), exact=True)
    scoring = tuple(m for m in serve if m != SERVE_EXPORT)
    assert not offenders(scoring, LIGHTNING + ("autoias_pl.retrain", "autoias_pl.metrics", "autoias_pl.cli_callbacks",
                                               "autoias_pl.supernet"), exact=True)


def test_nothing_imports_a_cli() -> None:
    bad = sorted(f"{m} imports {i}" for m, deps in MODULES.items() if not within(m, CLIS)
                 for i in deps if within(i, CLIS))
    assert not bad, bad


def test_tests_import_only_test_helpers_and_benchmarks_no_tests() -> None:
    """Test modules never import each other (what they share is in tests/helpers/), benchmarks import
    nothing of tests/ (what they need of it lives in the package, e.g. `data/memory.py`)."""
    repo = ROOT.parent
    tests = [p for p in sorted((repo / "tests").glob("*.py"))]
    bad = [f"{p.relative_to(repo)} imports {i}" for p in tests for i in imports_of(p)
           if i.split(".")[0] == "tests" and not within(i, ("tests.helpers",))]
    bad += [f"{p.relative_to(repo)} imports {i}" for p in sorted((repo / "benchmarks").glob("*.py"))
            for i in imports_of(p) if i.split(".")[0] == "tests"]
    assert len(tests) > 30 and not bad, bad


def test_no_two_modules_import_each_other_at_run_time() -> None:
    """No two modules of the package import each other when it runs (docs/architecture.md draws no cycle): a
    cycle of type hints only (layout.py names space.py's Architecture) is no import."""
    graph = {m: {i for i in imports_of(p, typing=False) if i in MODULES and i != m and not m.startswith(i + ".")}
             for m, p in ((module_name(p), p) for p in sorted(ROOT.rglob("*.py")))}
    cycles = sorted(f"{m} <-> {i}" for m, deps in graph.items() for i in deps if m in graph.get(i, ()))
    assert not cycles, cycles
    assert "autoias_pl.layout" in graph["autoias_pl.space"] and "autoias_pl.space" in MODULES["autoias_pl.layout"]


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    """The parser is not blind: a lazy, relative import inside a function is found."""
    f = tmp_path / "autoias_pl" / "supernet" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text("def g():\n    from ..data import schema\n    import lightning.pytorch\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "autoias_pl"
    try:
        assert {"autoias_pl.data", "autoias_pl.data.schema", "lightning.pytorch"} <= imports_of(f)
    finally:
        ROOT = saved


SIDE_EFFECTS = """
import logging, os, sys
import matplotlib, torch, lightning.pytorch  # their own import-time settings are not ours
env = dict(os.environ)
filters = list(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters)
import autoias_pl.cli, autoias_pl.experiments.demo, autoias_pl.search, autoias_pl.search.views, autoias_pl.retrain
assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))
assert list(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters) == filters, "logging filter"
assert matplotlib.rcParams._get_backend_or_none() is None, matplotlib.rcParams._get_backend_or_none()
"""


def test_importing_changes_nothing_global() -> None:
    """No import switches matplotlib's backend, installs a logging filter or sets an environment variable."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"}
    result = subprocess.run([sys.executable, "-c", SIDE_EFFECTS], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("rule", ["core", "model", "serve"])
def test_fresh_interpreter_agrees(rule: str) -> None:
    """The same rules at run time: importing the core pulls no Lightning, the model no supernet code."""
    code = {
        "core": "import sys, autoias_pl.supernet.extract, autoias_pl.baselines, autoias_pl.search.generator, "
                "autoias_pl.search.reward\nassert not [m for m in sys.modules if m.split('.')[0] == 'lightning']",
        "model": "import sys, autoias_pl.ctr_model\nassert not [m for m in sys.modules if "
                 "m.startswith('autoias_pl.supernet')]",
        "serve": "import sys, autoias_pl.serve.cli, autoias_pl.serve.score, autoias_pl.serve.bundle\nassert not "
                 "[m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith('autoias_pl.search')]",
    }[rule]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
