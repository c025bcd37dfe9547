"""Elastic ops: parameters at the max width; the active width is an argument (ordinal sharing, paper 3.3.1).

Every op reads the prefix of its max-size parameters (eq. 9): a width-d sub-op uses the first d rows/columns.
Embedding widths that vary per field arrive as prefix masks; vectors are then read per width group at
their true width (`prefix_gather`) and multiplied with the weight-block prefixes (`ElasticLayer`); widths
that are one per call (MLP hidden units) are real slices. No op keeps an "active width" state.

Mixed precision: autocast does not reach into the custom autograd Functions (their in-place `addmm_` /
`index_add_` are not autocast ops), so they align dtypes themselves: `_BlockMatmul` computes in the autocast
dtype of its device when autocast is on (else the weight's dtype) and returns the weight gradient in the
weight's dtype; `_PrefixGather` keeps its source's dtype. Without autocast every cast is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.interactions import concat


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


class _PrefixGather(torch.autograd.Function):
    """src (B, q, K) -> per request r the rows rows[r] (m_r,) (None: all q) at width widths[r]: (B, m_r, w_r).

    The backward adds every request's gradient into ONE zero-filled (B, q, K) buffer; separate slices and
    index_selects would each zero-fill their own full-size buffer and autograd would then sum them.
    """

    @staticmethod
    def forward(ctx, src: Tensor, rows: tuple[Tensor | None, ...], widths: tuple[int, ...]) -> tuple[Tensor, ...]:
        ctx.rows, ctx.widths, ctx.shape = rows, widths, src.shape
        return tuple(src[:, :, :w].clone(memory_format=torch.contiguous_format) if r is None
                     else src[:, :, :w].index_select(1, r) for r, w in zip(rows, widths, strict=True))

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        out = grads[0].new_zeros(ctx.shape)  # (B, q, K), in src's dtype (that of its outputs' gradients)
        for r, w, g in zip(ctx.rows, ctx.widths, grads, strict=True):
            if g is not None:
                view, g = out[:, :, :w], _cast(g, out.dtype)  # (B, q, w)
                if r is None:
                    view.add_(g)
                else:
                    view.index_add_(1, r, g)
        return out, None, None


def prefix_gather(src: Tensor, rows: Sequence[Tensor | None], widths: Sequence[int]) -> tuple[Tensor, ...]:
    """src (B, q, K) -> per request src[:, rows[r], :widths[r]] (B, m_r, w_r) (rows None: all), contiguous;
    one dense gradient buffer for all requests."""
    if not rows:
        return ()
    return _PrefixGather.apply(src, tuple(rows), tuple(widths))


def _blocks(weight: Tensor, ids: Tensor | None, w: int, h: int) -> Tensor:
    """weight (V, D, H) -> the blocks weight[ids, :w, :h], (m, w, h) (a view of all V when ids is None)."""
    blocks = weight[:, :w, :h]  # (V, w, h) view
    return blocks if ids is None else blocks.index_select(0, ids)  # (m, w, h)


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in `dtype`; t itself (no op dispatched) when it already is, as always in full precision."""
    return t if t.dtype == dtype else t.to(dtype)


def _compute_dtype(weight: Tensor) -> torch.dtype:
    """The dtype a matmul with `weight` runs in: autocast's for its device when autocast is on, else its own."""
    kind = weight.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype


class _BlockMatmul(torch.autograd.Function):
    """y + sum over groups g of vecs_g (B, m_g * w_g) @ weight[ids_g, :w_g, :h] -> (B, h).

    Each group multiplies its vectors at their true width w_g with the weight-block prefixes (no padding
    to D). The backward writes every group's block gradient into ONE dense (V, D, H) gradient (slicing
    the weight per group in autograd would zero-fill a full-size buffer per group).

    Under autocast (any device) y, the vectors and only the blocks in use are cast to the autocast dtype, as
    addmm would be, and saved in it; the weight gradient is accumulated into the weight's dtype.
    """

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, h: int, ids: tuple[Tensor | None, ...], *vecs: Tensor) -> Tensor:
        dt = _compute_dtype(weight)
        in_dtypes = tuple(v.dtype for v in vecs)
        vecs = tuple(_cast(v, dt) for v in vecs)
        blocks = [_cast(_blocks(weight, i, v.shape[2], h), dt) for i, v in zip(ids, vecs, strict=True)]  # [(m, w, h)]
        out = _cast(y, dt).clone(memory_format=torch.contiguous_format)  # (B, h)
        for v, b in zip(vecs, blocks, strict=True):
            out.addmm_(v.reshape(v.shape[0], -1), b.reshape(-1, h))
        ctx.save_for_backward(*vecs, *blocks)
        ctx.ids, ctx.h, ctx.shape, ctx.w_dtype, ctx.y_dtype = ids, h, weight.shape, weight.dtype, y.dtype
        ctx.v_dtypes = in_dtypes
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # grad (B, h)
        saved, g = ctx.saved_tensors, len(ctx.ids)
        vecs, blocks, h = saved[:g], saved[g:], ctx.h
        grad = _cast(grad, blocks[0].dtype)  # the forward's compute dtype
        grad_w = None
        if ctx.needs_input_grad[1]:
            mats = [v.reshape(v.shape[0], -1).t() @ grad for v in vecs]  # [(m * w, h)]
            if g == 1 and ctx.ids[0] is None and vecs[0].shape[2] == ctx.shape[1] and h == ctx.shape[2]:
                grad_w = _cast(mats[0].view(ctx.shape), ctx.w_dtype)  # the teacher's layer: every block at full size
            else:
                grad_w = grad.new_zeros(ctx.shape, dtype=ctx.w_dtype)  # (V, D, H)
                for i, v, m in zip(ctx.ids, vecs, mats, strict=True):
                    view = grad_w[:, : v.shape[2], :h]  # (V, w, h)
                    m = _cast(m.view(-1, v.shape[2], h), ctx.w_dtype)  # (m, w, h)
                    if i is None:
                        view.copy_(m)
                    else:
                        view.index_copy_(0, i, m)  # ids are distinct within a layer
        grad_v = [_cast((grad @ b.reshape(-1, h).t()).view(v.shape), t) if ctx.needs_input_grad[4 + n] else None
                  for n, (v, b, t) in enumerate(zip(vecs, blocks, ctx.v_dtypes, strict=True))]
        return _cast(grad, ctx.y_dtype), grad_w, None, None, *grad_v


class ElasticLayer(nn.Module):
    """A dense layer over [previous hidden output, inserted vectors] with one weight block per vector.

    Weights: per candidate vector a (D, H) block, the hidden-to-hidden block (H_in, H) and a bias (H,).
    A call with width h uses the column prefix [:h]; the hidden input of width h_prev the rows [:h_prev];
    a vector of width w the block rows [:w] (vectors arrive grouped by width, at their true width).
    `vec_fan_in` / `fan_in` set the init bounds (nn.Linear's rule at the teacher's fan-in).
    """

    def __init__(self, num_vectors: int, dim: int, in_hidden: int, width: int, vec_fan_in: int, fan_in: int) -> None:
        super().__init__()
        self.vec_weight = nn.Parameter(uniform_(torch.empty(num_vectors, dim, width), vec_fan_in))  # (V, D, H)
        self.hid_weight = nn.Parameter(uniform_(torch.empty(in_hidden, width), max(in_hidden, 1)))  # (H_in, H)
        self.bias = nn.Parameter(uniform_(torch.empty(width), fan_in))  # (H,)

    def forward(self, o: Tensor | None, vecs: Sequence[Tensor], ids: Sequence[Tensor | None], width: int,
                batch: int) -> Tensor:
        """o (B, h_prev) or None; per width group g its vectors vecs[g] (B, m_g, w_g) with ids[g] (m_g,)
        (None: all V, in id order) -> (B, width)."""
        bias = self.bias[:width].expand(batch, width)  # (B, h)
        y = bias if o is None else torch.addmm(bias, o, self.hid_weight[: o.shape[1], :width])  # (B, h)
        if not vecs:
            return y
        return _BlockMatmul.apply(y, self.vec_weight, width, tuple(ids), *vecs)  # (B, h)
