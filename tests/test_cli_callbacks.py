"""autoias_pl/cli_callbacks.py: the CLI's early stopping counts no validation of a search's warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from autoias_pl.cli_callbacks import WarmupAwareEarlyStopping


class Declining(LightningModule):
    """val/score falls every epoch (best at epoch 0); `in_warmup` for the first `warm` epochs."""

    def __init__(self, warm: int | None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.warm = warm

    @property
    def in_warmup(self) -> bool:
        return self.warm is not None and self.current_epoch < self.warm

    def training_step(self, batch, batch_idx):
        return (self.w * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
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
