"""The batch type every loader yields and every model consumes."""

from __future__ import annotations

from typing import NamedTuple

import torch


class CTRBatch(NamedTuple):
    """A batch of encoded rows. A NamedTuple, so Lightning moves it between devices as it is."""

    features: torch.Tensor  # (B, n) int64 ids, column j in [0, vocab_size[j])
    labels: torch.Tensor  # (B,) float32 in {0, 1}
