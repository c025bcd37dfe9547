"""CTRDataModule: loader types and shapes, the endless reward stream, CombinedLoader, epoch-driven order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.schema import Schema, SchemaError


def ids(batch: CTRBatch) -> list[tuple[int, ...]]:
    return [tuple(r) for r in batch.features.tolist()]


def check(batch: CTRBatch, rows: int | None, fields: int) -> None:
    assert isinstance(batch, CTRBatch)
    assert batch.features.dtype == torch.int64 and batch.labels.dtype == torch.float32
    assert batch.features.shape[1] == fields and batch.labels.shape == batch.features.shape[:1]
    assert rows is None or len(batch.labels) == rows


def test_schema_properties_for_cli_linking(synth_dir: Path, synth_schema: Schema) -> None:
    dm = CTRDataModule(str(synth_dir))
    assert dm.field_names == synth_schema.field_names and dm.vocab_sizes == synth_schema.vocab_sizes
    assert dm.schema_hash == synth_schema.hash and dm.schema.rows == synth_schema.rows


def test_bad_data_dir_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=str(tmp_path / "nothing")):
        CTRDataModule(str(tmp_path / "nothing"))


def test_loaders_yield_ctr_batches(synth_dir: Path, synth_schema: Schema) -> None:
    dm = CTRDataModule(str(synth_dir), batch_size=1000, eval_batch_size=300)
    train = list(dm.train_dataloader())
    assert len(train) == synth_schema.rows["train"] // 1000
    for b in train:
        check(b, 1000, 10)
    for loader, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        batches = list(loader)
        for b in batches:
            check(b, None, 10)
        assert sum(len(b.labels) for b in batches) == synth_schema.rows[split]  # every row, partial kept
    assert sum(len(b.labels) for b in dm.predict_dataloader()) == synth_schema.rows["test"]


def test_reward_stream_is_endless(synth_dir: Path, synth_schema: Schema) -> None:
    dm = CTRDataModule(str(synth_dir), reward_batch_size=256)
    it = iter(dm.reward_dataloader())
    take = 3 * synth_schema.rows["val"] // 256 + 1
    for _ in range(take):
        check(next(it), 256, 10)


def test_reward_stream_combined_with_train_in_min_size_mode(synth_dir: Path) -> None:
    dm = CTRDataModule(str(synth_dir), batch_size=2000, reward_stream=True, reward_batch_size=512)
    combined = dm.train_dataloader()
    steps = [batch for batch, _, _ in combined]
    assert len(steps) == len(combined) == 8  # bounded by train (16k rows), not by the endless reward stream
    for step in steps:
        assert set(step) == {"train", "reward"}
        check(step["train"], 2000, 10)
        check(step["reward"], 512, 10)


def test_reward_set_is_the_first_validation_rows(synth_dir: Path) -> None:
    dm = CTRDataModule(str(synth_dir))
    a, b = dm.reward_set(1500), dm.reward_set(1500)
    check(a, 1500, 10)
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert ids(dm.reward_set(100)) == ids(a)[:100]


def test_trainer_epoch_drives_the_order(synth_dir: Path) -> None:
    dm = CTRDataModule(str(synth_dir), batch_size=4000)
    loader = dm.train_dataloader()
    orders = {}
    for epoch in (0, 1, 0):
        dm.trainer = SimpleNamespace(current_epoch=epoch)
        order = [row for b in loader for row in ids(b)]
        assert orders.setdefault(epoch, order) == order  # same epoch, same order
    assert orders[0] != orders[1]
    dm.trainer = None  # detached: the loader counts its own iterations
    assert [row for b in loader for row in ids(b)] != [row for b in loader for row in ids(b)]


class _Recorder(LightningModule):
    """Logistic regression over summed embeddings; records what each training step receives."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 1)
        self.seen: list[tuple[int, int, int]] = []

    def training_step(self, batch: dict[str, CTRBatch], batch_idx: int) -> torch.Tensor:
        train, reward = batch["train"], batch["reward"]
        self.seen.append((self.current_epoch, int(train.features[0, 0]), len(reward.labels)))
        logit = self.emb(train.features).sum(dim=(1, 2))  # (B,)
        return torch.nn.functional.binary_cross_entropy_with_logits(logit, train.labels)

    def predict_step(self, batch: CTRBatch, batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self.emb(batch.features).sum(dim=(1, 2)))  # (B,)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_fit_and_predict_with_a_trainer(synth_dir: Path, synth_schema: Schema) -> None:
    dm = CTRDataModule(str(synth_dir), batch_size=4000, reward_stream=True, reward_batch_size=128)
    model = _Recorder(max(synth_schema.vocab_sizes))
    kw = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer = Trainer(max_epochs=2, limit_val_batches=0, enable_model_summary=False, **kw)
    trainer.fit(model, datamodule=dm)
    assert [e for e, _, _ in model.seen] == [0] * 4 + [1] * 4
    assert {r for _, _, r in model.seen} == {128}
    assert [f for e, f, _ in model.seen if e == 0] != [f for e, f, _ in model.seen if e == 1]
    preds = Trainer(**kw).predict(model, datamodule=dm)
    assert sum(len(p) for p in preds) == synth_schema.rows["test"]


def test_core_data_modules_do_not_import_lightning() -> None:
    code = (
        "import sys, autoias_pl.data.synth, autoias_pl.data.stream, autoias_pl.auc; "
        "sys.exit(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
