"""Callbacks of the CLI: the parquet prediction writer, the per-stage config saver, and the early stopping and
best checkpoint that wait for a search's warm-up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from autoias_pl.io import atomic_write_parquet, run_dir


def _in_warmup(module: LightningModule) -> bool:
    return bool(getattr(module, "in_warmup", False))


class WarmupAwareEarlyStopping(EarlyStopping):
    """EarlyStopping that ignores the validations a module makes while its `in_warmup` is true (the search's
    uniform warm-up: no candidate exists yet, the validation scores the teacher and logs no val/score).
    Patience counts validations after the warm-up only. Other modules: EarlyStopping. (Both hooks where
    EarlyStopping may check: after validation, or at the end of the training epoch.)"""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not _in_warmup(pl_module):
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not _in_warmup(pl_module):
            super().on_train_epoch_end(trainer, pl_module)


class WarmupAwareModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps no top-k ("best") checkpoint of a validation made while the module's
    `in_warmup` is true (nothing is monitored then: a search logs val/score after its warm-up only); the last
    checkpoint is still saved, so an interrupted warm-up resumes. Other modules: ModelCheckpoint."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._last_only(pl_module):
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._last_only(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    @contextmanager
    def _last_only(self, pl_module: LightningModule) -> Iterator[None]:
        """save_top_k = 0 (no monitored checkpoint, no monitor lookup) while the module is in its warm-up."""
        k = self.save_top_k
        if _in_warmup(pl_module):
            self.save_top_k = 0
        try:
            yield
        finally:
            self.save_top_k = k


class ParquetPredictionWriter(BasePredictionWriter):
    """Writes `predict` outputs, (probabilities (B,), labels (B,)) per batch, to one parquet file per rank.

    Columns `prob` (float32) and `label` (float32), rows in the order of the predict split (one rank).
    With several ranks each writes `<stem>-rank<r>.parquet` (rows of a rank are its own shard slice).
    `output_dir` defaults to the run's log_dir.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.parquet") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir, self.filename = output_dir, filename
        self.written: list[Path] = []

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if predictions and isinstance(predictions[0], list):  # several predict dataloaders: take the first
            predictions = predictions[0]
        probs = torch.cat([p for p, _ in predictions]) if predictions else torch.empty(0)  # (R,)
        labels = torch.cat([y for _, y in predictions]) if predictions else torch.empty(0)  # (R,)
        name = Path(self.filename)
        if trainer.world_size > 1:
            name = name.with_name(f"{name.stem}-rank{trainer.global_rank}{name.suffix}")
        path = Path(self.output_dir) if self.output_dir else run_dir(trainer)
        table = pa.table({
            "prob": pa.array(probs.float().cpu().numpy()),
            "label": pa.array(labels.float().cpu().numpy()),
        })
        atomic_write_parquet(path / name, table)
        self.written.append(path / name)


class StageConfigCallback(SaveConfigCallback):
    """Saves the resolved config as `config.yaml` for fit and `config_<stage>.yaml` for validate/test/predict.

    So a test or predict run may share the log_dir of the fit it evaluates without overwriting its config.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))  # a TrainerFn enum or its string
        if stage != "fit":
            self.config_filename = f"config_{stage}.yaml"
        super().setup(trainer, pl_module, stage)
