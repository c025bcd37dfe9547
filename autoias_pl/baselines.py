"""Hand-crafted CTR models as architectures of the search space (retrained like any searched one).

The output insertion target ("out", a linear read-out into the logit) makes the wide parts expressible.
A vector has ONE insertion target, so a model that feeds the same embedding to two places (DeepFM's FM part
and its DNN) cannot be literal: each docstring says how the expression differs from the published model.
Common differences: pairs are projected (a learned d x k map per field) before they interact, and a pair
vector is read out with learned weights, where FM / IPNN sum its entries (a special case of those weights).
A fresh model starts at that special case (identity projections, pair read-out weights 1: docs/supernet.md,
"Initialisation"), so `fm` and `deepfm` start as FM's second order. No field has a per-id first-order weight
of its own (a field has one target: in the MLP it has no linear term); measured worth nothing on MovieLens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from autoias_pl.space import Architecture, ArchitectureError, SearchSpace

BASELINES: tuple[str, ...] = ("lr", "fm", "dnn", "deepfm", "ipnn", "wide_deep")
DEFAULT_DIM = 16


def snap(value: int, candidates: Sequence[int]) -> int:
    """The candidate nearest to `value` on a log scale (ties go to the larger one)."""
    return min(candidates, key=lambda c: (abs(math.log2(c / value)), -c))


def _build(space: SearchSpace, name: str, dim: int, hidden: int | None, fields_at: int | None,
           pairs: Sequence[int], pairs_at: int, func: str) -> Architecture:
    """Fields selected at `fields_at` (None: unselected), `pairs` with `func` at `pairs_at`; all dims = dim."""
    if space.output_layer in (fields_at, pairs_at) and not space.output_insertion:
        raise ArchitectureError(f"baseline {name!r} needs the output insertion target, "
                                "but this space has output_insertion=False")
    if pairs and func not in space.functions:
        raise ArchitectureError(f"baseline {name!r} needs the interaction function {func!r}, "
                                f"not in this space's functions {space.functions}")
    n, p, chosen = space.num_fields, space.num_pairs, set(pairs)
    units = snap(hidden, space.hidden_units) if hidden is not None else space.hidden_units[-1]
    return Architecture.from_indices(space, {
        "emb": [space.emb_dims.index(snap(dim, space.emb_dims))] * n,
        "proj": [space.proj_dims.index(snap(dim, space.proj_dims))] * p,
        "func": [space.functions.index(func) if func in space.functions else 0] * p,
        "select": [int(fields_at is not None)] * n + [int(q in chosen) for q in range(p)],
        "insert": [fields_at or 0] * n + [pairs_at if q in chosen else 0 for q in range(p)],
        "hidden": [space.hidden_units.index(units)] * space.num_layers,
    })


def lr(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """Logistic regression: every field read out linearly (w·e_i per field is one learned weight per id,
    factorised as embedding x read-out weights); no pairs, no MLP."""
    return _build(space, "lr", dim, hidden, space.output_layer, [], 0, "product")


def fm(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """FM: fields (first order) and every pair's Hadamard product ê_i ∘ ê_j read out at "out". FM's
    Σ<v_i, v_j> becomes a learned weighted read-out of the Hadamard vectors, and ê = e @ W_i is projected;
    both start at FM's (weights 1, W_i = I). FM's first order w_id becomes w·e_i (a factorised weight per id)."""
    return _build(space, "fm", dim, hidden, space.output_layer, range(space.num_pairs), space.output_layer,
                  "product")


def dnn(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """Plain DNN: all field embeddings concatenated into the first MLP layer; no pairs."""
    return _build(space, "dnn", dim, hidden, 0, [], 0, "product")


def deepfm(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """DeepFM, closest expression: fields into layer 0 (the deep part) and every product pair at "out" (the
    FM second-order part). DeepFM shares each embedding between its FM and DNN parts; one vector has one
    target here, so FM's first-order linear terms are not read out directly: the MLP carries them. The FM
    part starts as DeepFM's (identity projections, read-out weights 1), then learns its weights."""
    return _build(space, "deepfm", dim, hidden, 0, range(space.num_pairs), space.output_layer, "product")


def ipnn(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """IPNN: fields and every pair's product into the first MLP layer. IPNN feeds the inner products
    <e_i, e_j> (scalars); here the Hadamard vectors enter, whose learned weights include the inner product."""
    return _build(space, "ipnn", dim, hidden, 0, range(space.num_pairs), 0, "product")


def wide_deep(space: SearchSpace, dim: int, hidden: int | None) -> Architecture:
    """Wide & Deep, closest expression: fields into layer 0 (deep part); the wide part's first-order linear
    terms as `plus` pairs over a chain of disjoint field pairs covering every field, read out at "out"
    (ê_i + ê_j is linear in each embedding). Wide & Deep's hand-made cross-product features (a weight per
    pair of ids) are not expressible: the space has no pair-id embeddings."""
    n, index = space.num_fields, {pair: q for q, pair in enumerate(space.pairs)}
    chain = [index[(i, i + 1)] for i in range(0, n - 1, 2)] + ([index[(n - 2, n - 1)]] if n % 2 else [])
    return _build(space, "wide_deep", dim, hidden, 0, chain, space.output_layer, "plus")


_BUILDERS: dict[str, Callable[[SearchSpace, int, int | None], Architecture]] = {
    "lr": lr, "fm": fm, "dnn": dnn, "deepfm": deepfm, "ipnn": ipnn, "wide_deep": wide_deep,
}


def baseline(name: str, space: SearchSpace, dim: int | None = None, hidden: int | None = None) -> Architecture:
    """The architecture of baseline `name` over `space`, dims and hidden units snapped to its candidates.

    `dim` (embedding and projection width) defaults to 16 (the smallest candidate for "lr"); `hidden` to the
    largest candidate. Raises ArchitectureError for an unknown name or a space that cannot express it.
    """
    if name not in _BUILDERS:
        raise ArchitectureError(f"unknown baseline {name!r}; baselines are {BASELINES}")
    if dim is not None and dim < 1 or hidden is not None and hidden < 1:
        raise ArchitectureError(f"baseline {name!r}: dim and hidden must be positive, got {dim}, {hidden}")
    default = min(space.emb_dims) if name == "lr" else DEFAULT_DIM
    arch = _BUILDERS[name](space, dim if dim is not None else default, hidden)
    return Architecture(space, arch.choices, {"baseline": name})
