"""The retraining recipe of AutoIASRetrain (issues 10, 19): embedding L2 on the looked-up rows, weight decay on
dense matrices, dropout (train only), batch norm in the MLP, lr reduced on plateau, the checkpoint /
early-stopping criterion of configs/retrain.yaml, the calibrator a checkpoint carries and the fit summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from autoias_pl.auc import auc
from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.references import DeepFM, reference
from autoias_pl.retrain import AutoIASRetrain
from autoias_pl.space import ArchitectureError
from tests.helpers.cli import CONFIGS, QUIET, RETRAIN

FIELDS = ["a", "b", "c"]
VOCAB = [4, 6, 5]
OFFSETS = [0, 4, 10]


def module(architecture: str = "ref:deepfm", **kwargs: object) -> AutoIASRetrain:
    return AutoIASRetrain(FIELDS, VOCAB, "", architecture, baseline_dim=3, baseline_hidden=8, baseline_layers=2,
                          **kwargs)


def ids(batch: int = 5) -> torch.Tensor:
    return torch.stack([torch.randint(v, (batch,)) for v in VOCAB], 1)  # (B, 3)


def batch(b: int = 5) -> CTRBatch:
    return CTRBatch(ids(b), torch.randint(2, (b,)).float())


def test_embedding_l2_of_a_reference_is_the_hand_computed_sum() -> None:
    lam = 0.1
    m = module(l2_embedding=lam)
    x = torch.tensor([[0, 1, 2], [3, 1, 4], [0, 5, 2]])  # id 0 of field a twice, field b's id 1 twice
    table, linear = m.model.embedding.table.weight, m.model.linear.weights.table.weight  # (15, 3), (15, 1)
    hand = 0.0
    for row in x.tolist():
        for i, v in enumerate(row):
            r = OFFSETS[i] + v
            hand += float(table[r].square().sum() + linear[r].square().sum())  # embedding and first-order weight
    logits, l2 = m.embedding_l2(x)
    torch.testing.assert_close(l2, torch.tensor(lam * hand / 3))
    torch.testing.assert_close(logits, m.model(x))  # the same forward pass
    # only the looked-up rows get a gradient from the penalty, each in proportion to its count
    (grad,) = torch.autograd.grad(l2, table)
    looked_up = {OFFSETS[i] + v for row in x.tolist() for i, v in enumerate(row)}
    assert {r for r in range(table.shape[0]) if grad[r].abs().sum() > 0} == looked_up
    torch.testing.assert_close(grad[0], 2 * lam * 2 * table[0].detach() / 3)  # row 0: looked up twice


def test_embedding_l2_of_an_in_space_model_covers_its_tables() -> None:
    lam = 0.01
    m = module("deepfm", l2_embedding=lam)
    x = ids(7)
    tables = m.model.tables
    assert len(tables) == 1  # one width: one concatenated table over the fields
    rows = x + torch.tensor(OFFSETS)
    expected = lam * tables[0].weight[rows].square().sum() / 7
    torch.testing.assert_close(m.embedding_l2(x)[1], expected)


def test_training_loss_adds_the_penalty_and_validation_does_not() -> None:
    m = module(l2_embedding=0.5)
    b = batch(6)
    bce = F.binary_cross_entropy_with_logits(m.model(b.features), b.labels)
    penalty = m.embedding_l2(b.features)[1]
    assert penalty > 0
    torch.testing.assert_close(m.training_step(b, 0), bce + penalty)
    plain = module()  # l2_embedding 0: no hooks, the plain BCE
    plain.model.load_state_dict(m.model.state_dict())
    torch.testing.assert_close(plain.training_step(b, 0), bce)


@pytest.mark.parametrize("architecture", ["ref:deepfm", "ref:dnn", "deepfm"])
def test_dropout_is_on_in_training_and_off_in_eval(architecture: str) -> None:
    m = module(architecture, dropout=0.5)
    x = ids(64)
    m.train()
    assert not torch.equal(m.model(x), m.model(x))  # two masks
    m.eval()
    with torch.no_grad():
        first = m.model(x)
        torch.testing.assert_close(m.model(x), first, rtol=0, atol=0)  # deterministic
        same = module(architecture)  # no dropout: the same state_dict keys, the same eval logits
        same.model.load_state_dict(m.model.state_dict())
        torch.testing.assert_close(same.model.eval()(x), first, rtol=0, atol=0)


def test_dropout_reaches_the_reference_mlp() -> None:
    m = module("ref:deepfm", dropout=0.25)
    assert isinstance(m.model, DeepFM)
    assert [mod.p for mod in m.model.deep if hasattr(mod, "p")] == [0.25, 0.25]
    assert not hasattr(module("ref:fm", dropout=0.25).model, "deep")  # no MLP: nothing to drop


def test_weight_decay_dense_spares_embeddings_and_biases() -> None:
    m = module(weight_decay_dense=1e-3)
    opt = m.configure_optimizers()
    rest, dense = opt.param_groups
    assert dense["weight_decay"] == 1e-3 and rest["weight_decay"] == 0
    tables = {id(m.model.embedding.table.weight), id(m.model.linear.weights.table.weight)}
    assert tables <= {id(p) for p in rest["params"]}
    assert {id(p) for p in dense["params"]} == {id(x.weight) for x in m.model.deep if isinstance(x, torch.nn.Linear)}
    assert len(rest["params"]) + len(dense["params"]) == len(list(m.parameters()))
    assert len(module().configure_optimizers().param_groups) == 1  # 0: one group, as before


def test_bad_recipe_values_are_refused() -> None:
    for kwargs in ({"l2_embedding": -1.0}, {"weight_decay_dense": -1e-5}, {"dropout": 1.0}):
        with pytest.raises(ValueError, match="need l2_embedding >= 0"):
            module(**kwargs)
    with pytest.raises(ArchitectureError, match="a list of widths is for ref: models"):
        AutoIASRetrain(FIELDS, VOCAB, "", "deepfm", baseline_hidden=[8, 4])


def test_reference_mlp_takes_a_list_of_widths() -> None:
    m = module("ref:deepfm")
    m2 = AutoIASRetrain(FIELDS, VOCAB, "", "ref:deepfm", baseline_dim=3, baseline_hidden=[8, 4])
    assert [x.out_features for x in m2.model.deep if isinstance(x, torch.nn.Linear)] == [8, 4, 1]
    assert [x.out_features for x in m.model.deep if isinstance(x, torch.nn.Linear)] == [8, 8, 1]
    with pytest.raises(ArchitectureError, match="one hidden width"):
        reference("ref:finalmlp", VOCAB, 3, [8, 4])


# ----- configs/retrain.yaml: its recipe and its checkpoint criterion, through the `autoias` CLI -----
def test_retrain_config_sets_the_recipe_and_its_monitor(synth_dir: Path, tmp_path: Path) -> None:
    from autoias_pl.cli import run

    config = yaml.safe_load((CONFIGS / "retrain.yaml").read_text())
    args = ["fit", *[a for c in RETRAIN for a in ("-c", str(CONFIGS / c))], f"--data.data_dir={synth_dir}",
            "--data.batch_size=512", "--model.init_args.baseline_dim=4", "--model.init_args.baseline_hidden=8",
            "--model.init_args.baseline_layers=1", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
            *QUIET]
    cli = run(args)
    hp, init = cli.model.hparams, config["model"]["init_args"]
    for key in ("l2_embedding", "weight_decay_dense", "dropout", "batch_norm", "lr_plateau_factor", "calibration"):
        assert hp[key] == init[key], key
    ckpt, stop = cli.trainer.checkpoint_callback, cli.trainer.early_stopping_callback
    assert (ckpt.monitor, ckpt.mode) == (config["checkpoint"]["monitor"], config["checkpoint"]["mode"])
    assert (stop.monitor, stop.mode) == (config["early_stopping"]["monitor"], config["early_stopping"]["mode"])
    assert stop.patience == config["early_stopping"]["patience"]
    metrics = cli.trainer.callback_metrics
    torch.testing.assert_close(metrics["val/auc_minus_logloss"], metrics["val/auc"] - metrics["val/logloss"])
    assert ckpt.best_model_score == metrics[ckpt.monitor]  # the one epoch is the best by that criterion
    # the criterion is configurable: logloss, lower is better
    cli = run([*args, "--checkpoint.monitor=val/logloss", "--checkpoint.mode=min",
               "--early_stopping.monitor=val/logloss", "--early_stopping.mode=min"])
    ckpt, stop = cli.trainer.checkpoint_callback, cli.trainer.early_stopping_callback
    assert (ckpt.monitor, ckpt.mode, stop.monitor, stop.mode) == ("val/logloss", "min", "val/logloss", "min")
    assert ckpt.best_model_score == cli.trainer.callback_metrics["val/logloss"]


def test_compare_applies_a_recipe_config_after_retrain_yaml(synth_dir: Path, tmp_path: Path) -> None:
    from autoias_pl.experiments import compare
    from tests.helpers.drivers import COMPARE_SMALL as SMALL

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {init_args: {l2_embedding: 0.02, dropout: 0.1}}\n"
                      "checkpoint: {monitor: val/logloss, mode: min}\n")
    compare.main(["--data", str(synth_dir), "--models", "ref:deepfm", "--seeds", "1", "--out", str(tmp_path / "c"),
                  "--retrain-config", str(recipe), *SMALL])
    ckpt = torch.load(tmp_path / "c" / "ref-deepfm" / "seed0" / "checkpoints" / "best.ckpt", map_location="cpu",
                      weights_only=False)
    assert (ckpt["hyper_parameters"]["l2_embedding"], ckpt["hyper_parameters"]["dropout"]) == (0.02, 0.1)
    (key,) = [k for k in ckpt["callbacks"] if "ModelCheckpoint{" in k]  # the CLI's WarmupAwareModelCheckpoint
    assert "'monitor': 'val/logloss'" in key and ckpt["callbacks"][key]["best_model_score"] > 0
    assert "early stopping (on val/auc)" in (tmp_path / "c" / "results.md").read_text()  # the recipe's stop monitor
    recipe.write_text("early_stopping: {monitor: val/logloss, mode: min}\n")
    compare.main(["--data", str(synth_dir), "--models", "ref:deepfm", "--seeds", "1", "--out", str(tmp_path / "d"),
                  "--retrain-config", str(recipe), *SMALL])
    assert "early stopping (on val/logloss)" in (tmp_path / "d" / "results.md").read_text()  # not the default's


# ----- issue 19: batch norm, lr on plateau, calibration in the checkpoint, the fit summary -----
@pytest.mark.parametrize("architecture", ["deepfm", "ref:deepfm", "ref:dcnv2", "ref:finalmlp"])
def test_batch_norm_follows_every_hidden_linear(architecture: str) -> None:
    m = module(architecture, batch_norm=True, dropout=0.5)
    mlps = [getattr(m.model, name) for name in ("mlp", "deep", "streams") if hasattr(m.model, name)]
    hidden = [x for mlp in mlps for x in mlp.modules() if isinstance(x, torch.nn.Linear) and x.out_features > 1]
    norms = [x for x in m.model.modules() if isinstance(x, torch.nn.BatchNorm1d)]
    assert norms and [n.num_features for n in norms] == [x.out_features for x in hidden]
    assert "running_mean" in "".join(m.model.state_dict())
    x = ids(64)
    m.eval()
    torch.testing.assert_close(m.model(x), m.model(x))  # eval: running statistics, no dropout
    m.train()
    assert not torch.equal(m.model(x), m.model(x))  # dropout after the batch norm, in training
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in module(architecture).model.modules())  # off


def test_in_space_batch_norm_normalises_the_layer_before_its_relu() -> None:
    m = module("dnn", batch_norm=True).train()
    seen: list[torch.Tensor] = []
    m.model.mlp[0].register_forward_hook(lambda mod, inp, out: seen.append(out))  # the Linear's output
    m.model.norms[0].register_forward_hook(lambda mod, inp, out: seen.append(out))  # after the batch norm
    m.model(ids(256))
    pre, post = seen
    expected = (pre - pre.mean(0)) / (pre.var(0, unbiased=False) + 1e-5).sqrt()  # fresh BN: weight 1, bias 0
    torch.testing.assert_close(post, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("monitor", "mode"), [("val/auc", "max"), ("val/logloss", "min")])
def test_lr_on_plateau_watches_the_monitor(monitor: str, mode: str) -> None:
    m = module(lr_plateau_factor=0.5, lr_plateau_patience=2, lr_plateau_monitor=monitor,
               optimizer=lambda params: torch.optim.Adam(params, lr=0.01))
    config = m.configure_optimizers()
    plateau = config["lr_scheduler"]["scheduler"]
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (config["lr_scheduler"]["monitor"], plateau.mode, plateau.factor, plateau.patience) == (monitor, mode,
                                                                                                 0.5, 2)
    for value in (1.0, 1.0, 1.0):  # the first sets the best, then patience 2 non-improvements: no cut yet
        plateau.step(value)
    assert config["optimizer"].param_groups[0]["lr"] == 0.01
    plateau.step(1.0)
    assert config["optimizer"].param_groups[0]["lr"] == 0.005
    assert isinstance(module().configure_optimizers(), torch.optim.Adam)  # off: the optimizer alone
    with pytest.raises(ValueError, match="lr_plateau_factor"):
        module(lr_plateau_factor=1.0)


def test_fit_summary_calibrator_and_test_report_through_the_cli(synth_dir: Path, tmp_path: Path) -> None:
    """Two epochs under retrain.yaml's patience: the cap is hit while improving (a warning, `hit_max_epochs` in
    fit_summary.json and test_metrics.json with the best epoch, the one best.ckpt holds); best.ckpt alone
    restores the calibrator fitted on the validation logits of its weights; test reports the calibrated
    logloss and ECE."""
    from autoias_pl.cli import run

    configs = [a for c in RETRAIN for a in ("-c", str(CONFIGS / c))]
    common = [f"--data.data_dir={synth_dir}", "--data.batch_size=512", "--model.init_args.architecture=ref:deepfm",
              "--model.init_args.baseline_dim=4", "--model.init_args.baseline_hidden=8",
              "--model.init_args.baseline_layers=1", "--model.init_args.optimizer.init_args.lr=0.01",
              f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=",
              "--trainer.logger.init_args.version=r", *QUIET]
    run(["fit", *configs, *common, "--trainer.max_epochs=2", "--trainer.limit_train_batches=4"])
    summary = json.loads((tmp_path / "r" / "fit_summary.json").read_text())
    best = tmp_path / "r" / "checkpoints" / "best.ckpt"
    epoch = torch.load(best, map_location="cpu", weights_only=False)["epoch"]
    best_score = summary.pop("best_score")
    assert summary == {"epochs": 2, "max_epochs": 2, "monitor": "val/auc", "best_epoch": epoch,
                       "checkpoint_monitor": "val/auc", "hit_max_epochs": True}
    restored = AutoIASRetrain.load_from_checkpoint(best, map_location="cpu").eval()
    cal = restored.calibrator
    assert cal.method == "platt" and bool(cal.fitted) and float(cal.slope) != 1.0
    schema = Schema.load(synth_dir)
    val = read_rows(synth_dir, "val", schema.rows["val"])
    with torch.no_grad():
        logits = restored.model(val.features)
        refit = type(cal)("platt").fit(logits, val.labels)
    # fit_summary's best_score is best.ckpt's val AUC (what finalize --recipe chooses on)
    assert best_score == pytest.approx(auc(logits.double().numpy(), val.labels.numpy()), abs=1e-6)
    assert float(cal.slope) == pytest.approx(float(refit.slope), abs=1e-5)
    assert float(cal.bias) == pytest.approx(float(refit.bias), abs=1e-5)
    run(["test", *configs, *common, f"--ckpt_path={best}"])
    m = json.loads((tmp_path / "r" / "test_metrics.json").read_text())
    assert m["hit_max_epochs"] is True and m["best_epoch"] == epoch and m["calibration"] == "platt"
    assert 0 < m["test/logloss_calibrated"] and 0 <= m["test/ece"] < 1 and 0 <= m["test/ece_raw"] < 1
    stats = torch.tensor(m["reliability"]["calibrated"])  # (3, 15): count, sum p, sum y
    assert stats.shape == (3, 15) and stats[0].sum() == schema.rows["test"]
    assert m["calibrator"]["slope"] == pytest.approx(float(cal.slope))
