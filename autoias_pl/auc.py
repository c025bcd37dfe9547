"""Exact and streaming ROC AUC outside torchmetrics: the search reward (M architectures at once), data tooling
(synthetic ceilings) and tests. One rank-sum implementation (`batched_auc`); `auc` is its numpy front.

A leaf module: it imports nothing from the package."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def batched_auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC of each row of scores (M, R) against labels (R,) in {0, 1} -> (M,) float64.

    Mann-Whitney rank sum with average ranks for ties. NaN for a row set with a single class.
    """
    pos = labels > 0.5  # (R,)
    n_pos = int(pos.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.full((scores.shape[0],), float("nan"), dtype=torch.float64)
    out = []
    for row in scores.double():  # M is small (the architectures of one step)
        sorted_s, order = torch.sort(row)  # (R,), (R,)
        _, counts = torch.unique_consecutive(sorted_s, return_counts=True)  # (G,)
        ends = counts.cumsum(0)  # (G,) 1-based end rank of each tie group
        avg = (ends - (counts - 1) / 2.0).double()  # (G,) average 1-based rank
        ranks = torch.repeat_interleave(avg, counts)  # (R,) in sorted order
        rank_sum = ranks[pos[order]].sum()
        out.append((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return torch.stack(out)  # (M,)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of one score vector (R,) against labels (R,) (see `batched_auc`); both classes required."""
    labels = torch.as_tensor(np.asarray(labels).ravel() > 0.5)
    pos = int(labels.sum())
    if pos == 0 or pos == labels.numel():
        raise ValueError(f"AUC needs both classes (got {pos} positives, {labels.numel() - pos} negatives)")
    return float(batched_auc(torch.as_tensor(np.asarray(scores, dtype=np.float64).ravel())[None], labels)[0])


class BinnedAUC:
    """Streaming AUC of probabilities in [0, 1] from per-class histograms: memory is `bins`, not rows.

    Scores in the same bin count as ties, so it is within ~1/bins of the exact AUC.
    """

    def __init__(self, bins: int = 1 << 18) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    def update(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """probs, labels: (R,)."""
        idx = np.clip((np.asarray(probs) * self.bins).astype(np.int64), 0, self.bins - 1)  # (R,)
        is_pos = np.asarray(labels) > 0.5
        self.pos += np.bincount(idx[is_pos], minlength=self.bins)
        self.neg += np.bincount(idx[~is_pos], minlength=self.bins)

    def compute(self) -> float:
        pos, neg = int(self.pos.sum()), int(self.neg.sum())
        if pos == 0 or neg == 0:
            raise ValueError(f"AUC needs both classes (got {pos} positives, {neg} negatives)")
        neg_below = np.cumsum(self.neg) - self.neg  # negatives in strictly lower bins
        wins = (self.pos * neg_below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (pos * neg))
