"""The LightningDataModule over a prepared (or synthetic) dataset folder: parquet streams per split.

The schema is loaded in `__init__`, so LightningCLI can link `data.field_names` / `data.vocab_sizes` to the
model when it instantiates both. With `reward_stream=True`, `train_dataloader()` is a
`CombinedLoader({"train": ..., "reward": ...}, mode="min_size")`: `training_step` then receives
`{"train": CTRBatch, "reward": CTRBatch}`, the reward batch coming from an endless shuffled stream over the
validation split (different rows on different ranks). Otherwise it receives a `CTRBatch`.

Order is a function of (seed, epoch): each loader reads `trainer.current_epoch` when iterated. The train
loaders (and the reward stream) are stateful: Lightning saves their (epoch, batches done) in every
checkpoint ("combined_loader" of the fit loop's state), the count read from the training loop's progress
(batches whose `training_step` is done, not those a fetcher took ahead), and a run resumed from a
mid-epoch checkpoint continues the epoch exactly where it stopped (see `StreamLoader`).

Its argument `seed` (`--data.seed`, the shuffle order) is logged as `data_seed`: the search module's `seed` is
another value (its initial weights and architecture draws), and Lightning refuses to log one key with two values.
"""

from __future__ import annotations

from pathlib import Path

from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.schema import SPLITS, Schema
from autoias_pl.data.stream import Mode, ParquetStream, StreamLoader, read_rows
from autoias_pl.errors import ConfigError


class CTRDataModule(LightningDataModule):
    """Train (sharded, equal batches per rank, shuffled per epoch), val/test/predict (every row once)."""

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 4096,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        shuffle_buffer_row_groups: int = 4,
        seed: int = 0,
        reward_stream: bool = False,
        reward_batch_size: int = 2048,
        predict_split: str = "test",
    ) -> None:
        """data_dir: folder written by `autoias-data prepare` or `synth`; eval_batch_size: val/test/predict
        batch (default batch_size); reward_*: the generator's reward stream over the validation split."""
        super().__init__()
        if predict_split not in SPLITS:
            raise ConfigError(f"predict_split must be one of {SPLITS}, got {predict_split!r}")
        if min(batch_size, reward_batch_size, eval_batch_size or 1) < 1 or num_workers < 0:
            raise ConfigError("batch sizes must be positive and num_workers non-negative")
        self._schema = Schema.load(data_dir)  # SchemaError naming the path if data_dir is not a dataset
        self.data_dir = str(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.shuffle, self.seed = num_workers, shuffle, seed
        self.shuffle_buffer_row_groups = shuffle_buffer_row_groups
        self.reward_stream, self.reward_batch_size = reward_stream, reward_batch_size
        self.predict_split = predict_split
        self.save_hyperparameters()

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters as the logger receives them, merged with the model's: `seed` renamed `data_seed`,
        so that a model seed (`--model.init_args.seed`) other than the data's is logged beside it instead of
        failing the merge. `hparams`, and with them the checkpoint, keep the argument's name `seed`."""
        hp = super().hparams_initial  # a copy
        if "seed" in hp:
            hp["data_seed"] = hp.pop("seed")
        return hp

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def field_names(self) -> list[str]:
        return self._schema.field_names

    @property
    def vocab_sizes(self) -> list[int]:
        return self._schema.vocab_sizes

    @property
    def schema_hash(self) -> str:
        return self._schema.hash

    def _current_epoch(self) -> int | None:
        """The trainer's epoch when attached; None lets the loader count its own iterations."""
        return self.trainer.current_epoch if self.trainer is not None else None

    def _batches_done(self) -> int | None:
        """Batches of the current epoch whose training step is done (None without a trainer). A checkpoint
        taken at a batch's end counts that batch; one taken inside a step does not, and Lightning replays it."""
        if self.trainer is None:
            return None
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, split: str, batch_size: int, mode: Mode, shuffle: bool = False) -> StreamLoader:
        stream = ParquetStream(
            Path(self.data_dir),
            split,
            batch_size,
            mode=mode,
            shuffle=shuffle,
            shuffle_buffer_row_groups=self.shuffle_buffer_row_groups,
            seed=self.seed,
        )
        position = self._batches_done if mode != "eval" else None
        return StreamLoader(stream, num_workers=self.num_workers, epoch_fn=self._current_epoch,
                            position_fn=position)

    def train_dataloader(self) -> StreamLoader | CombinedLoader:
        train = self._loader("train", self.batch_size, "train", shuffle=self.shuffle)
        if not self.reward_stream:
            return train
        return CombinedLoader({"train": train, "reward": self.reward_dataloader()}, mode="min_size")

    def val_dataloader(self) -> StreamLoader:
        return self._loader("val", self.eval_batch_size, "eval")

    def test_dataloader(self) -> StreamLoader:
        return self._loader("test", self.eval_batch_size, "eval")

    def predict_dataloader(self) -> StreamLoader:
        return self._loader(self.predict_split, self.eval_batch_size, "eval")

    def reward_dataloader(self) -> StreamLoader:
        """Endless batches of `reward_batch_size` rows from the validation split, always shuffled."""
        return self._loader("val", self.reward_batch_size, "endless", shuffle=True)

    def reward_set(self, rows: int) -> CTRBatch:
        """The first `rows` validation rows (all of them if fewer), the same on every rank: a fixed reward set."""
        return read_rows(self.data_dir, "val", rows)
