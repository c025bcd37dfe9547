"""Hand-crafted baselines are architectures with the documented structure."""

from __future__ import annotations

import pytest
import torch

from autoias_pl.baselines import BASELINES, baseline, snap
from autoias_pl.ctr_model import CTRModel
from autoias_pl.space import Architecture, ArchitectureError, SearchSpace

N = 5


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(tuple(f"C{i}" for i in range(N)))


def parts(arch: Architecture) -> tuple[list[bool], list[bool], list[int], list[int], set[str]]:
    n, sel, ins = arch.space.num_fields, arch.selected, arch.insert_layers
    pair_funcs = {f for f, s in zip(arch.funcs, sel[n:], strict=True) if s}
    return list(sel[:n]), list(sel[n:]), list(ins[:n]), [i for i, s in zip(ins[n:], sel[n:], strict=True) if s], pair_funcs


def test_lr_reads_out_every_field_and_no_pair(space: SearchSpace) -> None:
    f, p, fi, pi, _ = parts(baseline("lr", space))
    assert all(f) and not any(p) and set(fi) == {space.output_layer}


def test_fm_reads_out_fields_and_every_product_pair(space: SearchSpace) -> None:
    f, p, fi, pi, funcs = parts(baseline("fm", space))
    assert all(f) and all(p) and set(fi) == set(pi) == {space.output_layer} and funcs == {"product"}


def test_dnn_feeds_every_field_to_layer0(space: SearchSpace) -> None:
    f, p, fi, _, _ = parts(baseline("dnn", space))
    assert all(f) and not any(p) and set(fi) == {0}


def test_deepfm_deep_fields_and_fm_pairs_at_out(space: SearchSpace) -> None:
    f, p, fi, pi, funcs = parts(baseline("deepfm", space))
    assert all(f) and all(p) and set(fi) == {0} and set(pi) == {space.output_layer} and funcs == {"product"}


def test_ipnn_everything_at_layer0(space: SearchSpace) -> None:
    f, p, fi, pi, funcs = parts(baseline("ipnn", space))
    assert all(f) and all(p) and set(fi) == set(pi) == {0} and funcs == {"product"}


def test_wide_deep_plus_chain_covers_every_field(space: SearchSpace) -> None:
    arch = baseline("wide_deep", space)
    f, p, fi, pi, funcs = parts(arch)
    covered = {i for q, s in enumerate(p) if s for i in space.pairs[q]}
    assert all(f) and set(fi) == {0} and covered == set(range(N)) and sum(p) == (N + 1) // 2
    assert set(pi) == {space.output_layer} and funcs == {"plus"}


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_builds_a_model_of_its_size(space: SearchSpace, name: str) -> None:
    arch, vocab = baseline(name, space, dim=8, hidden=100), [7] * N
    assert set(arch.emb_dims) == {8} and set(arch.hidden) == {128}
    assert arch.provenance["baseline"] == name
    model = CTRModel(arch, vocab)
    assert sum(q.numel() for q in model.parameters()) == arch.num_params(vocab)
    assert model(torch.zeros(3, N, dtype=torch.long)).shape == (3,)


def test_dims_snap_to_candidates() -> None:
    assert snap(10, (4, 8, 16)) == 8 and snap(12, (4, 8, 16)) == 16 and snap(1000, (4, 8, 16)) == 16
    space = SearchSpace(("a", "b", "c"), emb_dims=(4, 32), proj_dims=(8,), hidden_units=(64, 256))
    arch = baseline("dnn", space, dim=20, hidden=90)
    assert set(arch.emb_dims) == {32} and set(arch.proj_dims) == {8} and set(arch.hidden) == {64}


def test_unknown_baseline_is_named() -> None:
    with pytest.raises(ArchitectureError, match="'xdeepfm'"):
        baseline("xdeepfm", SearchSpace(("a", "b")))


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "wide_deep"])
def test_baselines_needing_out_refuse_a_space_without_it(name: str) -> None:
    with pytest.raises(ArchitectureError, match=f"'{name}'.*output_insertion"):
        baseline(name, SearchSpace(("a", "b", "c"), output_insertion=False))


def test_baselines_without_out_work_in_the_papers_space() -> None:
    space = SearchSpace(("a", "b", "c"), output_insertion=False)
    assert all(baseline(name, space).space == space for name in ("dnn", "ipnn"))


def test_missing_function_is_named() -> None:
    with pytest.raises(ArchitectureError, match="'product'"):
        baseline("fm", SearchSpace(("a", "b"), functions=("concat", "max")))
