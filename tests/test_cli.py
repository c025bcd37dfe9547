"""The `autoias` CLI end to end on tiny synthetic data: search -> architecture -> retrain -> test -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from autoias_pl.cli import main
from autoias_pl.data.schema import Schema
from autoias_pl.retrain import TEST_METRICS_FILE, AutoIASRetrain, init_from_search
from autoias_pl.search import BEST_ARCH_FILE
from autoias_pl.space import Architecture, ArchitectureError, SearchSpace
from tests.helpers.cli import CONFIGS, RETRAIN, SEARCH, autoias, retrain_overrides

# one batch of the cpu recipe, generator step included, and one validation batch: enough to log and checkpoint
TINY_SEARCH = ["--data.batch_size=256", "--data.eval_batch_size=256", "--trainer.max_epochs=1",
               "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
               "--model.init_args.schedule.warmup_epochs=0", "--model.init_args.distill.num_students=1",
               "--model.init_args.distill.uniform_students=0", "--model.init_args.reward.num_archs=2",
               "--model.init_args.reward.rows=256", "--model.init_args.reward.prune_tolerance=0"]


@pytest.fixture
def searched(search_run: Path) -> Path:
    """The session's short cpu.yaml search (tests/conftest.py): its run folder (best_architecture.json inside)."""
    return search_run


@pytest.mark.slow
def test_search_writes_an_architecture_of_this_data(searched: Path, synth_dir: Path) -> None:
    arch = Architecture.load(searched / BEST_ARCH_FILE, schema_hash=Schema.load(synth_dir).hash)
    assert arch.space.field_names == tuple(Schema.load(synth_dir).field_names)
    assert (searched / "config.yaml").is_file() and (searched / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_retrain_searched_architecture_then_test(searched: Path, synth_dir: Path, tmp_path: Path) -> None:
    arch = str(searched / BEST_ARCH_FILE)
    fit = autoias("fit", RETRAIN, *retrain_overrides(synth_dir, arch), out=tmp_path, version="r")
    assert {"val/auc", "val/logloss", "train/loss_epoch"} <= set(fit.trainer.callback_metrics)
    best = tmp_path / "r" / "checkpoints" / "best.ckpt"
    assert best.is_file() and (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()
    autoias("test", RETRAIN, *retrain_overrides(synth_dir, arch), f"--ckpt_path={best}", out=tmp_path, version="r")
    report = json.loads((tmp_path / "r" / TEST_METRICS_FILE).read_text())
    assert report["test/auc"] > 0.6, report  # planted data: first-order AUC alone is ~0.72
    assert 0.0 < report["test/logloss"] < 0.69
    assert report["params"] == Architecture.load(arch).num_params(Schema.load(synth_dir).vocab_sizes)
    assert (tmp_path / "r" / "config.yaml").is_file() and (tmp_path / "r" / "config_test.yaml").is_file()


def test_architecture_of_another_schema_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    schema = Schema.load(synth_dir)
    space = SearchSpace(tuple(schema.field_names), (4, 8), (4, 8), num_layers=2, hidden_units=(16,),
                        schema_hash="0123456789abcdef")
    path = Architecture.teacher(space).save(tmp_path / "other.json")
    with pytest.raises(ArchitectureError, match=r"other\.json.*searched on data schema '0123456789abcdef'"):
        autoias("fit", RETRAIN, *retrain_overrides(synth_dir, str(path)), out=tmp_path, version="x")


def test_unknown_architecture_names_the_baselines(synth_schema: Schema) -> None:
    with pytest.raises(ArchitectureError, match="neither a baseline name.*deepfm"):
        AutoIASRetrain(synth_schema.field_names, synth_schema.vocab_sizes, synth_schema.hash, "no-such-model")


def test_predict_writes_click_probabilities(synth_dir: Path, tmp_path: Path) -> None:
    o = retrain_overrides(synth_dir, "lr", epochs=1)
    autoias("fit", RETRAIN, *o, "--trainer.limit_train_batches=5", out=tmp_path, version="p")
    ckpt = tmp_path / "p" / "checkpoints" / "last.ckpt"
    autoias("predict", RETRAIN, *o, f"--ckpt_path={ckpt}", "--data.predict_split=val", out=tmp_path, version="p")
    table = pq.read_table(tmp_path / "p" / "predictions.parquet")
    assert table.column_names == ["prob", "label"]
    assert table.num_rows == Schema.load(synth_dir).rows["val"]
    probs = table.column("prob").to_numpy()
    assert ((probs > 0) & (probs < 1)).all()


@pytest.mark.parametrize(("model_seed", "data_seed"), [(3, None), (None, 5), (3, 5)])
def test_model_and_data_seeds_are_set_apart(synth_dir: Path, tmp_path: Path, model_seed: int | None,
                                            data_seed: int | None) -> None:
    """`--model.init_args.seed` and `--data.seed` each alone or with different values: the run logs both (the
    data's shuffle seed as `data_seed`) instead of refusing two values of `seed`, and the data order stays the
    data seed's (checkpointed under the argument's name)."""
    seeds = [f"--model.init_args.seed={model_seed}"] * (model_seed is not None) + [
        f"--data.seed={data_seed}"] * (data_seed is not None)
    cli = autoias("fit", SEARCH, f"--data.data_dir={synth_dir}", *seeds, *TINY_SEARCH, out=tmp_path, version="v")
    model, data = model_seed or 0, data_seed or 0
    assert (cli.model.seed, cli.datamodule.seed) == (model, data)
    logged = yaml.safe_load((tmp_path / "v" / "hparams.yaml").read_text())
    assert (logged["seed"], logged["data_seed"]) == (model, data)
    ckpt = torch.load(tmp_path / "v" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (ckpt["hyper_parameters"]["seed"], ckpt["datamodule_hyper_parameters"]["seed"]) == (model, data)


def test_fields_and_vocab_sizes_come_from_the_data(synth_dir: Path, tmp_path: Path) -> None:
    cli = autoias("fit", RETRAIN, *retrain_overrides(synth_dir, "fm"), "--trainer.fast_dev_run=1",
                  f"--trainer.default_root_dir={tmp_path}", out=tmp_path, version="f")
    schema = Schema.load(synth_dir)
    hp = cli.model.hparams
    assert (list(hp.field_names), list(hp.vocab_sizes), hp.schema_hash) == (
        schema.field_names, schema.vocab_sizes, schema.hash)


@pytest.mark.slow
def test_init_from_search_starts_from_the_supernet(searched: Path, synth_dir: Path) -> None:
    """The retrain model built from a search checkpoint gives the supernet's logits for that architecture."""
    from autoias_pl.search import AutoIASSearch

    schema = Schema.load(synth_dir)
    ckpt, arch_path = searched / "checkpoints" / "last.ckpt", searched / BEST_ARCH_FILE
    module = AutoIASRetrain(schema.field_names, schema.vocab_sizes, schema.hash, str(arch_path),
                            init_from_search=str(ckpt))
    init_from_search(module.model, str(ckpt), module.arch)  # what its on_fit_start does
    search = AutoIASSearch.load_from_checkpoint(ckpt, map_location="cpu")
    x = torch.stack([torch.randint(v, (64,)) for v in schema.vocab_sizes], 1)  # (64, n)
    with torch.no_grad():
        expected = search.supernet(x, Architecture.load(arch_path))
        torch.testing.assert_close(module.model(x), expected, rtol=1e-5, atol=1e-5)


def test_console_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(CONFIGS / "data/synthetic.yaml"), "-c", str(CONFIGS / "retrain.yaml"),
              f"--data.data_dir={tmp_path / 'missing'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autoias: error: ") and "missing/schema.json" in err[-1]
