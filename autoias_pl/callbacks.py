"""Callbacks of the CLI: the parquet prediction writer and the per-stage config saver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback

from autoias_pl.data.schema import atomic_write


def run_dir(trainer: Trainer) -> Path:
    """The folder a run writes its files to: the logger's log_dir, else the trainer's default_root_dir.

    Call it on every rank: `trainer.log_dir` is a broadcast under DDP (rank 0 alone would hang)."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def atomic_write_parquet(path: str | Path, table: pa.Table) -> None:
    """Write `table` to `path` through a temporary file in the same folder and a rename."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


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
