"""The supernet: its forward against a slow loop reference and the exported standalone model (the core
invariant), the interaction functions against eq. 6, selection semantics, and that the teacher trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoias_pl import interactions as fx
from autoias_pl.ctr_model import PAIR_READOUT_INIT, CTRModel
from autoias_pl.space import COMPONENTS, Architecture, SearchSpace
from autoias_pl.supernet import Supernet
from autoias_pl.supernet.elastic import ElasticConcat, uniform_
from autoias_pl.supernet.extract import extract_model

VOCAB6 = (5, 7, 3, 9, 4, 6)
SMALL = {"emb_dims": (2, 4, 8), "proj_dims": (2, 4, 8, 16), "hidden_units": (4, 8), "num_layers": 3}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def fields(n: int) -> tuple[str, ...]:
    return tuple(f"C{i}" for i in range(n))


def ids(vocab: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, v, (batch,), generator=g) for v in vocab], 1)  # (B, n)


def make(space: SearchSpace, sel_fields: list[int], sel_pairs: list[int], ins_fields: int | list[int],
         ins_pairs: int | list[int], func: int = 0, seed: int = 0) -> Architecture:
    """An architecture with the given selection/insertion; dims and hidden random from `seed`."""
    g = torch.Generator().manual_seed(seed)
    base = Architecture.uniform_random(space, g)
    n, p = space.num_fields, space.num_pairs
    sel = [int(i in sel_fields) for i in range(n)] + [int(q in sel_pairs) for q in range(p)]
    ins_f = [ins_fields] * n if isinstance(ins_fields, int) else ins_fields
    ins_p = [ins_pairs] * p if isinstance(ins_pairs, int) else ins_pairs
    choice = {c: base.indices(c) for c in COMPONENTS}
    choice.update(select=sel, insert=ins_f + ins_p, func=[func] * p)
    return Architecture.from_indices(space, choice)


def edge_archs(space: SearchSpace) -> list[Architecture]:
    n, p, L = space.num_fields, space.num_pairs, space.num_layers
    out, allf, allp = space.output_layer, list(range(n)), list(range(p))
    concat = space.functions.index("concat")
    return [
        Architecture.teacher(space),
        make(space, [], [], 0, 0),  # nothing selected: a constant
        make(space, allf, [], out, out),  # LR: fields at the read-out only
        make(space, allf, allp, L - 1, L - 1, func=concat),  # only the last hidden layer receives vectors
        make(space, allf, allp, 0, 0, func=space.functions.index("product")),  # no concat pair
        make(space, allf, allp, out, out, func=concat),  # everything at the read-out
        make(space, [1, 4], [2, 7], 1, [2 if q == 7 else 1 for q in allp]),  # first layers are constant
        make(space, [], [0], 0, out, func=concat),  # a lone concat pair at the read-out
    ]


@pytest.fixture(params=["small", "default"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace(fields(6), **(SMALL if request.param == "small" else {}))


def random_archs(space: SearchSpace, count: int, seed: int = 0) -> list[Architecture]:
    g = torch.Generator().manual_seed(seed)
    return [Architecture.uniform_random(space, g) for _ in range(count)]


# Export parity tolerances, with inits where a wrong slice shows: at init_std 0.01 zeroing a whole embedding
# table moves float32 logits by as little as 1e-7, so the comparisons run in float64 at init_std 0.3 and in
# float32 at init_std 1.0; `test_parity_check_catches_a_corrupted_export` proves that these tolerances fail
# on one corrupted slice. Observed parity errors: ~1e-16 (float64), <= 1e-7 (float32).
PARITY = {torch.float64: (0.3, 1e-10), torch.float32: (1.0, 1e-6)}  # dtype -> (init_std, atol)


def generic(net: Supernet) -> Supernet:
    """`net` with random projections and read-out pair rows: the structured init (identity projections, pair
    read-out weights 1) would hide a transposed projection or swapped read-out columns from a parity check."""
    with torch.no_grad():
        uniform_(net.projection.weight, net.projection.weight.shape[1])
        uniform_(net.readout.vec_weight, net.readout.vec_weight.shape[1] * 4)
    return net


def parity_net(space: SearchSpace, dtype: torch.dtype, **kw: object) -> Supernet:
    torch.manual_seed(0)
    return generic(Supernet(space, VOCAB6, init_std=PARITY[dtype][0], **kw)).to(dtype)


def parity_error(model: CTRModel, net: Supernet, x: torch.Tensor, arch: Architecture) -> float:
    with torch.no_grad():
        return float((model(x) - net(x, arch)).abs().max())


@pytest.mark.parametrize("function_blocks", [False, True], ids=["pair_blocks", "function_blocks"])
def test_export_matches_supernet_and_num_params(space: SearchSpace, function_blocks: bool) -> None:
    net = parity_net(space, torch.float64, function_blocks=function_blocks)  # large embeddings: a sensitive comparison
    x = ids(VOCAB6, 16)
    for arch in edge_archs(space) + random_archs(space, 20):
        model = extract_model(net, arch)
        torch.testing.assert_close(model(x), net(x, arch), rtol=0, atol=PARITY[torch.float64][1])
        assert sum(q.numel() for q in model.parameters()) == arch.num_params(VOCAB6)
        assert sum(q.numel() for q in CTRModel(arch, VOCAB6).parameters()) == arch.num_params(VOCAB6)


def test_export_float32_within_1e5() -> None:
    space = SearchSpace(fields(6))
    net, x = parity_net(space, torch.float32), ids(VOCAB6, 64)
    for arch in random_archs(space, 5, seed=3) + edge_archs(space):
        model = extract_model(net, arch)
        assert model.readout.weight.dtype == torch.float32
        assert (model(x) - net(x, arch)).abs().max() < 1e-5
        assert parity_error(model, net, x, arch) < PARITY[torch.float32][1]


def _field_rows(model: CTRModel, group: int, pos: int) -> slice:
    """Rows of the pos-th field of embedding group `group` in that group's table."""
    fields = model.layout.emb_groups[group][1]
    start = sum(model.vocab_sizes[i] for i in fields[:pos])
    return slice(start, start + model.vocab_sizes[fields[pos]])


def _swap(t: torch.Tensor, dim: int, a: int, b: int) -> None:
    i, j = t.select(dim, a).clone(), t.select(dim, b).clone()
    t.select(dim, a).copy_(j)
    t.select(dim, b).copy_(i)


def _zero_field(m: CTRModel) -> bool:  # one field's embedding rows lost (e.g. a wrong offset past the table)
    m.tables[0].weight[_field_rows(m, 0, 0)] = 0
    return True


def _shift_field(m: CTRModel) -> bool:  # an off-by-one offset: the field reads its neighbour's rows
    m.tables[0].weight[_field_rows(m, 0, 0)] = m.tables[0].weight[_field_rows(m, 0, 0)].roll(1, 0)
    return True


def _last_emb_column(m: CTRModel) -> bool:  # the embedding slice [:d - 1] instead of [:d]
    m.tables[-1].weight[:, -1] = 0
    return True


def _swap_projection_rows(m: CTRModel) -> bool:  # rows of W_i read in the wrong order
    w = next((w for w in m.projections if w.shape[1] >= 2), None)
    if w is None:
        return False
    _swap(w.data, 1, 0, 1)
    return True


def _swap_projection_fields(m: CTRModel) -> bool:  # W_j copied for field i
    w = next((w for w in m.projections if w.shape[0] >= 2), None)
    if w is None:
        return False
    _swap(w.data, 0, 0, 1)
    return True


def _last_projection_column(m: CTRModel) -> bool:  # the projection slice [:k - 1] instead of [:k]
    if not m.projections:
        return False
    m.projections[-1].data[:, :, -1] = 0
    return True


def _transpose_concat(m: CTRModel) -> bool:  # A^T for A
    if m.layout.concat_width < 2:
        return False
    m.concat_a.copy_(m.concat_a.t().clone())
    return True


def _swap_first_layer_inputs(m: CTRModel) -> bool:  # two input columns of the first linear layer swapped
    layer = m.mlp[0] if len(m.mlp) else m.readout
    if layer.weight.shape[1] < 2:
        return False
    _swap(layer.weight.data, 1, 0, layer.weight.shape[1] - 1)
    return True


def _drop_bias(m: CTRModel) -> bool:  # a bias (e.g. the folded constant of the vector-free layers) lost
    layer = m.mlp[0] if len(m.mlp) else m.readout
    layer.bias.zero_()
    return True


MUTATIONS = [_zero_field, _shift_field, _last_emb_column, _swap_projection_rows, _swap_projection_fields,
             _last_projection_column, _transpose_concat, _swap_first_layer_inputs, _drop_bias]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_parity_check_catches_a_corrupted_export(space: SearchSpace, dtype: torch.dtype, mutate) -> None:
    """The parity tolerance sees one corrupted slice of the exported model.

    A corruption can be truly invisible on an architecture: the slice feeds only ReLU units that are dead on
    every row (then float64 moves by rounding only, < 1e-13). float64: every corruption is either invisible
    that way or beyond 100x the tolerance, and caught on >= 80% of the architectures. float32 (rounding
    ~1e-7, smallest effects ~2e-6): caught on >= 90%."""
    net, x, tol = parity_net(space, dtype), ids(VOCAB6, 16), PARITY[dtype][1]
    errors = []
    for arch in edge_archs(space) + random_archs(space, 20):
        model = extract_model(net, arch)
        if not model.tables:  # nothing selected: no slice to corrupt
            continue
        assert parity_error(model, net, x, arch) < tol
        with torch.no_grad():
            if mutate(model):
                errors.append(parity_error(model, net, x, arch))
    assert len(errors) >= 10
    caught = sum(e > tol for e in errors) / len(errors)
    if dtype == torch.float64:
        assert all(e > 100 * tol or e < 1e-13 for e in errors), errors
        assert caught >= 0.8, errors
    else:
        assert caught >= 0.9, errors


def reference(net: Supernet, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
    """Slow forward straight from the formulas, with Python loops over fields and pairs."""
    space, n = arch.space, arch.space.num_fields
    d, k, fn, h = arch.emb_dims, arch.proj_dims, arch.funcs, arch.hidden
    table, offsets = net.embedding.table.weight, net.embedding.offsets
    rows = net.block_rows(arch)  # vector -> its block row (per function with function_blocks)
    e = [table[offsets[i] + x[:, i], : d[i]] for i in range(n)]  # n x (B, d_i)
    vecs: dict[int, torch.Tensor] = {}
    for v in range(space.num_vectors):
        if not arch.selected[v]:
            continue
        if v < n:
            vecs[v] = e[v]
            continue
        p = v - n
        (i, j), kp = space.pairs[p], k[p]
        ei = e[i] @ net.projection.weight[i, : d[i], :kp]  # (B, k)
        ej = e[j] @ net.projection.weight[j, : d[j], :kp]  # (B, k)
        if fn[p] == "concat":
            lin = torch.cat([net.concat.a[:kp, :kp], net.concat.b[:kp, :kp]], 0)  # (2k, k)
            vecs[v] = torch.cat([ei, ej], 1) @ lin + net.concat.c[:kp]
        else:
            vecs[v] = {"product": ei * ej, "plus": ei + ej, "max": torch.maximum(ei, ej)}[fn[p]]
    o = None
    for layer in range(space.num_layers):
        mod = net.layers[layer]
        z = mod.bias[: h[layer]].expand(x.shape[0], -1)
        if o is not None:
            z = z + o @ mod.hid_weight[: o.shape[1], : h[layer]]
        for v, vec in vecs.items():
            if arch.insert_layers[v] == layer:
                z = z + vec @ mod.vec_weight[rows[v], : vec.shape[1], : h[layer]]
        o = torch.relu(z)
    logit = net.readout.bias + o @ net.readout.hid_weight[: o.shape[1], 0]
    for v, vec in vecs.items():
        if arch.insert_layers[v] == space.output_layer:
            logit = logit + vec @ net.readout.vec_weight[rows[v], : vec.shape[1], 0]
    return logit


@pytest.mark.parametrize("spec", [{"emb_dims": (2, 4), "proj_dims": (2, 4, 8), "hidden_units": (3, 5),
                                   "num_layers": 2}, {"emb_dims": (8,), "proj_dims": (4,), "num_layers": 1,
                                                      "hidden_units": (4,), "functions": ("max", "concat")}])
@pytest.mark.parametrize("function_blocks", [False, True], ids=["pair_blocks", "function_blocks"])
def test_vectorized_forward_matches_loop_reference(spec: dict, function_blocks: bool) -> None:
    space, vocab = SearchSpace(fields(4), **spec), (3, 5, 4, 6)
    net = generic(Supernet(space, vocab, init_std=0.5, function_blocks=function_blocks)).double()
    x = ids(vocab, 8)
    for arch in [Architecture.teacher(space)] + random_archs(space, 15, seed=1):
        torch.testing.assert_close(net(x, arch), reference(net, x, arch), rtol=0, atol=1e-12)


@pytest.mark.parametrize("share,function_blocks", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["own_blocks", "shared_blocks", "function_blocks", "shared_function_blocks"])
def test_gradients_match_loop_reference(space: SearchSpace, share: bool, function_blocks: bool) -> None:
    """Every parameter's gradient through the custom backwards (prefix_gather, the block matmul, max) equals
    autograd of the loop reference (plain indexing, slicing and torch.maximum; no ties in float64)."""
    net = parity_net(space, torch.float64, share_insert_blocks=share, function_blocks=function_blocks)
    x = ids(VOCAB6, 12)
    w = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))  # a generic loss
    names = [name for name, _ in net.named_parameters()]
    for arch in edge_archs(space) + random_archs(space, 10, seed=5):
        got = torch.autograd.grad((net(x, arch) * w).sum(), list(net.parameters()), allow_unused=True)
        want = torch.autograd.grad((reference(net, x, arch) * w).sum(), list(net.parameters()), allow_unused=True)
        for name, g, r in zip(names, got, want, strict=True):
            g = torch.zeros_like(r) if g is None and r is not None else g
            r = torch.zeros_like(g) if r is None and g is not None else r
            if g is not None:
                torch.testing.assert_close(g, r, rtol=0, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_interaction_functions_follow_eq6() -> None:
    g = torch.Generator().manual_seed(0)
    ei, ej = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    assert torch.equal(fx.product(ei, ej), ei * ej)
    assert torch.equal(fx.plus(ei, ej), ei + ej)
    assert torch.equal(fx.maximum(ei, ej), torch.where(ei > ej, ei, ej))
    lin = torch.nn.Linear(8, 4).double()
    a, b = lin.weight.t()[:4].double(), lin.weight.t()[4:].double()
    ei, ej = ei.double(), ej.double()
    torch.testing.assert_close(fx.concat(ei, ej, a, b, lin.bias), lin(torch.cat([ei, ej], 2)))


def test_elastic_concat_uses_prefix_blocks_and_per_field_halves_agree() -> None:
    cat = ElasticConcat(6).double()
    g = torch.Generator().manual_seed(1)
    ei, ej = torch.randn(2, 3, 4, generator=g).double(), torch.randn(2, 3, 4, generator=g).double()
    lin = torch.cat([cat.a[:4, :4], cat.b[:4, :4]], 0)  # (2k, k) = Linear(2k -> k) weight, transposed
    expect = torch.cat([ei, ej], 2) @ lin + cat.c[:4]
    torch.testing.assert_close(cat(ei, ej, 4), expect)
    left, _ = cat.per_field(ei)
    _, right = cat.per_field(ej)
    torch.testing.assert_close(left + right, expect)


def test_unselected_field_has_no_influence() -> None:
    space = SearchSpace(fields(6), **SMALL)
    arch = make(space, [1, 2, 3, 4, 5], [space.pairs.index((2, 3))], 0, 1)  # field 0: unselected, in no pair
    torch.manual_seed(1)  # at seed 0 (and ~1 init in 8) every ReLU of this arch is dead: all gradients vanish
    net, x = Supernet(space, VOCAB6, init_std=0.3), ids(VOCAB6, 32)
    assert net(x, arch).std() > 0  # the network is live, so the gradient check below means something
    x2 = x.clone()
    x2[:, 0] = (x[:, 0] + 1) % VOCAB6[0]
    assert torch.equal(net(x, arch), net(x2, arch))
    net(x, arch).sum().backward()
    grad = net.embedding.table.weight.grad
    assert grad[: VOCAB6[0]].abs().sum() == 0 and grad[VOCAB6[0] :].abs().sum() > 0


def test_unselected_pair_has_no_influence() -> None:
    space = SearchSpace(fields(6), **SMALL)
    keep = space.pairs.index((2, 3))
    net, x = Supernet(space, VOCAB6, init_std=0.3, function_blocks=False), ids(VOCAB6, 32)  # block row = vector
    arch = make(space, list(range(6)), [keep], 0, space.output_layer, func=space.functions.index("concat"))
    net(x, arch).sum().backward()  # the pair reaches the logit linearly: its gradients cannot vanish
    proj = net.projection.weight.grad.abs().sum((1, 2))  # (n,)
    assert proj[2] > 0 and proj[3] > 0 and proj[[0, 1, 4, 5]].sum() == 0
    blocks = net.readout.vec_weight.grad.abs().sum((1, 2))  # (V,)
    assert blocks[6 + keep] > 0 and blocks[6:].sum() == blocks[6 + keep]


def test_function_blocks_read_one_block_per_pair_and_function() -> None:
    """With function_blocks, pair p with function f reads (and trains) block row n + f * P + p in every layer,
    and only that one; the same pair with another function reads another block."""
    space = SearchSpace(fields(6), **SMALL)
    n, P, F = space.num_fields, space.num_pairs, len(space.functions)
    keep = space.pairs.index((2, 3))
    net, x = Supernet(space, VOCAB6, init_std=0.3, function_blocks=True), ids(VOCAB6, 32)
    assert net.readout.vec_weight.shape[0] == n + P * F == net.num_block_rows
    touched = []
    for f in range(F):
        net.zero_grad()
        arch = make(space, list(range(6)), [keep], 0, space.output_layer, func=f)
        net(x, arch).sum().backward()
        blocks = net.readout.vec_weight.grad.abs().sum((1, 2))  # (n + P * F,)
        assert blocks[n + f * P + keep] > 0 and blocks[n:].sum() == blocks[n + f * P + keep]
        touched.append(int(blocks[n:].nonzero()[0]) + n)
    assert len(set(touched)) == F
    plain = Supernet(space, VOCAB6, function_blocks=False)
    assert plain.block_rows(arch) == list(range(space.num_vectors))


def test_switching_architectures_keeps_the_modules() -> None:
    space = SearchSpace(fields(6), **SMALL)
    net, x = Supernet(space, VOCAB6), ids(VOCAB6, 4)
    before = [(name, q.data_ptr()) for name, q in net.named_parameters()]
    for arch in random_archs(space, 5):
        net(x, arch)
    assert [(name, q.data_ptr()) for name, q in net.named_parameters()] == before
    assert net.plan(random_archs(space, 1)[0]) is net.plan(random_archs(space, 1)[0])  # cached


def test_options_sparse_and_shared_blocks() -> None:
    space = SearchSpace(fields(6), **SMALL)
    x, arch = ids(VOCAB6, 8), random_archs(space, 1)[0]
    sparse = Supernet(space, VOCAB6, sparse=True)
    sparse(x, arch).sum().backward()
    assert sparse.embedding.table.weight.grad.is_sparse
    shared = Supernet(space, VOCAB6, share_insert_blocks=True, function_blocks=False)  # V block rows a layer
    plain = Supernet(space, VOCAB6, function_blocks=False)
    v, d, h = space.num_vectors, space.max_dim, space.hidden_units[-1]
    saved = sum(q.numel() for q in plain.parameters()) - sum(q.numel() for q in shared.parameters())
    assert saved == (space.num_layers - 1) * v * d * h
    assert (extract_model(shared, arch)(x) - shared(x, arch)).abs().max() < 1e-5
    shared = parity_net(space, torch.float64, share_insert_blocks=True)
    for a in random_archs(space, 10, seed=2):
        torch.testing.assert_close(extract_model(shared, a)(x), shared(x, a), rtol=0, atol=PARITY[torch.float64][1])


def test_rejects_foreign_architecture_and_vocab_mismatch() -> None:
    net = Supernet(SearchSpace(fields(6), **SMALL), VOCAB6)
    with pytest.raises(ValueError, match="different search space"):
        net(ids(VOCAB6, 2), Architecture.teacher(SearchSpace(fields(6))))
    with pytest.raises(ValueError, match="vocab sizes"):
        Supernet(SearchSpace(fields(6)), VOCAB6[:5])


def test_teacher_trains_with_adam() -> None:
    """200 Adam steps (lr 1e-3) of the teacher clearly lower BCE on FM-style synthetic data."""
    g = torch.Generator().manual_seed(0)
    vocab, n = (20,) * 6, 6
    x = ids(vocab, 2048, seed=1)
    bias = torch.randn(n, 20, generator=g)  # first-order effects
    low = torch.randn(n, 20, 2, generator=g)  # low-rank pair effects
    z = bias.gather(1, x.t()).sum(0) + 0.5 * (low[torch.arange(n), x].sum(1) ** 2).sum(1) - 3
    y = torch.bernoulli(torch.sigmoid(z), generator=g)
    space = SearchSpace(fields(n), emb_dims=(4, 8), proj_dims=(4, 8), hidden_units=(16, 32), num_layers=2)
    torch.manual_seed(0)
    net, teacher = Supernet(space, vocab), Architecture.teacher(space)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with torch.no_grad():
        start = F.binary_cross_entropy_with_logits(net(x, teacher), y).item()
    for _ in range(200):
        rows = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x[rows], teacher), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = F.binary_cross_entropy_with_logits(net(x, teacher), y).item()
    assert end < 0.85 * start, (start, end)


def test_export_matches_supernet_on_bilinear_readouts(space: SearchSpace) -> None:
    """Product pairs read out at "out" go through CTRModel's bilinear read-out (never materialised): FM,
    DeepFM, and a product group split between a hidden layer (materialised head) and "out" (bilinear tail)."""
    net, x = parity_net(space, torch.float64), ids(VOCAB6, 16)
    n, p, out = space.num_fields, space.num_pairs, space.output_layer
    product, allf, allp = space.functions.index("product"), list(range(n)), list(range(p))
    for arch in (make(space, allf, allp, out, out, func=product), make(space, allf, allp, 0, out, func=product),
                 make(space, allf, allp, 1, [1 if q < 3 else out for q in allp], func=product, seed=1)):
        model = extract_model(net, arch)
        assert model.bilinear, arch.summary()
        torch.testing.assert_close(model(x), net(x, arch), rtol=0, atol=PARITY[torch.float64][1])


@pytest.mark.parametrize("function_blocks", [False, True], ids=["pair_blocks", "function_blocks"])
def test_supernet_starts_every_architecture_as_its_fresh_model(space: SearchSpace, function_blocks: bool) -> None:
    """The supernet's init gives each architecture the structured part of `CTRModel.reset_parameters`:
    identity projection prefixes and read-out weight 1 on the pair columns (other entries are random)."""
    net = Supernet(space, VOCAB6, function_blocks=function_blocks)
    for arch in edge_archs(space) + random_archs(space, 10, seed=7):
        got, fresh = extract_model(net, arch), CTRModel(arch, VOCAB6)
        cols = list(arch.layout.readout_pair_columns)
        assert (got.readout.weight[0, cols] == PAIR_READOUT_INIT).all()
        assert (fresh.readout.weight[0, cols] == PAIR_READOUT_INIT).all()
        for a, b in zip(got.projections, fresh.projections, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(arch.layout.readout_pair_columns for arch in edge_archs(space))
