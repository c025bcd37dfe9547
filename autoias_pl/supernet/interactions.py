"""The four pairwise interaction functions of paper eq. 6, on batched projected pairs.

Each takes the projected pair (ê_i, ê_j), both (B, m, k), and returns v_ij (B, m, k) (eq. 7). `concat` is
Linear(concat[ê_i, ê_j]) written as ê_i @ A + ê_j @ B + c, i.e. the Linear's weight split into its two
input halves, so a width-k pair uses the prefix blocks A[:k, :k], B[:k, :k], c[:k] of one shared map.
"""

from __future__ import annotations

import torch
from torch import Tensor


def product(ei: Tensor, ej: Tensor) -> Tensor:
    """Hadamard product ê_i ∘ ê_j. (B, m, k) x (B, m, k) -> (B, m, k)"""
    return ei * ej  # (B, m, k)


def plus(ei: Tensor, ej: Tensor) -> Tensor:
    """Elementwise sum ê_i + ê_j. (B, m, k) x (B, m, k) -> (B, m, k)"""
    return ei + ej  # (B, m, k)


def maximum(ei: Tensor, ej: Tensor) -> Tensor:
    """Elementwise max(ê_i, ê_j). (B, m, k) x (B, m, k) -> (B, m, k)"""
    return torch.maximum(ei, ej)  # (B, m, k)


def concat(ei: Tensor, ej: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Linear(concat[ê_i, ê_j]) = ê_i @ A + ê_j @ B + c. (B, m, k), A/B (k, k), c (k,) -> (B, m, k)"""
    return ei @ a + ej @ b + c  # (B, m, k)


ELEMENTWISE = {"product": product, "plus": plus, "max": maximum}
