"""A retrain checkpoint is self-contained: test, predict, resume and `load_from_checkpoint` read no other
file (the architecture JSON and the search checkpoint may be gone), and `init_from_search` is applied once,
at fit start, from a Lightning-free reader of the search checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from autoias_pl.data.schema import Schema
from autoias_pl.retrain import TEST_METRICS_FILE, AutoIASRetrain, init_from_search
from autoias_pl.search import BEST_ARCH_FILE
from autoias_pl.space import Architecture, ArchitectureError
from autoias_pl.supernet.checkpoint import supernet_from_checkpoint
from autoias_pl.supernet.extract import extract_model
from tests.helpers.cli import QUIET, RETRAIN, autoias, retrain_overrides

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Retrained:
    run: Path  # the retrain run folder
    best: Path  # its best.ckpt
    auc: float  # test/auc before the inputs were deleted
    probs: list[float]  # predicted probabilities before the inputs were deleted


def stage(subcommand: str, run: Path, ckpt: Path, *overrides: str) -> None:
    """`autoias <subcommand> -c <run>/config.yaml --ckpt_path <ckpt>`: the README's command."""
    from autoias_pl.cli import run as cli

    cli([subcommand, "-c", str(run / "config.yaml"), f"--ckpt_path={ckpt}", *QUIET, *overrides])


def evaluate(run: Path, best: Path) -> tuple[float, list[float]]:
    """test/auc of `autoias test` and the probabilities of `autoias predict`, both from `best`."""
    stage("test", run, best)
    stage("predict", run, best)
    auc = json.loads((run / TEST_METRICS_FILE).read_text())["test/auc"]
    return auc, pq.read_table(run / "predictions.parquet").column("prob").to_pylist()


@pytest.fixture(scope="module")
def retrained(search_run: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    """Retrain the searched architecture from the supernet, test and predict, then delete both inputs."""
    out = tmp_path_factory.mktemp("retrain")
    arch, search = out / "arch.json", out / "search.ckpt"
    shutil.copy(search_run / BEST_ARCH_FILE, arch)
    shutil.copy(search_run / "checkpoints" / "last.ckpt", search)
    autoias("fit", RETRAIN, *retrain_overrides(synth_dir, str(arch), epochs=1), "--trainer.limit_train_batches=5",
            f"--model.init_args.init_from_search={search}", out=out, version="r")
    run = out / "r"
    best = run / "checkpoints" / "best.ckpt"
    auc, probs = evaluate(run, best)
    arch.unlink()
    search.unlink()
    return Retrained(run, best, auc, probs)


def test_test_and_predict_need_neither_the_architecture_nor_the_search(retrained: Retrained) -> None:
    (retrained.run / TEST_METRICS_FILE).unlink()
    (retrained.run / "predictions.parquet").unlink()
    auc, probs = evaluate(retrained.run, retrained.best)
    assert auc == retrained.auc and 0.5 < auc < 1
    assert probs == retrained.probs and len(probs) > 0


def test_resuming_a_fit_needs_neither(retrained: Retrained, tmp_path: Path) -> None:
    """`fit --ckpt_path`: the model comes from the checkpoint, init_from_search (deleted) is not read."""
    stage("fit", retrained.run, retrained.run / "checkpoints" / "last.ckpt", "--trainer.max_epochs=2",
          f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()


LOAD = """
import sys, torch
from autoias_pl.retrain import AutoIASRetrain
ckpt = sys.argv[1]
module = AutoIASRetrain.load_from_checkpoint(ckpt, map_location="cpu")
assert not [m for m in sys.modules if m.startswith("autoias_pl.search")], "the search was imported"
state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
print(module.arch.choices)
"""


def test_load_from_checkpoint_reads_no_other_file_nor_the_search(retrained: Retrained) -> None:
    result = subprocess.run([sys.executable, "-c", LOAD, str(retrained.best)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    module = AutoIASRetrain.load_from_checkpoint(retrained.best, map_location="cpu")
    hparams = torch.load(retrained.best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert module.arch == Architecture.from_json_dict(hparams["architecture_json"])
    assert result.stdout.strip() == str(module.arch.choices)


def test_init_from_search_is_the_export_at_fit_start(search_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Fit with max_steps=0: the model is `extract_model(supernet, arch)` of the search checkpoint, exactly."""
    from autoias_pl.search import AutoIASSearch

    arch_path, ckpt = search_run / BEST_ARCH_FILE, search_run / "checkpoints" / "last.ckpt"
    cli = autoias("fit", RETRAIN, *retrain_overrides(synth_dir, str(arch_path)), "--trainer.max_steps=0",
                  "--trainer.num_sanity_val_steps=0", f"--model.init_args.init_from_search={ckpt}",
                  out=tmp_path, version="z")
    arch = Architecture.load(arch_path)
    x = torch.stack([torch.randint(v, (64,)) for v in Schema.load(synth_dir).vocab_sizes], 1)  # (64, n)
    supernet = supernet_from_checkpoint(ckpt)
    with torch.no_grad():
        logits = cli.model.model.cpu()(x)  # (64,)
        assert torch.equal(logits, extract_model(supernet, arch)(x))
        search = AutoIASSearch.load_from_checkpoint(ckpt, map_location="cpu")  # the reader reads it all
        torch.testing.assert_close(logits, search.supernet(x, arch), rtol=1e-5, atol=1e-5)
        fresh = AutoIASRetrain(cli.model.hparams.field_names, cli.model.hparams.vocab_sizes,
                               cli.model.hparams.schema_hash, str(arch_path), init_from_search=str(ckpt))
        assert not torch.equal(fresh.model(x), logits)  # not applied in __init__ (nor on load)


def test_init_from_search_errors_name_the_file(search_run: Path, synth_schema: Schema, tmp_path: Path) -> None:
    ckpt = search_run / "checkpoints" / "last.ckpt"
    lr = AutoIASRetrain(synth_schema.field_names, synth_schema.vocab_sizes, synth_schema.hash, "lr")
    with pytest.raises(ArchitectureError, match=r"last\.ckpt: the architecture's search space differs"):
        init_from_search(lr.model, str(ckpt), lr.arch)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        init_from_search(lr.model, str(tmp_path / "missing.ckpt"), lr.arch)
    other = torch.load(ckpt, map_location="cpu", weights_only=True)
    other["hyper_parameters"]["schema_hash"] = "0123456789abcdef"
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(ArchitectureError, match=r"other\.ckpt: search checkpoint on data schema '0123456789abcdef'"):
        init_from_search(lr.model, str(tmp_path / "other.ckpt"), lr.arch)
    torch.save({"hyper_parameters": {"architecture": "lr"}, "state_dict": {}}, tmp_path / "retrain.ckpt")
    with pytest.raises(ArchitectureError, match=r"retrain\.ckpt: not a search checkpoint"):
        supernet_from_checkpoint(tmp_path / "retrain.ckpt")
