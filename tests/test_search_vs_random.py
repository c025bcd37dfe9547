"""benchmarks/search_vs_random.py: the equal-budget comparison reads its recipe from configs/search/cpu.yaml
and gives both methods the same warm-up, the same supernet steps and the same number of scored
architectures (a tiny run of the real script)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from autoias_pl.data.schema import Schema
from autoias_pl.data.synth import synthesize

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("search_vs_random", ROOT / "benchmarks" / "search_vs_random.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_vs_random"] = module
    spec.loader.exec_module(module)
    return module


def test_recipe_is_the_cpu_config(synth_dir: Path, tmp_path: Path) -> None:
    """The benchmark launches configs/search/cpu.yaml as `autoias fit` does: the module's configs are the
    YAML's values (no copy of the recipe in the benchmark), with the overrides of --set."""
    bench = load_benchmark()
    args = argparse.Namespace(config=bench.CONFIG, overrides=["model.init_args.reward.rows=128"])
    model, dm, trainer = bench.build(args, synth_dir, 0, tmp_path / "run")
    cfg = yaml.safe_load((ROOT / "configs" / "search" / "cpu.yaml").read_text())
    init = cfg["model"]["init_args"]
    for section in ("space", "supernet", "distill", "generator", "reward", "schedule"):
        got = model.hparams[section]
        want = init[section] | ({"rows": 128} if section == "reward" else {})
        assert {k: got[k] for k in want} == want, section
    assert dm.batch_size == cfg["data"]["batch_size"] and trainer.max_epochs == cfg["trainer"]["max_epochs"]
    assert model.supernet_optimizer.keywords["lr"] == init["supernet_optimizer"]["init_args"]["lr"]


@pytest.mark.usefixtures("one_thread")
def test_both_methods_get_the_same_budget(tmp_path: Path) -> None:
    bench = load_benchmark()
    cfg = yaml.safe_load((ROOT / "configs" / "search" / "cpu.yaml").read_text())
    data = tmp_path / "data"
    synthesize(data, 3000, fields=4, planted_pairs=1, seed=0, rank=1)
    batches = Schema.load(data).rows["train"] // cfg["data"]["batch_size"]  # 4 batches of 512
    overrides = ["model.init_args.schedule.warmup_epochs=2", "model.init_args.reward.rows=128",
                 "model.init_args.reward.num_archs=4", "trainer.max_epochs=3"]  # 2 warm-up epochs, 1 searched
    args = argparse.Namespace(config=bench.CONFIG, overrides=overrides, checks=2, retrain=False)
    runs = bench.run_seed(data, 0, args, tmp_path / "work")
    assert [r["sampler"] for r in runs] == ["generator", "uniform"]
    assert [r["archs_scored"] for r in runs] == [batches * 4] * 2  # one epoch of M = 4 after the shared warm-up
    assert all(len(r["curve"]) == 2 and r["curve"][-1][0] == batches * 4 for r in runs)
    warm = torch.load(tmp_path / "work" / "runs" / "seed0" / "warmup.ckpt", weights_only=False)
    assert warm["epoch"] == 2 and warm["global_step"] == 2 * batches * 2  # 2 optimizer steps per warm-up batch
    for r in runs:
        best = json.loads((tmp_path / "work" / "runs" / "seed0" / r["sampler"] / "best_architecture.json").read_text())
        assert best["provenance"]["val_auc"] == r["best_val_auc"]
    bench.report(runs, tmp_path, ["C1xC2"])
    table = (tmp_path / "search_vs_random.md").read_text().splitlines()
    assert table[2].startswith("| generator (REINFORCE) |") and table[3].startswith("| random search |")
