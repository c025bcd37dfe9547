"""A brute-force AUC: the reference the rank-sum AUCs are checked against."""

from __future__ import annotations

import numpy as np


def pairwise_auc(scores, labels) -> float:
    """mean over (positive p, negative n) pairs of 1[s_p > s_n] + 0.5 * 1[s_p == s_n]."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0.5
    sp, sn = s[y][:, None], s[~y][None, :]  # (P, 1), (1, N)
    return float(((sp > sn) + 0.5 * (sp == sn)).mean())
