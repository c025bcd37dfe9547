"""The one layout (autoias_pl/layout.py): exact groups, targets and order for the teacher, an empty and a
hand-written architecture; a direct reference of its definitions; and that the standalone model, the
supernet's plan and the costs all read the same layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from autoias_pl import layout as layout_module
from autoias_pl.ctr_model import CTRModel
from autoias_pl.layout import ArchitectureLayout
from autoias_pl.space import COMPONENTS, OUT, Architecture, SearchSpace
from autoias_pl.supernet import Supernet

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

SMALL = {"emb_dims": (4, 8), "proj_dims": (2, 4), "num_layers": 2, "hidden_units": (3, 5)}
VOCAB4 = (3, 4, 5, 6)
VOCAB6 = (5, 7, 3, 9, 4, 6)


def small_space() -> SearchSpace:
    return SearchSpace(("a", "b", "c", "d"), **SMALL)  # pairs 0 ab, 1 ac, 2 ad, 3 bc, 4 bd, 5 cd


def with_choices(space: SearchSpace, **changes: list[int]) -> Architecture:
    """The teacher of `space` with some components replaced (candidate indices)."""
    teacher = Architecture.teacher(space)
    choice = {c: list(teacher.indices(c)) for c in COMPONENTS}
    choice.update(changes)
    return Architecture.from_indices(space, choice)


def hand_arch() -> Architecture:
    """4 fields a b c d (vectors 0-3), pairs ab ac ad bc bd cd (vectors 4-9), 2 hidden layers (3, 5)."""
    space = small_space()
    values = {
        "emb/a": 8, "emb/b": 4, "emb/c": 8, "emb/d": 4,
        "select/a": 1, "select/b": 0, "select/c": 1, "select/d": 1,
        "insert/a": 1, "insert/b": 0, "insert/c": 0, "insert/d": OUT,
        "hidden/0": 3, "hidden/1": 5,
    }
    pairs = {  # pair: (selected, k, function, target)
        "axb": (1, 4, "product", 1), "axc": (0, 2, "max", 0), "axd": (1, 2, "concat", OUT),
        "bxc": (1, 4, "product", 0), "bxd": (1, 2, "plus", 0), "cxd": (0, 2, "product", 1),
    }
    for name, (sel, k, func, target) in pairs.items():
        values.update({f"select/{name}": sel, f"proj/{name}": k, f"func/{name}": func, f"insert/{name}": target})
    return Architecture.from_values(space, values)


def test_hand_written_architecture() -> None:
    lay = hand_arch().layout
    assert lay.widths == (8, 4, 8, 4, 4, 2, 2, 4, 2, 2)
    assert lay.used == (0, 1, 2, 3)  # b only in pairs, still embedded
    assert lay.emb_groups == ((4, (3, 1)), (8, (2, 0)))  # selected by (target, id) (d; c before a), then b
    assert lay.emb_selected == (1, 2)
    assert lay.proj_fields == (0, 1, 2, 3) and lay.proj_width == (4, 4, 4, 2)
    assert lay.proj_groups == ((4, 2, (3,)), (4, 4, (1,)), (8, 4, (0, 2)))
    assert lay.pair_groups == (("product", 4, (3, 0)), ("concat", 2, (2,)), ("plus", 2, (4,)))  # bc (0) first
    assert lay.concat_width == 2
    assert lay.vector_groups == ((4, (3,)), (8, (2, 0)), (4, (7, 4)), (2, (6,)), (2, (8,)))
    assert lay.counts == ((0, 0, 1), (1, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 0))
    assert lay.inputs == ((2, 7, 8), (0, 4), (3, 6))
    assert [lay.slices(t) for t in range(3)] == [((1, 0, 1), (2, 0, 1), (4, 0, 1)), ((1, 1, 2), (2, 1, 2)),
                                                 ((0, 0, 1), (3, 0, 1))]
    assert lay.first == 0 and lay.hidden == (3, 5) and list(lay.mlp_layers) == [0, 1]
    assert lay.mlp == ((8 + 4 + 2, 3), (3 + 8 + 4, 5)) and lay.readout_fan_in == 5 + 4 + 2
    assert lay.readout_pair_columns == (9, 10)  # read-out input [o_1 (5), d (4), axd (2)]
    assert lay.selected_vectors == (0, 2, 3, 4, 6, 7, 8)
    # embeddings 104, projections 8 + 16 + 64, concat 2*2*2 + 2, MLP 14*3+3 + 15*5+5, read-out 11 + 1
    assert lay.num_params(VOCAB4) == hand_arch().num_params(VOCAB4) == 104 + 88 + 10 + 125 + 12
    # projections 88, products 2 x 4, concat 2*2*2, plus free, MLP 42 + 75, read-out 11
    assert lay.num_macs() == hand_arch().num_macs() == 88 + 8 + 8 + 117 + 11
    summary = hand_arch().summary()
    assert summary["selected_fields"] == ["a", "c", "d"]
    assert summary["selected_pairs"] == ["axb", "axd", "bxc", "bxd"]
    assert hand_arch().used_fields() == (0, 1, 2, 3)


def test_teacher() -> None:
    space = small_space()
    lay = Architecture.teacher(space).layout
    assert lay.used == lay.proj_fields == (0, 1, 2, 3) and lay.proj_width == (4,) * 4
    assert lay.emb_groups == ((8, (0, 1, 2, 3)),) and lay.emb_selected == (4,)
    assert lay.proj_groups == ((8, 4, (0, 1, 2, 3)),)
    assert lay.pair_groups == (("concat", 4, (0, 1, 2, 3, 4, 5)),) and lay.concat_width == 4
    assert lay.vector_groups == ((8, (0, 1, 2, 3)), (4, (4, 5, 6, 7, 8, 9)))
    assert lay.counts == ((4, 0, 0), (6, 0, 0))
    assert lay.inputs == (tuple(range(10)), (), ())
    assert lay.first == 0 and lay.mlp == ((4 * 8 + 6 * 4, 5), (5, 5)) and lay.readout_fan_in == 5


def test_empty_architecture() -> None:
    space = small_space()
    arch = with_choices(space, select=[0] * space.num_vectors)
    lay = arch.layout
    assert lay.used == lay.proj_fields == lay.emb_groups == lay.proj_groups == lay.pair_groups == ()
    assert lay.vector_groups == lay.counts == lay.mlp == lay.selected_vectors == ()
    assert lay.inputs == ((), (), ()) and lay.first is None and list(lay.mlp_layers) == []
    assert lay.concat_width == 0 and lay.readout_fan_in == 0 and lay.proj_width == (0, 0, 0, 0)
    assert arch.num_params(VOCAB4) == 1 and arch.num_macs() == 0  # the read-out bias: a constant
    assert sum(q.numel() for q in CTRModel(arch, VOCAB4).parameters()) == 1
    plan = Supernet(space, VOCAB4).plan(arch)
    assert plan.used.numel() == 0 and plan.field_pos == () and plan.groups == () and plan.ids == ((), (), ())


def test_everything_read_out_has_no_hidden_layer() -> None:
    space = small_space()
    arch = with_choices(space, insert=[space.output_layer] * space.num_vectors)
    lay = arch.layout
    assert lay.first is None and lay.mlp == () and lay.inputs[:2] == ((), ())
    assert lay.readout_fan_in == 4 * 8 + 6 * 4 and lay.inputs[2] == tuple(range(10))
    assert lay.readout_pair_columns == tuple(range(4 * 8, 4 * 8 + 6 * 4))  # after the four fields


def test_layout_is_computed_once_and_pure_python() -> None:
    arch = hand_arch()
    assert arch.layout is arch.layout and CTRModel(arch, VOCAB4).layout is arch.layout
    assert hand_arch().layout == arch.layout and hand_arch() == arch  # not part of equality or hash
    tree = ast.parse(Path(layout_module.__file__).read_text())
    runtime = set()
    for node in tree.body:  # top-level imports outside `if TYPE_CHECKING:`
        if isinstance(node, ast.Import):
            runtime.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            runtime.add(node.module or "")
    assert not any(m == "torch" or m.startswith(("torch.", "autoias_pl")) for m in runtime), runtime


def reference(arch: Architecture) -> dict:
    """The layout's definitions written out directly (sorting with keys; no shortcuts)."""
    space, n, L = arch.space, arch.space.num_fields, arch.space.num_layers
    sel, target, d, k, funcs = arch.selected, arch.insert_layers, arch.emb_dims, arch.proj_dims, arch.funcs
    sel_pairs = [p for p in range(space.num_pairs) if sel[n + p]]
    kmax = {i: max(k[p] for p in sel_pairs if i in space.pairs[p]) for i in range(n)
            if any(i in space.pairs[p] for p in sel_pairs)}
    used = [i for i in range(n) if sel[i] or i in kmax]
    emb = [(w, tuple(sorted((i for i in used if d[i] == w), key=lambda i: (0, target[i], i) if sel[i] else (1, 0, i))))
           for w in sorted({d[i] for i in used})]
    proj = [(dw, kk, tuple(i for i in sorted(kmax) if (d[i], kmax[i]) == (dw, kk)))
            for dw, kk in sorted({(d[i], kmax[i]) for i in kmax})]
    keys = sorted({(space.functions.index(funcs[p]), k[p]) for p in sel_pairs})
    pairs = [(space.functions[f], kk, tuple(sorted((p for p in sel_pairs if (space.functions.index(funcs[p]), k[p])
                                                     == (f, kk)), key=lambda p: (target[n + p], p))))
             for f, kk in keys]
    order = [i for _, fs in emb for i in fs if sel[i]] + [n + p for _, _, ps in pairs for p in ps]
    inputs = tuple(tuple(v for v in order if target[v] == t) for t in range(L + 1))
    return {"used": tuple(used), "emb_groups": tuple(emb), "proj_groups": tuple(proj), "pair_groups": tuple(pairs),
            "concat_width": max([kk for f, kk, _ in pairs if f == "concat"], default=0), "inputs": inputs,
            "first": next((t for t in range(L) if inputs[t]), None)}


def archs(space: SearchSpace, count: int = 20, seed: int = 0) -> list[Architecture]:
    g = torch.Generator().manual_seed(seed)
    return [Architecture.uniform_random(space, g) for _ in range(count)]


@pytest.fixture(params=["small", "default"])
def space6(request: pytest.FixtureRequest) -> SearchSpace:
    spec = {"emb_dims": (2, 4, 8), "proj_dims": (2, 4, 8, 16), "hidden_units": (4, 8), "num_layers": 3}
    return SearchSpace(tuple(f"C{i}" for i in range(6)), **(spec if request.param == "small" else {}))


def test_layout_matches_its_definitions(space6: SearchSpace) -> None:
    for arch in archs(space6) + [Architecture.teacher(space6)]:
        lay, ref = arch.layout, reference(arch)
        assert {name: getattr(lay, name) for name in ref} == ref, arch.to_values()
        assert lay == ArchitectureLayout.of(Architecture(space6, arch.choices))


def test_model_plan_and_costs_agree_with_the_layout(space6: SearchSpace) -> None:
    net = Supernet(space6, VOCAB6, function_blocks=False)  # the one-block-per-pair rows this test reads
    n, pairs = space6.num_fields, space6.pairs
    for arch in archs(space6, seed=1):
        lay = arch.layout
        # the standalone model: its tensors are the layout's groups at their widths
        model = CTRModel(arch, VOCAB6)
        assert model.layout is lay
        assert sum(q.numel() for q in model.parameters()) == arch.num_params(VOCAB6) == lay.num_params(VOCAB6)
        assert [(t.embedding_dim, t.num_embeddings) for t in model.tables] == [
            (w, sum(VOCAB6[i] for i in fs)) for w, fs in lay.emb_groups]
        assert [tuple(w.shape) for w in model.projections] == [(len(fs), dw, kk) for dw, kk, fs in lay.proj_groups]
        kc = lay.concat_width
        assert (model.concat_a is None) if not kc else tuple(model.concat_a.shape) == (kc, kc)
        assert [(m.in_features, m.out_features) for m in model.mlp] == list(lay.mlp)
        assert model.readout.in_features == lay.readout_fan_in
        # the supernet's plan: the selected prefixes of the emb groups, then the pair groups
        plan = net.plan(arch)
        assert plan.used.tolist() == list(lay.used) and plan.proj_fields.tolist() == list(lay.proj_fields)
        assert plan.emb_mask.sum(1).tolist() == [lay.widths[i] for i in lay.used]
        assert plan.proj_pos.tolist() == [lay.used.index(i) for i in lay.proj_fields]
        field_pieces = [(w, fs[:s]) for (w, fs), s in zip(lay.emb_groups, lay.emb_selected, strict=True) if s]
        assert plan.field_widths == tuple(w for w, _ in field_pieces)
        assert [tuple(plan.used[p].tolist()) for p in plan.field_pos] == [fs for _, fs in field_pieces]
        assert [(g.func, g.width) for g in plan.groups] == [(f, kk) for f, kk, _ in lay.pair_groups]
        for g, (_, _, ps) in zip(plan.groups, lay.pair_groups, strict=True):
            ij = list(zip(plan.proj_fields[g.left].tolist(), plan.proj_fields[g.right].tolist(), strict=True))
            assert ij == [pairs[p] for p in ps]
        assert plan.counts == tuple(c for (_, vs), c in zip(lay.vector_groups, lay.counts, strict=True) if vs)
        assert plan.hidden == lay.hidden
        for t, (groups, ids) in enumerate(zip(plan.route, plan.ids, strict=True)):
            widths = sorted({lay.widths[v] for v in lay.inputs[t]})
            assert len(groups) == len(ids) == len(widths)
            for w, v in zip(widths, ids, strict=True):
                got = list(range(space6.num_vectors)) if v is None else v.tolist()
                assert got == [u for u in lay.inputs[t] if lay.widths[u] == w]
        # the costs
        assert arch.used_fields() == lay.used
        assert arch.num_macs() == lay.num_macs()
        selected = [v for v in range(space6.num_vectors) if arch.selected[v]]
        assert list(lay.selected_vectors) == selected
        assert arch.summary()["selected_pairs"] == [space6.vector_names[v] for v in selected if v >= n]
