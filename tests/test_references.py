"""The published reference models (autoias_pl/references.py): shapes, sizes, their defining identities, and
retraining one through the `autoias` CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from autoias_pl.data.schema import Schema
from autoias_pl.references import REFERENCES, DCNv2, DeepFM, FieldEmbedding, fm_second_order, reference
from autoias_pl.retrain import TEST_METRICS_FILE, AutoIASRetrain
from autoias_pl.space import ArchitectureError
from tests.helpers.cli import RETRAIN, autoias, retrain_overrides

VOCAB = [5, 7, 3, 11]
N, T, K, H, L = len(VOCAB), sum(VOCAB), 4, 6, 2
D = N * K


def mlp_params(fan_in: int, hidden: int = H, layers: int = L, output: bool = True) -> int:
    p = (fan_in * hidden + hidden) + (layers - 1) * (hidden * hidden + hidden)
    return p + (hidden + 1 if output else 0)


EXPECTED_PARAMS = {
    "ref:lr": T + 1,
    "ref:fm": T + 1 + T * K,
    "ref:dnn": T * K + mlp_params(D),
    "ref:deepfm": T + 1 + T * K + mlp_params(D) - 1,  # one global bias (in the linear part)
    "ref:wide_deep": T + 1 + T * K + mlp_params(D) - 1,
    "ref:ipnn": T * K + mlp_params(D + N * (N - 1) // 2),
    "ref:dcnv2": T * K + L * (D * D + D) + mlp_params(D),
    # embeddings, 2 contexts, 2 gates (k -> H -> D), 2 streams, fusion: w1 (+bias), w2, one H x H head
    "ref:finalmlp": T * K + 2 * K + 2 * (K * H + H + H * D + D) + 2 * mlp_params(D, output=False)
    + (H + 1) + H + H * H,
}


def ids(batch: int = 9) -> torch.Tensor:
    return torch.stack([torch.randint(v, (batch,)) for v in VOCAB], 1)


def test_every_reference_has_a_parameter_formula() -> None:
    assert set(EXPECTED_PARAMS) == set(REFERENCES)


@pytest.mark.parametrize("name", REFERENCES)
def test_forward_shape_and_parameter_count(name: str) -> None:
    model = reference(name, VOCAB, dim=K, hidden=H, layers=L)
    out = model(ids())
    assert out.shape == (9,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    assert model.num_macs() > 0
    out.sum().backward()  # every parameter is used
    assert all(p.grad is not None for p in model.parameters()), name


def test_unknown_reference_is_refused() -> None:
    with pytest.raises(ArchitectureError, match="unknown reference model 'ref:nope'.*ref:deepfm"):
        reference("ref:nope", VOCAB)


def test_fm_sum_square_equals_the_pairwise_sum() -> None:
    e = torch.randn(8, 6, 5, dtype=torch.float64)
    explicit = torch.zeros(8, dtype=torch.float64)
    for i, j in itertools.combinations(range(6), 2):
        explicit += (e[:, i] * e[:, j]).sum(-1)
    torch.testing.assert_close(fm_second_order(e), explicit, rtol=0, atol=1e-6)


def test_field_embedding_offsets_separate_the_fields() -> None:
    emb = FieldEmbedding(VOCAB, 3)
    x = torch.zeros(1, N, dtype=torch.long)  # id 0 of every field: four different rows
    starts = [0, 5, 12, 15]
    torch.testing.assert_close(emb(x)[0], emb.table.weight[starts])


def test_table_trains_like_nn_embedding() -> None:
    """The CPU index_add_ backward of `Table` gives nn.Embedding's gradient (repeated ids summed)."""
    from autoias_pl.references import Table

    ours = Table(T, K).double()
    theirs = torch.nn.Embedding(T, K).double()
    theirs.weight.data.copy_(ours.weight.data)
    x = torch.randint(T, (33, N))
    x[0] = x[1]  # repeated rows
    g = torch.randn(33, N, K, dtype=torch.float64)
    (ours(x) * g).sum().backward()
    (theirs(x) * g).sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_deepfm_shares_one_embedding_between_fm_and_deep_parts() -> None:
    model = DeepFM(VOCAB, dim=K, hidden=H, layers=L)
    tables = [m for m in model.modules() if isinstance(m, FieldEmbedding) and m.table.embedding_dim == K]
    assert len(tables) == 1
    x = ids()
    fm_grad = torch.autograd.grad(fm_second_order(model.embedding(x)).sum(), model.embedding.table.weight)[0]
    deep_grad = torch.autograd.grad(model.deep(model.embedding(x).flatten(1)).sum(), model.embedding.table.weight)[0]
    assert fm_grad.abs().sum() > 0 and deep_grad.abs().sum() > 0
    # the full logit's gradient is the sum of both parts' (one table, two readers)
    full = torch.autograd.grad(model(x).sum(), model.embedding.table.weight)[0]
    torch.testing.assert_close(full, fm_grad + deep_grad)


def test_dcnv2_cross_layer_is_x0_times_wx_plus_b_plus_x() -> None:
    model = DCNv2(VOCAB, dim=K, hidden=H, layers=L).double()
    layer = model.cross[0]
    x0, x = torch.randn(5, D, dtype=torch.float64), torch.randn(5, D, dtype=torch.float64)
    w, b = layer.linear.weight, layer.linear.bias
    expected = torch.stack([x0[r] * (w @ x[r] + b) + x[r] for r in range(5)])
    torch.testing.assert_close(layer(x0, x), expected, rtol=0, atol=1e-12)
    # the whole model: cross layers applied to x0 in turn, then the deep part
    ids_ = ids(5)
    h = x0 = model.embedding(ids_).flatten(1)
    for c in model.cross:
        h = x0 * (h @ c.linear.weight.T + c.linear.bias) + h
    torch.testing.assert_close(model(ids_), model.deep(h).squeeze(1))


def test_retrain_module_builds_a_reference_without_an_architecture(synth_schema: Schema) -> None:
    s = synth_schema
    module = AutoIASRetrain(s.field_names, s.vocab_sizes, s.hash, "ref:deepfm", baseline_dim=4,
                            baseline_hidden=8, baseline_layers=1)
    assert isinstance(module.model, DeepFM) and module.arch is None
    assert module.hparams.architecture_json is None
    with pytest.raises(ArchitectureError, match="unknown reference model"):
        AutoIASRetrain(s.field_names, s.vocab_sizes, s.hash, "ref:nope")
    with pytest.raises(ArchitectureError, match="init_from_search: ref:fm is a reference model"):
        AutoIASRetrain(s.field_names, s.vocab_sizes, s.hash, "ref:fm", init_from_search="search.ckpt")


def test_retrain_ref_deepfm_then_test_from_its_checkpoint(synth_dir: Path, tmp_path: Path) -> None:
    o = retrain_overrides(synth_dir, "ref:deepfm", epochs=1)
    autoias("fit", RETRAIN, *o, "--trainer.limit_train_batches=6", out=tmp_path, version="d")
    best = tmp_path / "d" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    autoias("test", RETRAIN, *o, f"--ckpt_path={best}", out=tmp_path, version="d")
    report = json.loads((tmp_path / "d" / TEST_METRICS_FILE).read_text())
    schema = Schema.load(synth_dir)
    n, t = len(schema.vocab_sizes), sum(schema.vocab_sizes)  # dim 8, hidden 32, 2 layers
    assert report["architecture"] == "ref:deepfm"
    assert report["params"] == t + 1 + t * 8 + (n * 8 * 32 + 32) + (32 * 32 + 32) + 32
    assert report["macs_per_sample"] > 0 and 0.5 < report["test/auc"] <= 1
    loaded = AutoIASRetrain.load_from_checkpoint(best, map_location="cpu")  # rebuilt from its hparams alone
    assert isinstance(loaded.model, DeepFM) and loaded.hparams.architecture_json is None


# ----- parity with DeepCTR-Torch (the `ref` extra: pip install -e '.[ref]'; skipped without it) -----
DEEPCTR = {"deepfm": {}, "fm": {"dnn_hidden_units": ()}, "lr": {"use_fm": False, "dnn_hidden_units": ()}}


@pytest.fixture
def deepctr():
    """deepctr_torch (0.3.0 declares torch, tqdm and scikit-learn; its import also needs requests, which it
    does not declare; no tensorflow: 0.2.x's callbacks imported it)."""
    return pytest.importorskip("deepctr_torch", reason="deepctr-torch not importable: pip install -e '.[ref]'")


def deepctr_model(deepctr, name: str, vocab: list[int], dim: int, hidden: int, layers: int) -> torch.nn.Module:
    """DeepCTR-Torch's DeepFM; its FM is DeepFM without the DNN, its LR DeepFM without FM and DNN."""
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM as TheirDeepFM

    cols = [SparseFeat(f"f{i}", v, embedding_dim=dim) for i, v in enumerate(vocab)]
    kwargs = {"dnn_hidden_units": (hidden,) * layers, **DEEPCTR[name]}
    deep_cols = [] if name == "lr" else cols  # else an unused embedding table
    return TheirDeepFM(cols, deep_cols, l2_reg_linear=0, l2_reg_embedding=0, init_std=0.01, seed=0, **kwargs)


def copy_from_deepctr(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Our one concatenated table per part <- their per-field tables; the DNN layer by layer."""
    names = list(theirs.linear_model.embedding_dict)
    with torch.no_grad():
        ours.linear.weights.table.weight.copy_(torch.cat([theirs.linear_model.embedding_dict[f].weight
                                                          for f in names]))
        ours.linear.bias.copy_(theirs.out.bias[0])
        if hasattr(ours, "embedding"):
            ours.embedding.table.weight.copy_(torch.cat([theirs.embedding_dict[f].weight for f in names]))
        if hasattr(ours, "deep"):
            mine = [m for m in ours.deep if isinstance(m, torch.nn.Linear)]
            for a, b in zip(mine[:-1], theirs.dnn.linears, strict=True):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
            mine[-1].weight.copy_(theirs.dnn_linear.weight)


@pytest.mark.parametrize("name", list(DEEPCTR))
def test_deepctr_forward_parity(deepctr, name: str) -> None:
    """Same parameter count; with DeepCTR's weights copied in, our logits are its logits."""
    theirs = deepctr_model(deepctr, name, VOCAB, K, H, L)
    ours = reference(f"ref:{name}", VOCAB, dim=K, hidden=H, layers=L)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    copy_from_deepctr(ours, theirs)
    x = ids(64)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(ours(x)), theirs(x.float()).squeeze(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(DEEPCTR))
def test_deepctr_training_parity(deepctr, name: str, synth_dir: Path) -> None:
    """Trained side by side (same data, batches, Adam, 2 epochs, no L2), both reach the same test AUC."""
    from autoias_pl.auc import auc
    from autoias_pl.data.stream import read_rows

    schema = Schema.load(synth_dir)
    train, test = read_rows(synth_dir, "train", schema.rows["train"]), read_rows(synth_dir, "test", schema.rows["test"])
    vocab, aucs = schema.vocab_sizes, {}
    for side in ("ours", "theirs"):
        torch.manual_seed(0)
        model = (reference(f"ref:{name}", vocab, dim=4, hidden=32, layers=2) if side == "ours"
                 else deepctr_model(deepctr, name, vocab, 4, 32, 2))
        prob = (lambda x, m=model: torch.sigmoid(m(x))) if side == "ours" else \
            (lambda x, m=model: m(x.float()).squeeze(1))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            for rows in torch.randperm(len(train.labels), generator=gen).split(512):
                loss = torch.nn.functional.binary_cross_entropy(prob(train.features[rows]).clamp(1e-7, 1 - 1e-7),
                                                                train.labels[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            aucs[side] = auc(prob(test.features).numpy(), test.labels.numpy())
    assert aucs["ours"] > 0.6 and abs(aucs["ours"] - aucs["theirs"]) < 0.02, aucs
