"""Elastic ops: parameters at the max width; the active width is an argument (ordinal sharing, paper 3.3.1).

Every op reads the prefix of its max-size parameters (eq. 9): a width-d sub-op uses the first d rows/columns.
Widths that vary inside one architecture (per field, per pair) arrive as prefix masks; widths that are one
per call (MLP hidden units) are real slices. No op keeps an "active width" state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.supernet.interactions import concat


def prefix_mask(widths: Tensor, size: int) -> Tensor:
    """(m,) widths -> (m, size) bool mask, True on the first widths[r] entries of row r."""
    return torch.arange(size, device=widths.device) < widths[:, None]  # (m, size)


def uniform_(t: Tensor, fan_in: int) -> Tensor:
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with an explicit fan-in."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return nn.init.uniform_(t, -bound, bound)


class ElasticEmbedding(nn.Module):
    """One table over all fields (row offsets per field), at width `dim`; a field of width d reads [:d]."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int, init_std: float, sparse: bool = False) -> None:
        super().__init__()
        self.table = nn.Embedding(int(sum(vocab_sizes)), dim, sparse=sparse)
        nn.init.normal_(self.table.weight, 0.0, init_std)
        offsets = torch.tensor([0, *vocab_sizes[:-1]], dtype=torch.long).cumsum(0)  # (n,)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, x: Tensor, fields: Tensor, mask: Tensor) -> Tensor:
        """x (B, n) ids, fields (u,), mask (u, D) -> (B, u, D) embeddings of those fields, prefix-masked."""
        ids = x.index_select(1, fields) + self.offsets[fields]  # (B, u)
        return self.table(ids) * mask  # (B, u, D)


class ElasticProjection(nn.Module):
    """One projection matrix per field, (De x K), no bias; pair (i, j) of width k reads W_i[:d_i, :k]."""

    def __init__(self, num_fields: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(uniform_(torch.empty(num_fields, in_dim, out_dim), in_dim))  # (n, De, K)

    def forward(self, e: Tensor, fields: Tensor) -> Tensor:
        """e (B, q, De) prefix-masked embeddings of `fields` (q,) -> (B, q, K) projections at full width."""
        w = self.weight.index_select(0, fields)  # (q, De, K)
        return torch.einsum("bqd,qdk->bqk", e, w)  # (B, q, K)


class ElasticConcat(nn.Module):
    """The one shared concat map of f_concat (eq. 6): width k uses A[:k, :k], B[:k, :k], c[:k]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(uniform_(torch.empty(dim, dim), 2 * dim))  # (K, K)
        self.b = nn.Parameter(uniform_(torch.empty(dim, dim), 2 * dim))  # (K, K)
        self.c = nn.Parameter(uniform_(torch.empty(dim), 2 * dim))  # (K,)

    def forward(self, ei: Tensor, ej: Tensor, width: int) -> Tensor:
        """Projected pairs ei, ej (B, m, k), k = width -> f_concat (B, m, k) with the prefix blocks."""
        return concat(ei, ej, self.a[:width, :width], self.b[:width, :width], self.c[:width])  # (B, m, k)

    def per_field(self, proj: Tensor) -> tuple[Tensor, Tensor]:
        """Projected fields (B, q, k) -> (ê @ A[:k, :k] + c[:k], ê @ B[:k, :k]), both (B, q, k): the two
        halves of f_concat before the pair gather, f_concat(ê_i, ê_j) = left[i] + right[j].

        c rides on the left half so its gradient is a sum over (B, q), not over (B, pairs) (10x cheaper)."""
        k = proj.shape[2]
        left = torch.addmm(self.c[:k], proj.reshape(-1, k), self.a[:k, :k]).view(proj.shape)  # (B, q, k)
        return left, proj @ self.b[:k, :k]  # (B, q, k), (B, q, k)


class ElasticLayer(nn.Module):
    """A dense layer over [previous hidden output, inserted vectors] with one weight block per vector.

    Weights: per candidate vector a (D, H) block, the hidden-to-hidden block (H_in, H) and a bias (H,).
    A call with width h uses the column prefix [:h]; the hidden input of width h_prev the rows [:h_prev].
    `vec_fan_in` / `fan_in` set the init bounds (nn.Linear's rule at the teacher's fan-in).
    """

    def __init__(self, num_vectors: int, dim: int, in_hidden: int, width: int, vec_fan_in: int, fan_in: int) -> None:
        super().__init__()
        self.vec_weight = nn.Parameter(uniform_(torch.empty(num_vectors, dim, width), vec_fan_in))  # (V, D, H)
        self.hid_weight = nn.Parameter(uniform_(torch.empty(in_hidden, width), max(in_hidden, 1)))  # (H_in, H)
        self.bias = nn.Parameter(uniform_(torch.empty(width), fan_in))  # (H,)

    def forward(self, o: Tensor | None, vecs: Tensor, ids: Tensor | None, width: int, batch: int) -> Tensor:
        """o (B, h_prev) or None; vecs (B, m, D) of vectors `ids` (m,) (None: all, in id order) -> (B, width)."""
        bias = self.bias[:width].expand(batch, width)  # (B, h)
        y = bias if o is None else torch.addmm(bias, o, self.hid_weight[: o.shape[1], :width])  # (B, h)
        if vecs.shape[1] == 0:
            return y
        w = self.vec_weight[:, :, :width]  # (V, D, h) view
        w = w if ids is None else w.index_select(0, ids)  # (m, D, h)
        return torch.addmm(y, vecs.reshape(batch, -1), w.reshape(-1, width))  # (B, h)
