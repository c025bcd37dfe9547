"""Retrain one architecture from scratch (paper 3.1: the searched model is trained alone) and test it.

The architecture is a JSON file written by the search (`best_architecture.json`) or the name of a
hand-crafted baseline expressed in the same space (`lr`, `fm`, `dnn`, `deepfm`, `ipnn`, `wide_deep`), built
as the standalone `CTRModel`; or a published reference model named `ref:<model>` (autoias_pl/references.py,
a plain nn.Module outside the space, e.g. `ref:deepfm`). This module only trains it: one shared step for
train/val/test, BCE on logits, AUC and logloss from `ctr_metrics`, `test_metrics.json` at the end of test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from autoias_pl.baselines import BASELINES, baseline
from autoias_pl.ctr_model import CTRModel
from autoias_pl.data.batch import CTRBatch
from autoias_pl.io import atomic_write_text, run_dir
from autoias_pl.metrics import ctr_metrics
from autoias_pl.references import REFERENCES, is_reference, reference
from autoias_pl.space import FUNCTIONS, Architecture, ArchitectureError, SearchSpace
from autoias_pl.supernet.checkpoint import supernet_from_checkpoint
from autoias_pl.supernet.export import export

TEST_METRICS_FILE = "test_metrics.json"


def baseline_space(field_names: Sequence[str], schema_hash: str, dim: int, hidden: int, layers: int) -> SearchSpace:
    """The space the baselines are written in: one embedding/projection width, `layers` layers of `hidden`."""
    return SearchSpace(
        field_names=tuple(field_names),
        emb_dims=(dim,),
        proj_dims=(dim,),
        functions=FUNCTIONS,
        num_layers=layers,
        hidden_units=(hidden,),
        output_insertion=True,
        schema_hash=schema_hash,
    )


def resolve_architecture(
    architecture: str,
    field_names: Sequence[str],
    schema_hash: str,
    baseline_dim: int,
    baseline_hidden: int,
    baseline_layers: int,
) -> Architecture:
    """A baseline by name, or an architecture JSON searched on this data schema (else ArchitectureError)."""
    if architecture in BASELINES:
        space = baseline_space(field_names, schema_hash, baseline_dim, baseline_hidden, baseline_layers)
        return baseline(architecture, space, dim=baseline_dim, hidden=baseline_hidden)
    path = Path(architecture)
    if not path.is_file():
        raise ArchitectureError(
            f"architecture {architecture!r}: neither a baseline name {sorted(BASELINES)}, a reference "
            f"model {list(REFERENCES)} nor an existing architecture JSON file (e.g. <search log_dir>/best_architecture.json)"
        )
    try:
        arch = Architecture.load(path, schema_hash=schema_hash)
    except ArchitectureError as e:
        raise ArchitectureError(f"{e}. Retraining refuses it: search again on this data.") from e
    if list(arch.space.field_names) != list(field_names):
        raise ArchitectureError(
            f"{path}: fields {list(arch.space.field_names)} differ from the data's {list(field_names)}"
        )
    return arch


def embedded_architecture(d: dict[str, Any], field_names: Sequence[str], schema_hash: str) -> Architecture:
    """The architecture a checkpoint carries (`Architecture.to_json_dict()`), checked against this data."""
    arch = Architecture.from_json_dict(d, source="architecture_json")
    if arch.space.schema_hash != schema_hash or list(arch.space.field_names) != list(field_names):
        raise ArchitectureError(
            f"architecture_json: searched on data schema {arch.space.schema_hash!r} with fields "
            f"{list(arch.space.field_names)}, but this data is {schema_hash!r} with {list(field_names)}"
        )
    return arch


class AutoIASRetrain(LightningModule):
    """Train the standalone model of one architecture and report val/test AUC and logloss.

    `field_names`, `vocab_sizes` and `schema_hash` are linked from the DataModule by the CLI.
    `architecture`: a baseline name, a path to an architecture JSON (refused if searched on another data
    schema) or a reference model `ref:<model>` (autoias_pl/references.py; sized by the baseline_* arguments,
    no `Architecture`: `architecture_json` stays None and the report counts the module's parameters). `baseline_dim`, `baseline_hidden`, `baseline_layers`: embedding width, MLP width and depth of
    the baselines (the structure of each is in autoias_pl/baselines.py).
    `init_from_search`: a search checkpoint; at the start of a fresh fit (`on_fit_start`, not when resuming
    from a checkpoint) the model takes its supernet's weights (via export) instead of a fresh initialisation.

    Self-contained checkpoints: `__init__` resolves the architecture once and stores it, as its JSON dict,
    in the hyperparameter `architecture_json`, which takes precedence over `architecture` when given. So a
    checkpoint rebuilds its model without reading any other file: `load_from_checkpoint` passes its
    hyperparameters back to `__init__`, and `autoias test|predict|validate --ckpt_path` does too (LightningCLI
    parses the checkpoint's hyperparameters over the config). `init_from_search` is only read at fit start.
    """

    def __init__(
        self,
        field_names: list[str],
        vocab_sizes: list[int],
        schema_hash: str,
        architecture: str = "deepfm",
        baseline_dim: int = 16,
        baseline_hidden: int = 400,
        baseline_layers: int = 3,
        optimizer: OptimizerCallable = torch.optim.Adam,
        init_from_search: str | None = None,
        architecture_json: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        if len(vocab_sizes) != len(field_names):
            raise ValueError(f"{len(vocab_sizes)} vocab_sizes for {len(field_names)} field_names")
        self.arch: Architecture | None
        if architecture_json is None and is_reference(architecture):  # a published model, not in the space:
            self.arch = None  # its name and the baseline_* sizes rebuild it (architecture_json stays None)
            if init_from_search is not None:
                raise ArchitectureError(f"init_from_search: {architecture} is a reference model, not an "
                                        "architecture of the search space (the supernet holds no weights for it)")
            self.model = reference(architecture, vocab_sizes, baseline_dim, baseline_hidden, baseline_layers)
        else:
            if architecture_json is None:
                self.arch = resolve_architecture(
                    architecture, field_names, schema_hash, baseline_dim, baseline_hidden, baseline_layers
                )
            else:
                self.arch = embedded_architecture(architecture_json, field_names, schema_hash)
            self.hparams["architecture_json"] = self.arch.to_json_dict()  # what a checkpoint rebuilds it from
            self.model = CTRModel(self.arch, vocab_sizes)
        self.optimizer = optimizer
        self.val_metrics = ctr_metrics("val/")
        self.test_metrics = ctr_metrics("test/")

    def on_fit_start(self) -> None:
        """At the start of a fresh fit (not a resumed one: its weights are restored by now), copy the
        weights of `init_from_search` into the model."""
        if self.hparams.init_from_search is not None and self.trainer.ckpt_path is None:
            init_from_search(self.model, self.hparams.init_from_search, self.arch)

    # ----- one shared step -----
    def _step(self, batch: CTRBatch, stage: str) -> Tensor:
        logits = self.model(batch.features)  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        n = batch.labels.numel()
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage == "train",
                 batch_size=n, sync_dist=stage != "train")
        if stage != "train":
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(logits.detach(), batch.labels)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def training_step(self, batch: CTRBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: CTRBatch, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Click probabilities (B,) and labels (B,) for the ParquetPredictionWriter."""
        return torch.sigmoid(self.model(batch.features).float()), batch.labels

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())

    def on_test_epoch_end(self) -> None:
        values = {k: float(v) for k, v in self.test_metrics.compute().items()}  # every rank: synced
        path = run_dir(self.trainer) / TEST_METRICS_FILE  # every rank: log_dir is a broadcast under DDP
        if self.trainer.is_global_zero:
            atomic_write_text(path, json.dumps(self.report(values), indent=1) + "\n")

    def report(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Test metrics with the architecture's summary: what `test_metrics.json` holds."""
        return {
            **metrics,
            "architecture": self.hparams.architecture,
            "schema_hash": self.hparams.schema_hash,
            "params": sum(p.numel() for p in self.model.parameters()),
            "checkpoint": self.trainer.ckpt_path,
            **(self.arch.summary() if self.arch is not None else {"macs_per_sample": self.model.num_macs()}),
        }


def init_from_search(model: CTRModel, path: str, arch: Architecture) -> None:
    """Overwrite `model` (the standalone model of `arch`) with `arch` exported from search checkpoint `path`."""
    supernet = supernet_from_checkpoint(path)
    schema_hash = arch.space.schema_hash
    if supernet.space.schema_hash != schema_hash:
        raise ArchitectureError(
            f"{path}: search checkpoint on data schema {supernet.space.schema_hash!r}, this data is {schema_hash!r}"
        )
    if supernet.space != arch.space:
        raise ArchitectureError(
            f"{path}: the architecture's search space differs from the checkpoint's; init_from_search needs "
            "an architecture JSON written by that search"
        )
    model.load_state_dict(export(supernet, arch).state_dict())  # copies onto the model's device
