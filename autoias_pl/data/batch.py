"""The batch type every loader yields and every model consumes."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class CTRBatch(NamedTuple):
    """A batch of encoded rows. A NamedTuple, so Lightning moves it between devices as it is."""

    features: torch.Tensor  # (B, n) int64 ids, column j in [0, vocab_size[j])
    labels: torch.Tensor  # (B,) float32 in {0, 1}


def unpack_batch(batch: Any) -> tuple[CTRBatch, CTRBatch | None]:
    """A CTRBatch / (features, labels), or a dict {"train": ..., "reward": ...} (a DataModule's train loader
    with `reward_stream=True`) -> (train, reward or None)."""
    if isinstance(batch, dict):
        if "train" not in batch:
            raise ValueError(f"a dict batch needs a 'train' entry, got keys {sorted(batch)}")
        reward = batch.get("reward")
        return CTRBatch(*batch["train"]), None if reward is None else CTRBatch(*reward)
    return CTRBatch(*batch), None
