"""`autoias {fit,validate,test,predict}`: one LightningCLI over the search and the retrain modules.

    autoias fit -c configs/data/synthetic.yaml -c configs/search/cpu.yaml -c configs/trainer/cpu.yaml
    autoias fit -c configs/data/synthetic.yaml -c configs/retrain.yaml \\
        --model.init_args.architecture runs/search/version_0/best_architecture.json
    autoias test -c runs/retrain/version_0/config.yaml --ckpt_path runs/retrain/version_0/checkpoints/best.ckpt

The model is chosen by `model.class_path` (`autoias_pl.search.AutoIASSearch` or
`autoias_pl.retrain.AutoIASRetrain`); its `field_names`, `vocab_sizes` and `schema_hash` come from the
data (`CTRDataModule`), never typed twice. Every run logs to TensorBoard, saves its resolved config,
checkpoints `last.ckpt` and `best.ckpt` (on val/auc), stops early on val/auc (a search: both counting
validations after its warm-up only, `WarmupAwareModelCheckpoint` and `WarmupAwareEarlyStopping`) and is
seeded. `build_search` (search/launch.py) builds the same run from Python without running it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from autoias_pl.cli_callbacks import (
    ParquetPredictionWriter,
    StageConfigCallback,
    WarmupAwareEarlyStopping,
    WarmupAwareModelCheckpoint,
)
from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.errors import KNOWN_ERRORS, run_main

DEFAULT_SEED = 0
LINKED = ("field_names", "vocab_sizes", "schema_hash")
USER_ERRORS = KNOWN_ERRORS  # reported as one line by `autoias` (autoias_pl/errors.py)


class AutoIASCLI(LightningCLI):
    """LightningCLI with the data -> model links, the default callbacks and a TensorBoard logger."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in LINKED:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(WarmupAwareModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/auc",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 1,
        })
        parser.add_lightning_class_args(WarmupAwareEarlyStopping, "early_stopping")
        parser.set_defaults({
            "early_stopping.monitor": "val/auc",
            "early_stopping.mode": "max",
            "early_stopping.patience": 2,
        })
        parser.add_lightning_class_args(ParquetPredictionWriter, "prediction_writer")

    def instantiate_classes(self) -> None:
        """Re-raise our own errors (bad architecture file, schema mismatch) instead of jsonargparse's
        "Does not validate against any of the Union subtypes" wrapper around them."""
        try:
            super().instantiate_classes()
        except ValueError as e:
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, USER_ERRORS):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Adds a rich progress bar (unless disabled or another one is configured) and, with a logger, an
        LR monitor."""
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init  # run=False: no subcommand
        config = init.get("trainer") or {}
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(RichProgressBar())
        if config.get("logger") is not False and not config.get("fast_dev_run"):
            callbacks.append(LearningRateMonitor())
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)


# Lightning warnings that do not apply here: the parquet stream shards itself over ranks and workers (so its
# __len__ is exact), the prediction writer does not use batch indices, and a torch deprecation in Lightning.
_NOISE = (
    r".*`IterableDataset` has `__len__` defined.*",
    r".*Couldn't infer the batch indices fetched from your dataloader.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


class _NoAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: ... litlogger" line, printed once per Trainer (ten times in `make demo`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


_ADVERTS = _NoAdverts()


@contextmanager
def _programmatic(args: list[str] | None) -> Iterator[None]:
    """Hide sys.argv while `args` are parsed (LightningCLI warns when both are present) and known noise."""
    argv, logger = sys.argv, logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addFilter(_ADVERTS)  # while the command runs, not on import (a notebook keeps its logging)
    with warnings.catch_warnings():
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message)
        try:
            if args is not None:
                sys.argv = argv[:1]
            yield
        finally:
            sys.argv = argv
            logger.removeFilter(_ADVERTS)


def run(args: list[str] | None = None) -> AutoIASCLI:
    """Parse `args` (default: sys.argv), run the subcommand, return the CLI (its trainer, model, data)."""
    with _programmatic(args):
        return _cli(args)


def build_search(config_files: Sequence[str | Path], overrides: Sequence[str] = ()
                 ) -> tuple[LightningModule, CTRDataModule, Trainer]:
    """The one way to set up a search (or retrain) run from Python: the YAML recipes `config_files` in order,
    then `overrides` (`"--model.init_args.reward.num_archs=8"`, `"--trainer.max_epochs=3"`), parsed and
    linked exactly as `autoias fit -c ... -c ... <overrides>` does, but not run: returns (model, datamodule,
    trainer) with the CLI's callbacks, logger and saved config; `trainer.fit(model, datamodule=datamodule)`
    runs it. The demo, the ablations, the benchmarks and the proof test all start here."""
    args = [f"--config={f}" for f in config_files] + list(overrides)
    with _programmatic(args):
        cli = _cli(args, run=False)
    return cli.model, cli.datamodule, cli.trainer


def _cli(args: list[str] | None, run: bool = True) -> AutoIASCLI:
    return AutoIASCLI(
        LightningModule,
        CTRDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        seed_everything_default=DEFAULT_SEED,
        save_config_callback=StageConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "runs",  # where files go without a logger (e.g. fast_dev_run)
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": "autoias"},
            },
        },
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Console entry point `autoias`: a known error (a bad architecture or dataset, a missing file) is one line
    on stderr and exit code 2 (autoias_pl/errors.py); a bad option is jsonargparse's usage error."""
    run_main("autoias", lambda: run(args))


if __name__ == "__main__":
    main()
