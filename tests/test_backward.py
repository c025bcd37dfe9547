"""The hand-written backward passes (torch.autograd.Function) against plain-torch references: forward values,
`torch.autograd.gradcheck` in float64 (finite differences, where the function is differentiable) and exact
gradients against autograd of the reference. End to end: test_supernet.py::test_gradients_match_loop_reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from autoias_pl.interactions import maximum
from autoias_pl.supernet.elastic import ElasticLayer, _BlockMatmul, prefix_gather

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leaf(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, dtype=F64, generator=gen(seed)).requires_grad_()


def grads(out: Tensor | tuple[Tensor, ...], inputs: list[Tensor], seed: int) -> tuple[Tensor, ...]:
    """Gradients of a generic scalar (a random weighted sum of every output) w.r.t. inputs."""
    outs = out if isinstance(out, tuple) else (out,)
    g = gen(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=g)).sum() for o in outs)
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_same_grads(got: tuple[Tensor, ...], want: tuple[Tensor, ...]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g = torch.zeros_like(w) if g is None else g
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


# ----- interactions._Maximum: one-mask backward of max -----
def untied(seed: int) -> tuple[Tensor, Tensor]:
    """(2, 3, 4) pairs at least 0.1 apart everywhere: max is differentiable there, also for gradcheck's eps."""
    g = gen(seed)
    ei = torch.randn(2, 3, 4, dtype=F64, generator=g)
    gap = (0.1 + torch.rand(2, 3, 4, dtype=F64, generator=g)) * torch.where(torch.rand(2, 3, 4, generator=g) < 0.5, -1, 1)
    return ei.requires_grad_(), (ei + gap).detach().requires_grad_()


def test_maximum_gradcheck_and_matches_torch_maximum_without_ties() -> None:
    ei, ej = untied(0)
    assert torch.equal(maximum(ei, ej), torch.maximum(ei, ej))
    assert torch.autograd.gradcheck(maximum, (ei, ej))
    assert_same_grads(grads(maximum(ei, ej), [ei, ej], 1), grads(torch.maximum(ei, ej), [ei, ej], 1))


def test_maximum_sends_a_tie_to_ej_whole() -> None:
    """At ties the whole gradient goes to ê_j (a valid subgradient; the two gradients still sum to the
    upstream one), exactly like autograd of torch.where(ei > ej, ei, ej)."""
    g = gen(2)
    ei = torch.randint(0, 3, (2, 3, 4), generator=g).to(F64).requires_grad_()  # many ties
    ej = torch.randint(0, 3, (2, 3, 4), generator=g).to(F64).requires_grad_()
    assert (ei == ej).any() and (ei > ej).any() and (ei < ej).any()
    assert torch.equal(maximum(ei, ej), torch.maximum(ei, ej))
    got = grads(maximum(ei, ej), [ei, ej], 3)
    assert_same_grads(got, grads(torch.where(ei > ej, ei, ej), [ei, ej], 3))
    upstream = torch.randn(2, 3, 4, dtype=F64, generator=gen(3))
    torch.testing.assert_close(got[0] + got[1], upstream, rtol=0, atol=0)


# ----- elastic.prefix_gather: several (rows, width) reads of one tensor, one gradient buffer -----
REQUESTS = [  # (rows or None, width) per request; rows repeat within and across requests
    [(None, 5)],
    [(None, 3), ([2, 0], 5), ([1, 1, 3], 2)],
    [([0, 2, 2], 4), ([2], 4), (None, 1), ([3, 0, 1, 2], 3)],
]


def gather_reference(src: Tensor, requests: list) -> tuple[Tensor, ...]:
    return tuple(src[:, :, :w] if r is None else src[:, r, :w] for r, w in requests)


@pytest.mark.parametrize("requests", REQUESTS, ids=lambda r: f"{len(r)}requests")
def test_prefix_gather_matches_indexing(requests: list) -> None:
    src = leaf(3, 4, 5, seed=len(requests))  # (B, q, K)
    rows = [None if r is None else torch.tensor(r) for r, _ in requests]
    widths = [w for _, w in requests]
    out = prefix_gather(src, rows, widths)
    want = gather_reference(src, requests)
    for o, w in zip(out, want, strict=True):
        assert torch.equal(o, w) and o.is_contiguous()
    assert torch.autograd.gradcheck(lambda s: prefix_gather(s, rows, widths), (src,))
    assert_same_grads(grads(out, [src], 7), grads(want, [src], 7))


def test_prefix_gather_with_unused_outputs() -> None:
    """Outputs that do not reach the loss get a None gradient: the buffer takes the others only."""
    src = leaf(3, 4, 5, seed=9)
    rows, widths = [None, torch.tensor([1, 3]), torch.tensor([0, 0])], [2, 5, 4]
    out = prefix_gather(src, rows, widths)
    want = gather_reference(src, [(None, 2), ([1, 3], 5), ([0, 0], 4)])
    assert_same_grads(grads(out[1], [src], 10), grads(want[1], [src], 10))
    assert prefix_gather(src, [], []) == ()


# ----- elastic._BlockMatmul: y + sum_g vecs_g @ weight[ids_g, :w_g, :h] -----
V, D, H, B = 5, 4, 3, 6
GROUPS = {  # (ids or None, width) per width group; ids distinct within a call, as in a layer
    "teacher": (H, [(None, D)]),  # every block at full size: the fast path of the weight gradient
    "all_narrow": (2, [(None, 3)]),  # all vectors, narrower than D and h < H
    "groups": (H, [([3, 0], 2), ([1], 4), ([4, 2], 3)]),
    "one_block": (1, [([2], 1)]),
}


def block_reference(y: Tensor, weight: Tensor, h: int, groups: list, vecs: list[Tensor]) -> Tensor:
    out = y
    for (ids, w), v in zip(groups, vecs, strict=True):
        blocks = weight[:, :w, :h] if ids is None else weight[ids, :w, :h]  # (m, w, h)
        out = out + torch.einsum("bmw,mwh->bh", v, blocks)
    return out


@pytest.mark.parametrize("case", sorted(GROUPS))
def test_block_matmul_matches_sliced_einsum(case: str) -> None:
    h, groups = GROUPS[case]
    y, weight = leaf(B, h, seed=0), leaf(V, D, H, seed=1)
    vecs = [leaf(B, V if ids is None else len(ids), w, seed=2 + n) for n, (ids, w) in enumerate(groups)]
    ids = tuple(None if i is None else torch.tensor(i) for i, _ in groups)

    def f(y: Tensor, weight: Tensor, *vecs: Tensor) -> Tensor:
        return _BlockMatmul.apply(y, weight, h, ids, *vecs)

    inputs = [y, weight, *vecs]
    out, want = f(*inputs), block_reference(y, weight, h, groups, vecs)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(f, tuple(inputs))
    assert_same_grads(grads(out, inputs, 11), grads(want, inputs, 11))
    for frozen in range(len(inputs)):  # needs_input_grad: one input without a gradient
        part = [t.detach() if k == frozen else t for k, t in enumerate(inputs)]
        live = [t for k, t in enumerate(part) if k != frozen]
        assert_same_grads(grads(f(*part), live, 12), grads(block_reference(part[0], part[1], h, groups, part[2:]),
                                                            live, 12))


def test_elastic_layer_matches_dense_reference_with_shared_weight() -> None:
    """Two layers sharing one (V, D, H) block tensor (share_insert_blocks) accumulate both gradients."""
    torch.manual_seed(0)
    first, second = ElasticLayer(V, D, 0, H, 10, 10).double(), ElasticLayer(V, D, H, H, 10, H).double()
    second.vec_weight = first.vec_weight
    v1, v2 = leaf(B, 2, 3, seed=20), leaf(B, 1, 4, seed=21)
    i1, i2 = torch.tensor([4, 1]), torch.tensor([0])
    params = [first.vec_weight, first.bias, second.hid_weight, second.bias, v1, v2]
    o = torch.relu(first(None, [v1], [i1], H, B))
    out = second(o, [v2], [i2], 2, B)
    w = first.vec_weight
    ref_o = torch.relu(first.bias[:H] + torch.einsum("bmw,mwh->bh", v1, w[i1, :3, :H]))
    ref = second.bias[:2] + ref_o @ second.hid_weight[:H, :2] + torch.einsum("bmw,mwh->bh", v2, w[i2, :4, :2])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert_same_grads(grads(out, params, 22), grads(ref, params, 22))
