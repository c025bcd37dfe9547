"""The search module: one training batch does exactly the paper's three phases, reproducibly."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from autoias_pl.auc import batched_auc
from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.memory import MemoryDataModule
from autoias_pl.search import AutoIASSearch, NonFiniteLossError
from autoias_pl.search.config import (
    DistillConfig,
    GeneratorConfig,
    RewardConfig,
    ScheduleConfig,
    SpaceConfig,
)
from autoias_pl.search.reward import RewardShaper, kd_student_loss, reinforce_loss, selection_cost
from autoias_pl.space import Architecture
from tests.helpers.auc import pairwise_auc
from tests.helpers.search import FIELDS, SMALL, data, make, tiny_data, trainer  # noqa: F401  (the `data` fixture)


# ----- the pieces, against simple references -----
def test_batched_auc_matches_pairwise_reference_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (3, 200), generator=g).float()  # many ties
    labels = (torch.rand(200, generator=g) < 0.3).float()
    got = batched_auc(scores, labels)
    for m in range(3):  # brute force over all positive/negative pairs (ties: 1/2), not auc.auc (same code)
        assert got[m].item() == pytest.approx(pairwise_auc(scores[m], labels), abs=1e-12)
    assert torch.isnan(batched_auc(scores, torch.ones(200))).all()


def test_kd_student_loss_is_eq_14_to_16() -> None:
    logits, t, y = torch.tensor([0.3, -1.0]), torch.tensor([0.6, 0.2]), torch.tensor([1.0, 0.0])
    loss, soft, hard = kd_student_loss(logits, t, y, beta=0.25)
    p = torch.sigmoid(logits)
    ref_soft = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    ref_hard = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert soft.item() == pytest.approx(ref_soft.item()) and hard.item() == pytest.approx(ref_hard.item())
    assert loss.item() == pytest.approx(0.25 * ref_soft.item() + 0.75 * ref_hard.item())


def test_ema_baseline_follows_eq_22_23() -> None:
    shaper = RewardShaper("ema", alpha_tau=0.5)
    assert shaper(torch.tensor([0.6, 0.8], dtype=torch.float64)).tolist() == pytest.approx([-0.1, 0.1])
    # tau_bar started at 0.7, then 0.5 * 0.7 + 0.5 * 0.6 = 0.65, then 0.5 * 0.65 + 0.5 * 0.8 = 0.725
    assert shaper.baseline == pytest.approx(0.725)
    assert shaper(torch.tensor([0.725], dtype=torch.float64)).item() == pytest.approx(0.0)


def test_leave_one_out_baseline_and_scaling() -> None:
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert RewardShaper("leave_one_out")(r).tolist() == pytest.approx([-1.5, 0.0, 1.5])
    scaled = RewardShaper("leave_one_out", scaling=True)(r)  # first step: divided by its own RMS
    assert scaled.pow(2).mean().item() == pytest.approx(1.0, rel=1e-6)


def test_reinforce_loss_gradient_and_entropy_bonus() -> None:
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = reinforce_loss(logp, torch.tensor([1.0, -1.0]), {"select": torch.tensor([0.5, 0.7])}, 0.1, {"select": 10})
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, 0.5])
    assert loss.item() == pytest.approx(-(-1.0 + 2.0) / 2 - 0.1 * 10 * 0.6)


def test_selection_cost_is_fraction_of_selected_vectors() -> None:
    space = make().space
    g = torch.Generator().manual_seed(0)
    archs = [Architecture.teacher(space)] + [Architecture.uniform_random(space, g) for _ in range(6)]
    expected = [sum(a.selected) / space.num_vectors for a in archs]  # counted here, per architecture
    assert len(set(expected)) > 2  # the draws select different numbers of vectors
    assert selection_cost(archs).tolist() == pytest.approx(expected, abs=1e-12)
    assert expected[0] == 1.0


# ----- the module -----
@pytest.mark.parametrize(("kw", "steps"), [({}, 3 * 8), ({"warmup_epochs": 3 / 8}, 2 * 3 + 3 * 5),
                                           ({"sampler": "uniform"}, 2 * 8)])
def test_global_step_counts_optimizer_steps(tmp_path: Path, data: MemoryDataModule, kw: dict, steps: int) -> None:
    model = make(**kw)
    t = trainer(tmp_path)
    t.fit(model, datamodule=data)
    assert int(model.batch_count) == 8 and t.global_step == steps
    assert model.warmup_batches == (3 if "warmup_epochs" in kw else 0)  # 3/8 of an epoch of 8 batches


@pytest.mark.parametrize(("kw", "moves"), [({"sampler": "uniform"}, False), ({"warmup_epochs": 1.0}, False),
                                           ({"warmup_epochs": 0.5}, True)],
                         ids=["random_search", "warmup_all_epoch", "warmup_half_epoch"])
def test_random_search_and_warmup_leave_the_generator_alone(tmp_path: Path, data: MemoryDataModule,
                                                             kw: dict, moves: bool) -> None:
    """Random search never updates the generator, nor does a warm-up that lasts the whole run (1 epoch of 1);
    a warm-up of half the run does (the check can fail)."""
    model = make(**kw)
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    trainer(tmp_path).fit(model, datamodule=data)
    same = all(torch.equal(v, model.generator.state_dict()[k]) for k, v in before.items())
    assert same is not moves and int(model.shaper.steps) == (4 if moves else 0)


def test_students_depend_on_seed_and_batch_only() -> None:
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert a.sample_students(5) == b.sample_students(5)
    assert a.sample_students(5) != a.sample_students(6) and a.sample_students(5) != c.sample_students(5)
    warm = make(seed=3)
    warm.warmup_batches = 10  # what train start sets from schedule.warmup_epochs
    assert warm.sample_students(5) != a.sample_students(5)  # uniform in warm-up


def test_single_class_reward_rows_give_no_generator_update(tmp_path: Path, data: MemoryDataModule) -> None:
    model = make()
    val = data.val
    model.set_reward_set(CTRBatch(val.features[:512], torch.zeros(512)))
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    t = trainer(tmp_path)
    t.fit(model, datamodule=data)
    assert t.global_step == 2 * 8 and int(model.shaper.steps) == 0
    assert all(torch.equal(v, model.generator.state_dict()[k]) for k, v in before.items())


def test_reward_stream_batches(tmp_path: Path) -> None:
    dm = MemoryDataModule(tiny_data(2048, seed=0), tiny_data(1024, seed=1), batch_size=256, reward_stream=True,
                          eval_batch_size=512)
    model = make(reward_rows=0)
    t = trainer(tmp_path)
    t.fit(model, datamodule=dm)
    assert t.global_step == 3 * 8 and int(model.shaper.steps) == 8


def test_paper_recipe_without_a_reward_stream_is_a_clear_error(tmp_path: Path, data: MemoryDataModule) -> None:
    with pytest.raises(ValueError, match="reward stream"):
        trainer(tmp_path).fit(make(reward_rows=0), datamodule=data)


class _PoisonAt(Callback):
    """Sets the supernet's read-out bias to NaN at the start of training batch `batch`."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer: Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.batch:
            with torch.no_grad():
                module.supernet.readout.bias.fill_(float("nan"))


def test_non_finite_loss_names_phase_and_batch(tmp_path: Path, data: MemoryDataModule) -> None:
    """A checkpoint after every batch: batches 0-2 leave three (finite) checkpoints, batch 3's NaN loss is
    refused before its step, so no checkpoint follows it."""
    model = make()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    t = trainer(tmp_path, enable_checkpointing=True, callbacks=[ck, _PoisonAt(3)])
    with pytest.raises(NonFiniteLossError, match=r"teacher loss .* at batch 3"):
        t.fit(model, datamodule=data)
    saved = sorted((tmp_path / "ck").glob("*.ckpt"))
    assert [p.name for p in saved] == [f"epoch=0-step={3 * b}.ckpt" for b in (1, 2, 3)]
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_best_architecture_json_and_early_stopping(tmp_path: Path, data: MemoryDataModule) -> None:
    model = make()
    t = trainer(tmp_path, epochs=30, callbacks=[EarlyStopping("val/auc", mode="max", patience=1)])
    t.fit(model, datamodule=data)
    assert t.current_epoch < 30  # early stopping ended the search
    path = tmp_path / "best_architecture.json"
    best = Architecture.load(path)
    prov = json.loads(path.read_text())["provenance"]
    assert prov["val_auc"] == prov["val_score"] == pytest.approx(model.best_score)  # cost_weight 0
    assert {"epoch", "val_logloss", "step"} <= set(prov)
    assert best == model.best_architecture
    assert {"val/auc", "val/logloss", "val/params"} <= set(t.callback_metrics)


def test_resume_continues_the_same_trajectory(tmp_path: Path, data: MemoryDataModule) -> None:
    kw = {"baseline": "leave_one_out", "reward_scaling": True, "entropy_weight": 0.01, "warmup_epochs": 0.25}
    straight = make(**kw)
    trainer(tmp_path / "a", epochs=2).fit(straight, datamodule=data)
    first = make(**kw)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    trainer(tmp_path / "b", epochs=1, enable_checkpointing=True, callbacks=[ck]).fit(first, datamodule=data)
    resumed = make(**kw)
    trainer(tmp_path / "c", epochs=2, enable_checkpointing=True).fit(resumed, datamodule=data,
                                                                     ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    for name, value in straight.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[name], value, atol=1e-6, rtol=0)
    assert resumed.shaper.baseline == pytest.approx(straight.shaper.baseline, abs=1e-12)
    assert int(resumed.batch_count) == int(straight.batch_count) == 16
    assert resumed.best_score == straight.best_score


def test_tensorboard_event_file_has_the_search_tags(tmp_path: Path, data: MemoryDataModule) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    trainer(tmp_path, epochs=2, logger=logger, log_every_n_steps=1).fit(make(), datamodule=data)
    tags: dict[str, list[str]] = {}
    for events in Path(logger.log_dir).glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0}).Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, []).extend(names)
    scalars = {"train/teacher_loss", "train/student_loss", "train/student_soft_loss", "train/student_hard_loss",
               "search/reward", "search/baseline", "search/auc", "val/auc", "val/logloss", "val/params"}
    scalars |= {f"search/entropy/{c}" for c in ("emb", "proj", "func", "select", "insert", "hidden")}
    assert scalars <= set(tags["scalars"])
    assert {"search/pair_selection", "search/embedding_dims", "search/insertion"} <= set(tags["images"])
    assert any(t.startswith("search/architecture") for t in tags["tensors"])
    assert (Path(logger.log_dir) / "best_architecture.json").is_file()


def test_constructor_is_typed_for_lightning_cli() -> None:
    from jsonargparse import ArgumentParser

    assert len(inspect.signature(AutoIASSearch).parameters) <= 12  # the recipe is nested configs
    parser = ArgumentParser()
    parser.add_class_arguments(AutoIASSearch, "model")
    base = ["--model.field_names=[a,b]", "--model.vocab_sizes=[3,4]"]
    cfg = parser.parse_args([*base, "--model.reward.baseline=leave_one_out", "--model.schedule.warmup_epochs=0.5"])
    assert cfg.model.distill.num_students == 9 and cfg.model.distill.beta == 0.5 and cfg.model.reward.num_archs == 4
    assert cfg.model.reward.baseline == "leave_one_out" and cfg.model.schedule.warmup_epochs == 0.5
    with pytest.raises(SystemExit):  # not one of the Literal's values: refused by the parser
        parser.parse_args([*base, "--model.generator.proposer=bogus"])
    for bad, field in (("--model.distill.uniform_students=10", "DistillConfig.uniform_students"),
                       ("--model.reward.refine_sweeps=1", "RewardConfig.refine_sweeps")):  # refused on instantiation
        with pytest.raises(ValueError, match=field):
            (getattr(parser, "instantiate", None) or parser.instantiate_classes)(parser.parse_args([*base, bad]))


@pytest.mark.parametrize(("config", "kw", "field"), [
    (SpaceConfig, {"num_layers": 0}, "SpaceConfig.num_layers"),
    (SpaceConfig, {"functions": ("product", "dot")}, "SpaceConfig.functions"),
    (DistillConfig, {"num_students": 3, "uniform_students": 4}, "DistillConfig.uniform_students"),
    (GeneratorConfig, {"proposer": "bogus"}, "GeneratorConfig.proposer"),
    (RewardConfig, {"prune_tolerance": 1e-3}, "RewardConfig.prune_tolerance"),
    (RewardConfig, {"num_archs": 0}, "RewardConfig.num_archs"),
    (ScheduleConfig, {"warmup_epochs": -1}, "ScheduleConfig.warmup_epochs"),
])
def test_configs_refuse_bad_values_naming_the_field(config: type, kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        config(**kw)


@pytest.mark.parametrize("reward_stream", [False, True], ids=["reward_set", "reward_stream"])
def test_runs_on_the_ctr_datamodule(tmp_path: Path, synth_dir: Path, reward_stream: bool) -> None:
    from autoias_pl.data.datamodule import CTRDataModule

    dm = CTRDataModule(synth_dir, batch_size=1024, eval_batch_size=4096, reward_stream=reward_stream,
                       reward_batch_size=1024)
    dm.setup("fit")
    model = AutoIASSearch.from_flat(dm.field_names, dm.vocab_sizes, dm.schema_hash, **{**SMALL, "num_layers": 1},
                                    reward_rows=0 if reward_stream else 2048)
    t = trainer(tmp_path, limit_train_batches=3)
    t.fit(model, datamodule=dm)
    assert t.global_step == 3 * 3 and int(model.shaper.steps) == 3
    assert Architecture.load(tmp_path / "best_architecture.json", schema_hash=dm.schema_hash)
