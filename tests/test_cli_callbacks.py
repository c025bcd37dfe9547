"""autoias_pl/cli_callbacks.py: the CLI's early stopping and best checkpoint count no validation of a search's
warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from autoias_pl.cli_callbacks import WarmupAwareEarlyStopping, WarmupAwareModelCheckpoint


class Declining(LightningModule):
    """val/score falls every epoch (best at epoch 0); `in_warmup` for the first `warm` epochs."""

    def __init__(self, warm: int | None, log_in_warmup: bool = True) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.warm, self.log_in_warmup = warm, log_in_warmup

    @property
    def in_warmup(self) -> bool:
        return self.warm is not None and self.current_epoch < self.warm

    def training_step(self, batch, batch_idx):
        return (self.w * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        if self.log_in_warmup or not self.in_warmup:  # the search logs no val/score in its warm-up
            self.log("val/score", 1.0 - 0.1 * self.current_epoch)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(1, 1)), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def stopped_after(module: LightningModule, callback: EarlyStopping, tmp_path: Path) -> int:
    trainer = Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback],
                      default_root_dir=str(tmp_path))
    trainer.fit(module)
    return trainer.current_epoch


@pytest.mark.parametrize("cls", [EarlyStopping, WarmupAwareEarlyStopping])
def test_without_a_warmup_it_is_early_stopping(cls: type[EarlyStopping], tmp_path: Path) -> None:
    assert stopped_after(Declining(None), cls("val/score", mode="max", patience=1), tmp_path) == 2


def test_warmup_validations_are_not_counted(tmp_path: Path) -> None:
    # plain: the best is epoch 0's, so it stops after epoch 1; aware: epochs 0-2 are skipped, epoch 3 is the
    # first counted (its best), epoch 4 does not improve: stops there
    assert stopped_after(Declining(3), EarlyStopping("val/score", mode="max", patience=1), tmp_path) == 2
    assert stopped_after(Declining(3), WarmupAwareEarlyStopping("val/score", mode="max", patience=1), tmp_path) == 5


def test_early_stopping_skips_a_warmup_that_logs_no_score(tmp_path: Path) -> None:
    """As the search does: no val/score during the warm-up. Plain EarlyStopping fails on the missing metric."""
    with pytest.raises(RuntimeError, match="val/score"):
        stopped_after(Declining(3, log_in_warmup=False), EarlyStopping("val/score", mode="max", patience=1), tmp_path)
    aware = WarmupAwareEarlyStopping("val/score", mode="max", patience=1)
    assert stopped_after(Declining(3, log_in_warmup=False), aware, tmp_path) == 5


def checkpointed(module: LightningModule, callback: ModelCheckpoint, tmp_path: Path, epochs: int = 5) -> None:
    Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[callback], default_root_dir=str(tmp_path)).fit(module)


@pytest.mark.parametrize("log_in_warmup", [True, False], ids=["scored_warmup", "unscored_warmup"])
def test_best_checkpoint_is_the_best_validation_after_the_warmup(tmp_path: Path, log_in_warmup: bool) -> None:
    """val/score falls every epoch: the plain callback keeps epoch 0 (in the warm-up) as best, or fails when the
    warm-up logs no score; the aware one keeps epoch 3, the first after the warm-up, and writes last.ckpt in the
    warm-up too (a resumable warm-up)."""
    kw = {"monitor": "val/score", "mode": "max", "save_last": True, "filename": "best-{epoch}"}
    plain = ModelCheckpoint(dirpath=tmp_path / "plain", **kw)
    if log_in_warmup:
        checkpointed(Declining(3), plain, tmp_path)
        assert Path(plain.best_model_path).name == "best-epoch=0.ckpt"
    else:
        with pytest.raises(MisconfigurationException, match="val/score"):
            checkpointed(Declining(3, log_in_warmup=False), plain, tmp_path)
    aware = WarmupAwareModelCheckpoint(dirpath=tmp_path / "aware", **kw)
    checkpointed(Declining(3, log_in_warmup=log_in_warmup), aware, tmp_path)
    assert Path(aware.best_model_path).name == "best-epoch=3.ckpt"
    assert aware.best_model_score == pytest.approx(0.7)
    assert sorted(p.name for p in (tmp_path / "aware").iterdir()) == ["best-epoch=3.ckpt", "last.ckpt"]
    assert aware.save_top_k == 1  # restored after the warm-up


def test_last_checkpoint_is_written_during_the_warmup(tmp_path: Path) -> None:
    aware = WarmupAwareModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True)
    checkpointed(Declining(3, log_in_warmup=False), aware, tmp_path, epochs=2)  # the whole run in the warm-up
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["last.ckpt"] and aware.best_model_path == ""
