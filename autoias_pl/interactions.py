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


class _Maximum(torch.autograd.Function):
    """torch.maximum with a one-mask backward: the gradient goes to ê_i where ê_i > ê_j, else to ê_j (a valid
    subgradient at ties). torch.maximum's own backward splits ties in half (eq/where/div/masked_fill per
    input), ~10% of a student step; `ê_j + relu(ê_i - ê_j)` would not return max exactly."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, ei: Tensor, ej: Tensor) -> Tensor:
        ctx.save_for_backward(ei, ej)
        return torch.maximum(ei, ej)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor]:
        ei, ej = ctx.saved_tensors
        gi = grad * (ei > ej)
        return gi, grad - gi


def maximum(ei: Tensor, ej: Tensor) -> Tensor:
    """Elementwise max(ê_i, ê_j). (B, m, k) x (B, m, k) -> (B, m, k)"""
    return _Maximum.apply(ei, ej)  # (B, m, k)


def concat(ei: Tensor, ej: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Linear(concat[ê_i, ê_j]) = ê_i @ A + ê_j @ B + c. (B, m, k), A/B (k, k), c (k,) -> (B, m, k)"""
    return ei @ a + ej @ b + c  # (B, m, k)


ELEMENTWISE = {"product": product, "plus": plus, "max": maximum}
