"""CTR metrics shared by the search and retrain modules: AUC, logloss and calibration error (torchmetrics, DDP-synced)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC

from autoias_pl.calibration import ECE_BINS, ece_from_bins, reliability_bins


class BinaryLogLoss(Metric):
    """Mean binary cross-entropy of logits against 0/1 labels, accumulated as (sum, count)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:  # (B,), (B,)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")
        self.total += loss.double()
        self.count += labels.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class CalibrationError(Metric):
    """Expected calibration error of probabilities (B,) against 0/1 labels over `bins` equal-width bins,
    accumulated as per-bin (count, sum of probabilities, sum of labels): `stats` (3, bins) float64, which is
    also the reliability diagram (`autoias_pl.calibration.reliability_figure`)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, bins: int = ECE_BINS) -> None:
        super().__init__()
        self.bins = bins
        self.add_state("stats", default=torch.zeros(3, bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:  # (B,), (B,)
        self.stats += reliability_bins(probs, labels, self.bins)

    def compute(self) -> torch.Tensor:
        return torch.tensor(ece_from_bins(self.stats), dtype=torch.float32)


class _AUROCFromLogits(BinaryAUROC):
    """BinaryAUROC that takes logits. AUC depends on the order of the scores only, so any strictly increasing
    map into [0, 1] gives it; float32 sigmoid would not (it rounds every logit above ~16.7 to 1.0 and ties
    confident rows), so the scores are 1/2 + atan(logit)/pi in float64, distinct for distinct float32 logits
    up to ~1e7 (float32 on MPS, which has no float64: there up to ~4e3)."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        x = logits.float() if logits.device.type == "mps" else logits.double()  # MPS has no float64
        super().update(0.5 + torch.atan(x) / math.pi, labels.long())


def ctr_metrics(prefix: str) -> MetricCollection:
    """`{prefix}auc` and `{prefix}logloss` over (logits, labels); e.g. prefix "val/"."""
    return MetricCollection({"auc": _AUROCFromLogits(), "logloss": BinaryLogLoss()}, prefix=prefix)
