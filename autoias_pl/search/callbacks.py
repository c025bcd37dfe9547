"""What the search writes beside its checkpoints, as callbacks (as `ModelCheckpoint` writes checkpoints).

- `BestArchitectureWriter`: `<run folder>/best_architecture.json` whenever the best architecture changes;
- `SearchViews`: the TensorBoard views of `views.py` after every validation.
`AutoIASSearch.configure_callbacks` adds both, so every run has them. Rank 0 writes; all ranks run the hooks.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from autoias_pl.search.views import log_search_views


class BestArchitectureWriter(Callback):
    """Writes the module's `best_architecture` to its `best_architecture_path` once per improvement."""

    def __init__(self) -> None:
        self._written: Any = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        best = getattr(pl_module, "best_architecture", None)
        if trainer.sanity_checking or best is None or best is self._written:
            return
        if trainer.is_global_zero:
            best.save(pl_module.best_architecture_path, pl_module.vocab_sizes)
        self._written = best


class SearchViews(Callback):
    """Draws the generator's views and the validated candidate to TensorBoard (rank 0, TensorBoardLogger),
    after the warm-up."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        arch = getattr(pl_module, "validated_architecture", None)
        if trainer.sanity_checking or arch is None or getattr(pl_module, "in_warmup", False):
            return  # during the warm-up the validated architecture is the teacher, not a candidate
        if not trainer.is_global_zero:
            return
        if not isinstance(trainer.logger, TensorBoardLogger):
            return
        auc = float(trainer.callback_metrics.get("val/auc", float("nan")))
        log_search_views(trainer.logger.experiment, pl_module.generator, arch, pl_module.vocab_sizes,
                         trainer.global_step, f"epoch {trainer.current_epoch}: val/auc {auc:.5f}")
