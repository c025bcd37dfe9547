"""The standalone model: its sizes, its grouping (no per-field / per-pair modules) and its independence."""

from __future__ import annotations

import pytest
import torch

from autoias_pl.baselines import baseline
from autoias_pl.ctr_model import PAIR_READOUT_INIT, CTRModel
from autoias_pl.references import fm_second_order
from autoias_pl.space import Architecture, SearchSpace

VOCAB = tuple(range(3, 12))


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(tuple(f"F{i}" for i in range(len(VOCAB))))


def archs(space: SearchSpace, count: int = 10) -> list[Architecture]:
    g = torch.Generator().manual_seed(0)
    return [Architecture.teacher(space)] + [Architecture.uniform_random(space, g) for _ in range(count)]


def test_parameter_count_is_num_params(space: SearchSpace) -> None:
    for arch in archs(space):
        model = CTRModel(arch, VOCAB)
        assert sum(q.numel() for q in model.parameters()) == arch.num_params(VOCAB)


def test_groups_bound_the_number_of_modules(space: SearchSpace) -> None:
    for arch in archs(space):
        model = CTRModel(arch, VOCAB)
        assert len(model.tables) <= len(space.emb_dims)
        assert len(model.layout.pair_groups) <= len(space.functions) * len(space.proj_dims)
        assert len(model.mlp) <= space.num_layers


def test_forward_and_training_step(space: SearchSpace) -> None:
    x = torch.stack([torch.randint(0, v, (16,)) for v in VOCAB], 1)  # (B, n)
    for arch in archs(space, 3):
        model = CTRModel(arch, VOCAB)
        out = model(x)
        assert out.shape == (16,) and torch.isfinite(out).all()
        out.sum().backward()


def test_every_parameter_gets_a_gradient(space: SearchSpace) -> None:
    """Plain DDP (find_unused_parameters=False) needs it: no parameter may sit outside the graph."""
    x = torch.stack([torch.randint(0, v, (16,)) for v in VOCAB], 1)  # (B, n)
    for arch in [*archs(space, 10), Architecture.teacher(space)]:
        model = CTRModel(arch, VOCAB)
        model(x).sum().backward()
        unused = [name for name, p in model.named_parameters() if p.grad is None]
        assert not unused, f"{arch.summary()}: parameters without gradient {unused}"


def test_model_of_nothing_is_its_bias(space: SearchSpace) -> None:
    arch = Architecture.from_indices(space, {c: [0] * space.num_decisions(c) for c in
                                             ("emb", "proj", "func", "select", "insert", "hidden")})
    model = CTRModel(arch, VOCAB)
    assert [name for name, _ in model.named_parameters() if _.numel()] == ["readout.bias"]
    assert model(torch.zeros(4, len(VOCAB), dtype=torch.long)).shape == (4,)


def test_architecture_attribute(space: SearchSpace) -> None:
    arch = archs(space, 1)[1]
    assert CTRModel(arch, VOCAB).architecture is arch


def test_bilinear_readout_equals_materialised_pairs(space: SearchSpace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Product pairs at "out" read out as bilinear forms give the logits and gradients of the materialised
    (B, m, k) route, on every model whose plan has a bilinear chunk."""
    x = torch.stack([torch.randint(0, v, (32,)) for v in VOCAB], 1)  # (B, n)
    g = torch.Generator().manual_seed(1)
    product = space.functions.index("product")
    candidates = [Architecture.from_indices(space, {
        **{c: Architecture.uniform_random(space, g).indices(c) for c in ("emb", "hidden")},
        "proj": [0] * space.num_pairs, "func": [product] * space.num_pairs, "select": [1] * (space.num_fields + space.num_pairs),
        "insert": Architecture.uniform_random(space, g).indices("insert")}) for _ in range(6)]
    candidates += [baseline(name, space) for name in ("fm", "deepfm")]
    checked = 0
    for arch in candidates:
        fast = CTRModel(arch, VOCAB).double()
        with monkeypatch.context() as m:
            m.setattr(CTRModel, "bilinear_density", 0.0)
            slow = CTRModel(arch, VOCAB).double()
        assert not slow.bilinear
        if not fast.bilinear:
            continue
        checked += 1
        slow.load_state_dict(fast.state_dict())
        a, b = fast(x), slow(x)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        a.square().sum().backward()
        b.square().sum().backward()
        for (name, p), q in zip(fast.named_parameters(), slow.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=lambda s, n=name: f"{n}: {s}")
    assert checked >= 4


@pytest.mark.parametrize("dims", [(8, 8), (8, 4), (4, 8)], ids=["d=k", "d>k", "d<k"])
def test_product_pairs_at_out_start_as_fm(dims: tuple[int, int]) -> None:
    """A fresh model's product pairs at "out" are FM's second order: identity projections (ê_i = e_i[:k], zeros
    beyond d) and read-out weights 1 give sum_{i<j} <e_i[:k], e_j[:k]> + the bias. The default nn.Linear
    read-out (U(+-1/sqrt(fan_in)), random signs) started this part ~30x weaker: 0.003 test AUC lower on
    MovieLens (docs/supernet.md, "Initialisation")."""
    d, k = dims
    space = SearchSpace(tuple(f"F{i}" for i in range(len(VOCAB))), emb_dims=(d,), proj_dims=(k,), num_layers=2,
                        hidden_units=(4,))
    n, p = space.num_fields, space.num_pairs
    arch = Architecture.from_indices(space, {"emb": [0] * n, "proj": [0] * p, "func": [0] * p,  # product
                                             "select": [0] * n + [1] * p, "insert": [space.output_layer] * (n + p),
                                             "hidden": [0, 0]})
    torch.manual_seed(0)
    model = CTRModel(arch, VOCAB).double()
    x = torch.stack([torch.randint(0, v, (32,)) for v in VOCAB], 1)  # (B, n)
    with torch.no_grad():
        e = model.tables[0](x + model.emb0_offsets)  # (B, n, d): every field in one table, in id order
        want = fm_second_order(e[:, :, :k]) + model.readout.bias  # (B,)
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-15)
    assert (model.readout.weight == PAIR_READOUT_INIT).all() and model.readout.weight.numel() == p * k


def test_fields_and_mlp_keep_the_linear_init(space: SearchSpace) -> None:
    """Only the pair columns of the read-out are set: the o_{L-1} and field columns keep nn.Linear's bound."""
    for arch in archs(space, 10):
        model = CTRModel(arch, VOCAB)
        w, cols = model.readout.weight[0], list(arch.layout.readout_pair_columns)
        assert (w[cols] == PAIR_READOUT_INIT).all()
        rest = torch.ones_like(w, dtype=torch.bool)
        rest[cols] = False
        assert (w[rest].abs() <= w.numel() ** -0.5).all()
        for proj in model.projections:  # (m, d, K): the identity prefix per field
            torch.testing.assert_close(proj, torch.eye(proj.shape[1], proj.shape[2]).expand_as(proj), rtol=0, atol=0)
