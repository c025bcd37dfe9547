"""Synthetic data: planted pairs, positive rate, determinism, layout, and the AUC signal the pairs carry."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoias_pl.auc import BinnedAUC, auc
from autoias_pl.data.schema import LABEL, SPLITS, Schema
from autoias_pl.data.synth import SynthModel, build_model, synthesize


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All rows of a split in shard order: features (R, n), labels (R,)."""
    tables = [pq.read_table(p) for p in sorted((directory / split).glob("*.parquet"))]
    names = Schema.load(directory).field_names
    x = np.concatenate([np.column_stack([t[n].to_numpy() for n in names]) for t in tables])
    y = np.concatenate([t[LABEL].to_numpy() for t in tables])
    return x, y


def test_planted_pairs_are_distinct_field_pairs_in_field_order(synth_schema: Schema) -> None:
    meta = synth_schema.extra["synthetic"]
    names = synth_schema.field_names
    pairs = [tuple(p) for p in meta["planted_pairs"]]
    assert len(pairs) == 3 and len(set(pairs)) == 3
    assert all(names.index(a) < names.index(b) for a, b in pairs)
    assert meta["rank"] == 4 and synth_schema.format == "synthetic"
    assert names == [f"C{j}" for j in range(1, 11)]


def test_positive_rate_is_realistic(synth_dir: Path, synth_schema: Schema) -> None:
    labels = np.concatenate([read_split(synth_dir, s)[1] for s in SPLITS])
    assert 0.15 <= labels.mean() <= 0.25
    assert synth_schema.extra["synthetic"]["positive_rate"] == pytest.approx(labels.mean())


def test_schema_rows_match_shards_and_ids_fit_vocabularies(synth_dir: Path, synth_schema: Schema) -> None:
    assert sum(synth_schema.rows.values()) == 20_000
    assert synth_schema.rows == {"train": 16_000, "val": 2_000, "test": 2_000}
    for split in SPLITS:
        x, _ = read_split(synth_dir, split)
        on_disk = sum(pq.ParquetFile(p).metadata.num_rows for p in (synth_dir / split).glob("*.parquet"))
        assert on_disk == len(x) == synth_schema.rows[split]
        assert (x >= 0).all() and (x < np.array(synth_schema.vocab_sizes)).all()
    sizes = synth_schema.vocab_sizes
    assert min(sizes) >= 10 and max(sizes) > 5 * min(sizes)  # varied vocabularies


def test_same_seed_same_rows_different_seed_different_rows(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", 3000, 5, seed=7, rows_per_shard=1000, row_group_size=256)
    b = synthesize(tmp_path / "b", 3000, 5, seed=7, rows_per_shard=4096, row_group_size=4096)  # other layout
    c = synthesize(tmp_path / "c", 3000, 5, seed=8)
    assert a.to_dict() == b.to_dict()
    for split in SPLITS:
        xa, ya = read_split(tmp_path / "a", split)
        xb, yb = read_split(tmp_path / "b", split)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    xa, _ = read_split(tmp_path / "a", "train")
    xc, _ = read_split(tmp_path / "c", "train")
    assert c.extra != a.extra and (xc.shape != xa.shape or not np.array_equal(xc, xa))


def test_existing_output_is_not_overwritten_without_flag(tmp_path: Path) -> None:
    synthesize(tmp_path / "d", 500, 3)
    with pytest.raises(FileExistsError, match="already exists"):
        synthesize(tmp_path / "d", 500, 3)
    synthesize(tmp_path / "d", 600, 3, overwrite=True)
    assert sum(Schema.load(tmp_path / "d").rows.values()) == 600


def test_planted_pairs_carry_clear_auc_signal(synth_factory) -> None:
    meta = Schema.load(synth_factory(rows=200_000, fields=10, seed=3)).extra["synthetic"]
    assert meta["bayes_auc_test"] - meta["first_order_auc_test"] > 0.04
    assert 0.6 < meta["first_order_auc_test"] < meta["bayes_auc_test"] < 0.9


def test_recorded_auc_matches_the_true_model_on_test_rows(synth_dir: Path, synth_schema: Schema) -> None:
    model = SynthModel.from_schema(synth_schema)
    x, y = read_split(synth_dir, "test")
    meta = synth_schema.extra["synthetic"]
    assert auc(model.probability(x), y) == pytest.approx(meta["bayes_auc_test"], abs=1e-4)
    fo = 1 / (1 + np.exp(-model.first_order_logit(x)))
    assert auc(fo, y) == pytest.approx(meta["first_order_auc_test"], abs=1e-4)
    assert model.bias == pytest.approx(meta["bias"])


def test_planted_effects_are_double_centred_low_rank_and_sized() -> None:
    model = build_model(fields=6, planted_pairs=4, rank=3, seed=1)
    assert len(set(model.pairs)) == 4 and all(i < j for i, j in model.pairs)
    for k, (i, j) in enumerate(model.pairs):
        table = model.pair_table(k)  # (V_i, V_j)
        wi, wj = model.value_probs[i], model.value_probs[j]
        scale = np.abs(table).max()
        np.testing.assert_allclose(table @ wj, 0, atol=1e-9 * scale)  # weighted row means
        np.testing.assert_allclose(wi @ table, 0, atol=1e-9 * scale)  # weighted column means
        probe = np.random.default_rng(k).standard_normal((table.shape[1], 8))
        assert np.linalg.matrix_rank(table @ probe) <= 3  # = rank(table) almost surely, as 3 < 8
        std = np.sqrt(wi @ table**2 @ wj)
        per_field_first_order = max(
            np.sqrt(p @ t**2) for p, t in zip(model.value_probs, model.first_order, strict=True)
        )
        assert std >= per_field_first_order  # each pair matters at least as much as any one field
    for probs, table in zip(model.value_probs, model.first_order, strict=True):
        assert abs(probs @ table) < 1e-9


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="planted_pairs"):
        build_model(fields=3, planted_pairs=4, rank=2, seed=0)
    with pytest.raises(ValueError, match="rank"):
        build_model(fields=3, planted_pairs=1, rank=5, seed=0)
    with pytest.raises(ValueError, match="split"):
        synthesize("/nonexistent/never", 10, 3, split=(0.5, 0.5, 0.5))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=300).astype(float)  # many ties
    labels = rng.random(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    with pytest.raises(ValueError, match="both classes"):
        auc(scores, np.zeros(300))


def test_binned_auc_streams_to_the_exact_value() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random(20_000)
    labels = rng.random(20_000) < probs
    binned = BinnedAUC()
    for chunk in range(0, 20_000, 3000):
        binned.update(probs[chunk : chunk + 3000], labels[chunk : chunk + 3000])
    assert binned.compute() == pytest.approx(auc(probs, labels), abs=1e-4)


def test_all_pairs_reachable() -> None:
    seen = {p for s in range(20) for p in build_model(fields=3, planted_pairs=1, rank=1, seed=s).pairs}
    assert seen == set(combinations(range(3), 2))


def test_vocab_range_is_honoured_and_recorded(tmp_path: Path) -> None:
    schema = synthesize(tmp_path / "s", 2000, 6, planted_pairs=2, seed=3, vocab_range=(10, 30))
    assert all(10 <= v <= 30 for v in schema.vocab_sizes)
    assert schema.extra["synthetic"]["vocab_range"] == [10, 30]
    model = SynthModel.from_schema(schema)  # rebuilds the same model from the recorded range
    assert model.vocab_sizes == schema.vocab_sizes
