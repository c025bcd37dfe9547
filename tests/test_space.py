"""The search space and the architecture value: JSON, validation errors, teacher, size, sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from autoias_pl.space import COMPONENTS, OUT, Architecture, ArchitectureError, SearchSpace

TINY = {"emb_dims": (4, 8), "proj_dims": (4,), "functions": ("product", "max"), "num_layers": 2,
        "hidden_units": (8, 16)}


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(("a", "b", "c"), schema_hash="h1", **TINY)


@pytest.fixture
def arch(space: SearchSpace) -> Architecture:
    return Architecture.uniform_random(space, torch.Generator().manual_seed(0))


def test_json_round_trip_through_a_file(arch: Architecture, tmp_path: Path) -> None:
    path = arch.save(tmp_path / "arch.json", vocab_sizes=[3, 4, 5])
    back = Architecture.load(path, schema_hash="h1")
    assert back == arch and back.space == arch.space and hash(back) == hash(arch)
    d = json.loads(path.read_text())
    assert d["summary"]["params"] == arch.num_params([3, 4, 5]) and d["choices"]["insert/axb"] in (0, 1, OUT)


def test_values_round_trip(arch: Architecture) -> None:
    assert Architecture.from_values(arch.space, arch.to_values()) == arch


def edited(arch: Architecture, **changes: object) -> dict:
    d = arch.to_json_dict()
    d["choices"].update(changes)
    return d


@pytest.mark.parametrize(("label", "value"), [("emb/a", 5), ("func/axc", "concat"), ("insert/b", 7),
                                              ("hidden/1", 32), ("select/bxc", 2), ("select/a", True)])
def test_out_of_set_value_names_its_label(arch: Architecture, label: str, value: object) -> None:
    if value is True:  # bools are accepted for select only; True is 1
        assert Architecture.from_json_dict(edited(arch, **{label: value})).selected[0]
        return
    with pytest.raises(ArchitectureError, match=f"{label}: value"):
        Architecture.from_json_dict(edited(arch, **{label: value}))


def test_wrong_label_is_named(arch: Architecture) -> None:
    with pytest.raises(ArchitectureError, match="emb/zz"):
        Architecture.from_json_dict(edited(arch, **{"emb/zz": 4}))


def test_missing_label_is_named(arch: Architecture) -> None:
    d = arch.to_json_dict()
    del d["choices"]["proj/bxc"]
    with pytest.raises(ArchitectureError, match="proj/bxc: missing"):
        Architecture.from_json_dict(d)


def test_field_count_mismatch(space: SearchSpace) -> None:
    with pytest.raises(ArchitectureError, match="'emb' has 2 decisions.*3"):
        Architecture(space, ((0, 0),) + tuple((0,) * space.num_decisions(c) for c in COMPONENTS[1:]))
    with pytest.raises(ArchitectureError, match="2 vocab sizes for 3 fields"):
        Architecture.teacher(space).num_params([3, 4])


def test_out_of_range_index_names_its_label(space: SearchSpace) -> None:
    rows = [[0] * space.num_decisions(c) for c in COMPONENTS]
    rows[COMPONENTS.index("hidden")][1] = 2
    with pytest.raises(ArchitectureError, match="hidden/1: candidate index 2"):
        Architecture.from_indices(space, dict(zip(COMPONENTS, rows, strict=True)))


def test_schema_hash_mismatch(arch: Architecture, tmp_path: Path) -> None:
    path = arch.save(tmp_path / "a.json")
    with pytest.raises(ArchitectureError, match="data schema 'h1'.*'h2'"):
        Architecture.load(path, schema_hash="h2")


def test_bad_version_and_bad_file(arch: Architecture, tmp_path: Path) -> None:
    d = arch.to_json_dict()
    d["autoias_architecture_version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(ArchitectureError, match="v.json: autoias_architecture_version 99"):
        Architecture.load(tmp_path / "v.json")
    (tmp_path / "bad.json").write_text("{\n oops")
    with pytest.raises(ArchitectureError, match="bad.json:2: invalid JSON"):
        Architecture.load(tmp_path / "bad.json")
    with pytest.raises(ArchitectureError, match="no such architecture file"):
        Architecture.load(tmp_path / "none.json")


def test_invalid_spaces_are_refused() -> None:
    with pytest.raises(ArchitectureError, match="emb_dims"):
        SearchSpace(("a", "b"), emb_dims=(8, 4))
    with pytest.raises(ArchitectureError, match="functions"):
        SearchSpace(("a", "b"), functions=("product", "min"))
    with pytest.raises(ArchitectureError, match="distinct field names"):
        SearchSpace(("a", "a"))


def test_teacher_is_the_largest_architecture(space: SearchSpace) -> None:
    t = Architecture.teacher(space)
    assert set(t.emb_dims) == {8} and set(t.proj_dims) == {4} and set(t.hidden) == {16}
    assert all(t.selected) and set(t.insert_layers) == {0}
    assert set(t.funcs) == {"product"}  # no concat in this space: the first function
    assert set(Architecture.teacher(SearchSpace(("a", "b", "c"))).funcs) == {"concat"}


def test_log10_size_by_hand(space: SearchSpace) -> None:
    # 3 fields, 3 pairs, 6 vectors: emb 2^3, proj 1^3, func 2^3, select 2^6, insert 3^6 (2 layers + out), hidden 2^2
    assert space.log10_size() == pytest.approx(math.log10(2**3 * 2**3 * 2**6 * 3**6 * 2**2))


def test_uniform_random_is_reproducible(space: SearchSpace) -> None:
    draw = [Architecture.uniform_random(space, torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert draw[0] == draw[1] and draw[0] != draw[2]


def test_structure_names_and_pairs(space: SearchSpace) -> None:
    assert space.pairs == ((0, 1), (0, 2), (1, 2)) and space.num_vectors == 6
    assert space.labels("select") == ("select/a", "select/b", "select/c", "select/axb", "select/axc", "select/bxc")
    assert space.candidates("insert") == (0, 1, OUT)
    assert SearchSpace.from_dict(space.to_dict()) == space
