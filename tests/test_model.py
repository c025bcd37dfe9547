"""The standalone model: its sizes, its grouping (no per-field / per-pair modules) and its independence."""

from __future__ import annotations

import pytest
import torch

from autoias_pl.ctr_model import CTRModel
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
