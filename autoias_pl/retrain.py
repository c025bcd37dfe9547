"""Retrain one architecture from scratch (paper 3.1: the searched model is trained alone) and test it.

The architecture is a JSON file written by the search (`best_architecture.json`) or the name of a
hand-crafted baseline expressed in the same space (`lr`, `fm`, `dnn`, `deepfm`, `ipnn`, `wide_deep`), built
as the standalone `CTRModel`; or a published reference model named `ref:<model>` (autoias_pl/references.py,
a plain nn.Module outside the space, e.g. `ref:deepfm`). This module only trains it: one shared step for
train/val/test, BCE on logits, AUC and logloss from `ctr_metrics`, `test_metrics.json` at the end of test.

Regularization (the retraining recipe, off by default here; configs/retrain.yaml picks them, as measured in
docs/usage.md "Retraining recipe"): `l2_embedding`, an L2 penalty on the embedding rows looked up in
the batch; `weight_decay_dense`, L2 weight decay on the dense weight matrices; `dropout` after every hidden
ReLU of the MLP; `batch_norm` in the MLP; `lr_plateau_factor`, the learning rate reduced on a plateau of the
monitored validation metric. Validation also logs `val/auc_minus_logloss` (FuxiCTR's default monitor).

Calibration (autoias_pl/calibration.py): every validation fits the `calibration` map (Platt by default) on
that validation's logits, so each checkpoint (best.ckpt included) carries the calibrator of its own weights
in its state dict (`calibrator.*`). Test reports AUC, raw and calibrated logloss and ECE (15 bins) and logs a
reliability diagram; predict writes calibrated probabilities. `fit_summary.json` (beside checkpoints/) says
how the fit ended (epochs, best epoch, whether it hit max_epochs while still improving); test copies it
into `test_metrics.json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from autoias_pl.baselines import BASELINES, baseline
from autoias_pl.calibration import Calibrator, reliability_figure
from autoias_pl.ctr_model import CTRModel
from autoias_pl.data.batch import CTRBatch
from autoias_pl.io import atomic_write_text, run_dir
from autoias_pl.metrics import BinaryLogLoss, CalibrationError, ctr_metrics
from autoias_pl.references import REFERENCES, is_reference, reference, reference_args
from autoias_pl.space import FUNCTIONS, Architecture, ArchitectureError, SearchSpace
from autoias_pl.supernet.checkpoint import supernet_from_checkpoint
from autoias_pl.supernet.extract import extract_model

log = logging.getLogger(__name__)
TEST_METRICS_FILE = "test_metrics.json"
FIT_SUMMARY_FILE = "fit_summary.json"  # in the fit's run folder, beside checkpoints/


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
    no `Architecture`: `architecture_json` stays None and the report counts the module's parameters).
    `baseline_dim`, `baseline_hidden`, `baseline_layers`: embedding width, MLP width and depth of the
    baselines (the structure of each is in autoias_pl/baselines.py); a reference may take the MLP's widths
    as a list, e.g. `baseline_hidden: [256, 128]` (DeepCTR-Torch's default DNN).
    `init_from_search`: a search checkpoint; at the start of a fresh fit (`on_fit_start`, not when resuming
    from a checkpoint) the model takes its supernet's weights (via extract_model) instead of a fresh initialisation.

    Regularization (training steps only; val/test losses are plain BCE):
    - `l2_embedding` (lambda): adds lambda * sum over the batch's lookups of ||e||^2 / B to the mean BCE, i.e.
      per sample the squared norm of every embedding row it looked up, over every `nn.Embedding` of the model
      (the first-order weights of the references included). Only rows in the batch are penalized, each in
      proportion to its frequency (the lazy, per-batch form of the CTR literature's embedding L2; DeepCTR-Torch
      instead adds l2 * ||W||^2 of whole tables to a SUM-reduced loss). Logged as `train/l2`.
    - `weight_decay_dense`: weight decay (the optimizer's own: coupled L2 for Adam, decoupled for AdamW) on
      every parameter of >= 2 dims outside the embeddings (MLP, cross, projection matrices; not biases); the
      embeddings keep the optimizer's weight_decay (0 unless set in its init_args). 0: one param group.
    - `dropout`: the drop rate after each hidden layer's ReLU of the MLP, as the papers' DNN parts have it.
      References with an MLP take it as their `dropout` argument (ref:lr and ref:fm have no MLP and ignore
      it); an in-space architecture gets it on the outputs of its MLP layers (before their ReLU, the same:
      the mask is non-negative). Off in eval, so validation and test are deterministic.
    - `batch_norm`: BatchNorm1d after each hidden Linear of the MLP, before its ReLU (FuxiCTR's
      `batch_norm`), in the in-space model and every reference with an MLP.
    - `lr_plateau_factor` (0: off): ReduceLROnPlateau on `lr_plateau_monitor` (mode max unless its name has
      "loss"), multiplying the lr by the factor after `lr_plateau_patience` validations without improvement.
    `calibration`: "platt", "isotonic" or "none" (autoias_pl/calibration.py), fitted at every validation.

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
        baseline_hidden: int | list[int] = 400,
        baseline_layers: int = 3,
        optimizer: OptimizerCallable = torch.optim.Adam,
        init_from_search: str | None = None,
        architecture_json: dict[str, Any] | None = None,
        l2_embedding: float = 0.0,
        weight_decay_dense: float = 0.0,
        dropout: float = 0.0,
        batch_norm: bool = False,
        lr_plateau_factor: float = 0.0,
        lr_plateau_patience: int = 1,
        lr_plateau_monitor: str = "val/auc",
        calibration: str = "platt",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        if len(vocab_sizes) != len(field_names):
            raise ValueError(f"{len(vocab_sizes)} vocab_sizes for {len(field_names)} field_names")
        if l2_embedding < 0 or weight_decay_dense < 0 or not 0 <= dropout < 1:
            raise ValueError(f"need l2_embedding >= 0, weight_decay_dense >= 0 and 0 <= dropout < 1, got "
                             f"{l2_embedding}, {weight_decay_dense}, {dropout}")
        if not 0 <= lr_plateau_factor < 1:
            raise ValueError(f"need 0 <= lr_plateau_factor < 1 (0: off), got {lr_plateau_factor}")
        self.arch: Architecture | None
        if architecture_json is None and is_reference(architecture):  # a published model, not in the space:
            self.arch = None  # its name and the baseline_* sizes rebuild it (architecture_json stays None)
            if init_from_search is not None:
                raise ArchitectureError(f"init_from_search: {architecture} is a reference model, not an "
                                        "architecture of the search space (the supernet holds no weights for it)")
            options = {"dropout": dropout, "batch_norm": batch_norm}
            kwargs = {k: v for k, v in options.items() if v and k in reference_args(architecture)}
            self.model = reference(architecture, vocab_sizes, baseline_dim, baseline_hidden, baseline_layers,
                                   **kwargs)
        else:
            if not isinstance(baseline_hidden, int):
                raise ArchitectureError(f"baseline_hidden={baseline_hidden}: a list of widths is for ref: models "
                                        "only; the baselines of the space have one hidden width")
            if architecture_json is None:
                self.arch = resolve_architecture(
                    architecture, field_names, schema_hash, baseline_dim, baseline_hidden, baseline_layers
                )
            else:
                self.arch = embedded_architecture(architecture_json, field_names, schema_hash)
            self.hparams["architecture_json"] = self.arch.to_json_dict()  # what a checkpoint rebuilds it from
            self.model = CTRModel(self.arch, vocab_sizes, batch_norm=batch_norm)
            if dropout:  # relu(drop(z)) == drop(relu(z)): the hidden outputs' dropout, no new modules
                for layer in self.model.norms if batch_norm else self.model.mlp:  # after the batch norm
                    layer.register_forward_hook(self._drop)
        self.embeddings = [m for m in self.model.modules() if isinstance(m, nn.Embedding)]
        self._lookups: list[Tensor] | None = None  # the training step's looked-up rows, when l2_embedding > 0
        if l2_embedding:
            for m in self.embeddings:
                m.register_forward_hook(self._record)
        self.optimizer = optimizer
        self.calibrator = Calibrator(calibration)
        self.val_metrics = ctr_metrics("val/")
        self.test_metrics = ctr_metrics("test/")
        self.test_calibrated = BinaryLogLoss()  # of the calibrated logits
        self.test_ece, self.test_ece_raw = CalibrationError(), CalibrationError()
        self._val_outputs: list[tuple[Tensor, Tensor]] = []  # this validation's (logits, labels)

    def on_fit_start(self) -> None:
        """At the start of a fresh fit (not a resumed one: its weights are restored by now), copy the
        weights of `init_from_search` into the model."""
        if self.hparams.init_from_search is not None and self.trainer.ckpt_path is None:
            init_from_search(self.model, self.hparams.init_from_search, self.arch)

    # ----- regularization hooks -----
    def _record(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._lookups is not None:
            self._lookups.append(output)  # (B, m, d) rows of this table

    def _drop(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return F.dropout(output, self.hparams.dropout, self.training)

    def embedding_l2(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B,), l2_embedding * sum of ||e||^2 over the rows looked up for `features` / B)."""
        self._lookups = []
        try:
            logits = self.model(features)
            squares = sum(e.float().square().sum() for e in self._lookups)
        finally:
            self._lookups = None
        return logits, self.hparams.l2_embedding * squares / features.shape[0]

    # ----- one shared step -----
    def _step(self, batch: CTRBatch, stage: str) -> Tensor:
        n = batch.labels.numel()
        if stage == "train" and self.hparams.l2_embedding:
            logits, l2 = self.embedding_l2(batch.features)  # (B,), ()
            self.log("train/l2", l2, on_step=False, on_epoch=True, batch_size=n)
        else:
            logits, l2 = self.model(batch.features), None  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage == "train",
                 batch_size=n, sync_dist=stage != "train")
        if stage != "train":
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(logits.detach(), batch.labels)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
            if stage == "val":
                self._val_outputs.append((logits.detach().float(), batch.labels.detach().float()))
            else:
                self._test_calibration(logits.detach().float(), batch.labels)
        return loss if l2 is None else loss + l2

    def _test_calibration(self, logits: Tensor, labels: Tensor) -> None:
        """Calibrated logloss, ECE of calibrated and raw probabilities (B,) of one test batch."""
        self.test_calibrated.update(self.calibrator.logit(logits), labels)
        self.test_ece.update(self.calibrator(logits), labels)
        self.test_ece_raw.update(torch.sigmoid(logits), labels)
        n = labels.numel()
        self.log("test/logloss_calibrated", self.test_calibrated, on_step=False, on_epoch=True, batch_size=n)
        self.log("test/ece", self.test_ece, on_step=False, on_epoch=True, batch_size=n)
        self.log("test/ece_raw", self.test_ece_raw, on_step=False, on_epoch=True, batch_size=n)

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        """`val/auc_minus_logloss` (one criterion that rewards ranking and penalizes miscalibration), and the
        calibrator fitted on this validation's logits (all ranks': every rank fits the same one)."""
        values = self.val_metrics.compute()  # synced over ranks
        self.log("val/auc_minus_logloss", values["val/auc"] - values["val/logloss"])
        if self._val_outputs and not self.trainer.sanity_checking:
            logits = self._gather(torch.cat([z for z, _ in self._val_outputs]))  # (R,)
            labels = self._gather(torch.cat([y for _, y in self._val_outputs]))  # (R,)
            self.calibrator.fit(logits, labels)
        self._val_outputs = []

    def _gather(self, t: Tensor) -> Tensor:
        """Concatenation over ranks of a 1-d tensor whose length may differ per rank."""
        if self.trainer.world_size == 1:
            return t
        sizes = self.all_gather(torch.tensor(t.numel(), device=t.device)).flatten()  # (W,)
        padded = t.new_zeros(int(sizes.max()))
        padded[: t.numel()] = t
        rows = self.all_gather(padded)  # (W, max)
        return torch.cat([rows[r, : int(k)] for r, k in enumerate(sizes)])

    def training_step(self, batch: CTRBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: CTRBatch, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Calibrated click probabilities (B,) and labels (B,) for the ParquetPredictionWriter."""
        return self.calibrator(self.model(batch.features).float()), batch.labels

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = self.optimizer(self.param_groups() if hp.weight_decay_dense else self.parameters())
        if not hp.lr_plateau_factor:
            return opt
        mode = "min" if "loss" in hp.lr_plateau_monitor else "max"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=hp.lr_plateau_factor,
                                                             patience=hp.lr_plateau_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": hp.lr_plateau_monitor,
                                                   "interval": "epoch", "strict": False}}  # no val: no step

    def param_groups(self) -> list[dict[str, Any]]:
        """[the embeddings and the rest (biases, ...), dense matrices with weight_decay_dense]."""
        table_ids = {id(m.weight) for m in self.embeddings}
        dense = [p for p in self.model.parameters() if p.ndim >= 2 and id(p) not in table_ids]
        dense_ids = {id(p) for p in dense}
        rest = [p for p in self.model.parameters() if id(p) not in dense_ids]
        return [{"params": rest}, {"params": dense, "weight_decay": self.hparams.weight_decay_dense}]

    def on_fit_end(self) -> None:
        """`fit_summary.json`: how the fit ended; a warning when it hit max_epochs while still improving."""
        summary, checkpoint = fit_summary(self.trainer), self.trainer.checkpoint_callback
        if self.trainer.is_global_zero:
            if summary["hit_max_epochs"]:
                log.warning(f"training hit max_epochs={self.trainer.max_epochs} while {summary['monitor']} was "
                            f"still improving (best epoch {summary['best_epoch']}): raise trainer.max_epochs")
            if getattr(checkpoint, "dirpath", None):  # beside checkpoints/, where test finds it from its ckpt
                atomic_write_text(Path(checkpoint.dirpath).parent / FIT_SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")

    def on_test_epoch_end(self) -> None:
        values = {k: float(v) for k, v in self.test_metrics.compute().items()}  # every rank: synced
        values["test/logloss_calibrated"] = float(self.test_calibrated.compute())
        values["test/ece"], values["test/ece_raw"] = float(self.test_ece.compute()), float(self.test_ece_raw.compute())
        path = run_dir(self.trainer) / TEST_METRICS_FILE  # every rank: log_dir is a broadcast under DDP
        if self.trainer.is_global_zero:
            atomic_write_text(path, json.dumps(self.report(values), indent=1) + "\n")
            self._log_reliability()

    def _log_reliability(self) -> None:
        """The test split's reliability diagram (raw and calibrated) to TensorBoard, where the logger has one."""
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_figure"):
            return
        curves = {"raw": self.test_ece_raw.stats, f"{self.calibrator.method}": self.test_ece.stats}
        experiment.add_figure("test/reliability", reliability_figure(curves, "test reliability"),
                              self.global_step)

    def report(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Test metrics with the architecture's summary: what `test_metrics.json` holds."""
        ckpt = self.trainer.ckpt_path
        summary = Path(ckpt).parent.parent / FIT_SUMMARY_FILE if ckpt else None
        return {
            **metrics,
            "calibration": self.calibrator.method,
            "reliability": {"bins": self.test_ece.bins, "raw": self.test_ece_raw.stats.tolist(),
                            "calibrated": self.test_ece.stats.tolist()},  # (3, bins): count, sum p, sum y
            "calibrator": {"slope": float(self.calibrator.slope), "bias": float(self.calibrator.bias),
                           "knots": self.calibrator.knots_x.numel(), "fitted": bool(self.calibrator.fitted)},
            **(json.loads(summary.read_text()) if summary is not None and summary.is_file() else {}),
            "architecture": self.hparams.architecture,
            "schema_hash": self.hparams.schema_hash,
            "params": sum(p.numel() for p in self.model.parameters()),
            "checkpoint": self.trainer.ckpt_path,
            **(self.arch.summary() if self.arch is not None else {"macs_per_sample": self.model.num_macs()}),
        }


def fit_summary(trainer: Any) -> dict[str, Any]:
    """How a fit ended: epochs trained, the monitor and best epoch (0-based, from early stopping's count of
    validations without improvement; None without early stopping), the checkpoint monitor's best value
    (`best_score`: what best.ckpt scored, e.g. its val AUC) and `hit_max_epochs`: stopped by the
    max_epochs cap while the monitor had improved within early stopping's patience (not by early stopping)."""
    stopper, epochs = trainer.early_stopping_callback, int(trainer.current_epoch)
    stopped = stopper is not None and stopper.stopped_epoch > 0
    hit = not stopped and trainer.max_epochs is not None and epochs >= trainer.max_epochs
    best = epochs - 1 - stopper.wait_count if stopper is not None else None
    checkpoint = trainer.checkpoint_callback
    monitor = stopper.monitor if stopper is not None else getattr(checkpoint, "monitor", None)
    score = getattr(checkpoint, "best_model_score", None)  # the checkpoint monitor's best value (best.ckpt's)
    return {"epochs": epochs, "max_epochs": trainer.max_epochs, "monitor": monitor, "best_epoch": best,
            "checkpoint_monitor": getattr(checkpoint, "monitor", None),
            "best_score": None if score is None else float(score), "hit_max_epochs": bool(hit)}


def init_from_search(model: CTRModel, path: str, arch: Architecture) -> None:
    """Overwrite `model` (the standalone model of `arch`) with `arch` extracted from search checkpoint `path`."""
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
    model.load_state_dict(extract_model(supernet, arch).state_dict())  # copies onto the model's device
