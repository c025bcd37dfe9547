"""Small numpy metrics for data tooling (synthetic ceilings, sanity checks); training uses torchmetrics."""

from __future__ import annotations

import numpy as np


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted as half. scores, labels: (R,)."""
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel() > 0.5
    pos = int(labels.sum())
    neg = labels.size - pos
    if pos == 0 or neg == 0:
        raise ValueError(f"AUC needs both classes (got {pos} positives, {neg} negatives)")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]  # (R,)
    # average 1-based rank of each group of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # (G,)
    ends = np.r_[starts[1:], scores.size]  # (G,)
    group_rank = (starts + ends + 1) / 2.0  # (G,)
    ranks = np.repeat(group_rank, ends - starts)  # (R,) in sorted order
    rank_sum = ranks[labels[order]].sum()
    return float((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg))


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
