"""The retraining recipe of AutoIASRetrain (issue 10): embedding L2 on the looked-up rows, weight decay on
dense matrices, dropout (train only), and the checkpoint / early-stopping criterion of configs/retrain.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from autoias_pl.data.batch import CTRBatch
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
    for key in ("l2_embedding", "weight_decay_dense", "dropout"):
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
    from autoias_pl import compare
    from tests.helpers.drivers import COMPARE_SMALL as SMALL

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {init_args: {l2_embedding: 0.02, dropout: 0.1}}\n"
                      "checkpoint: {monitor: val/logloss, mode: min}\n")
    compare.main(["--data", str(synth_dir), "--models", "ref:deepfm", "--seeds", "1", "--out", str(tmp_path / "c"),
                  "--retrain-config", str(recipe), *SMALL])
    ckpt = torch.load(tmp_path / "c" / "ref-deepfm" / "seed0" / "checkpoints" / "best.ckpt", map_location="cpu",
                      weights_only=False)
    assert (ckpt["hyper_parameters"]["l2_embedding"], ckpt["hyper_parameters"]["dropout"]) == (0.02, 0.1)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
    assert "'monitor': 'val/logloss'" in key and ckpt["callbacks"][key]["best_model_score"] > 0
