"""Synthetic CTR data with planted pairwise interactions, written in the same layout as `prepare`.

The click probability is sigmoid(bias + first-order effects + K planted pair effects). Each planted effect is
FM-style and low rank, u_ij[a, b] = <p_i[a], q_j[b]> (rank <= 4), double-centred under the value
distributions so it carries no first-order part: only a model that crosses fields i and j can learn it.
Field values follow Zipf-like distributions over vocabularies of varied sizes (id 0 = OOV, rare).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoias_pl.auc import BinnedAUC
from autoias_pl.data.schema import SPLITS, FieldSpec, Schema
from autoias_pl.data.shards import DEFAULT_ROW_GROUP_SIZE, DEFAULT_ROWS_PER_SHARD, ShardWriter
from autoias_pl.errors import ConfigError
from autoias_pl.io import atomic_output_dir

CHUNK_ROWS = 1 << 17  # rows generated at once: bounds memory, and fixes the random stream for a seed
VOCAB_RANGE = (10, 3000)  # vocabulary sizes are log-uniform in this range
OOV_MASS = 0.002  # probability of id 0 in every field
FIRST_ORDER_STD = 1.0  # std of the summed first-order logit under the value distributions
PAIR_STD = 0.5  # std of each planted pair's logit under the value distributions
POSITIVE_RATE = 0.2  # the bias is solved so that the mean click probability is this
CALIBRATION_ROWS = 200_000


@dataclass
class SynthModel:
    """The true click model. Tables are indexed by id; factors of planted pairs are already centred."""

    vocab_sizes: list[int]
    value_probs: list[np.ndarray]  # per field (V_j,), sums to 1
    first_order: list[np.ndarray]  # per field (V_j,), weighted mean 0
    pairs: list[tuple[int, int]]  # planted (i, j), i < j, in field order
    p_factors: list[np.ndarray]  # per pair (V_i, rank), weighted column means 0
    q_factors: list[np.ndarray]  # per pair (V_j, rank), weighted column means 0
    bias: float

    @property
    def field_names(self) -> list[str]:
        return [f"C{j + 1}" for j in range(len(self.vocab_sizes))]

    def pair_table(self, k: int) -> np.ndarray:
        """Full effect table of planted pair k: (V_i, V_j). Small vocabularies only (tests, plots)."""
        return self.p_factors[k] @ self.q_factors[k].T

    def first_order_logit(self, features: np.ndarray) -> np.ndarray:
        """features: (R, n) ids -> (R,) bias + first-order logit."""
        out = np.full(len(features), self.bias)  # (R,)
        for j, table in enumerate(self.first_order):
            out += table[features[:, j]]
        return out

    def pair_logit(self, features: np.ndarray) -> np.ndarray:
        """features: (R, n) ids -> (R,) sum of the planted pair effects."""
        out = np.zeros(len(features))  # (R,)
        for (i, j), p, q in zip(self.pairs, self.p_factors, self.q_factors, strict=True):
            out += np.einsum("rk,rk->r", p[features[:, i]], q[features[:, j]])  # (R, rank) . (R, rank)
        return out

    def probability(self, features: np.ndarray) -> np.ndarray:
        """features: (R, n) ids -> (R,) true click probability."""
        return _sigmoid(self.first_order_logit(features) + self.pair_logit(features))

    def sample_features(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """(rows, n) int32 ids, fields independent, each from its value distribution."""
        out = np.empty((rows, len(self.vocab_sizes)), dtype=np.int32)
        for j, probs in enumerate(self.value_probs):
            cdf = np.cumsum(probs)
            out[:, j] = np.minimum(np.searchsorted(cdf, rng.random(rows), side="right"), len(probs) - 1)
        return out

    @classmethod
    def from_schema(cls, schema: Schema) -> SynthModel:
        """Rebuild the true model of a dataset written by `synthesize` (it is a function of its arguments)."""
        meta = schema.extra.get("synthetic")
        if schema.format != "synthetic" or meta is None:
            raise ValueError(f"schema format {schema.format!r} is not a synthetic dataset")
        vocab_range = tuple(meta.get("vocab_range", VOCAB_RANGE))
        model = build_model(schema.num_fields, len(meta["planted_pairs"]), meta["rank"], schema.seed, vocab_range)
        names = model.field_names
        if [[names[i], names[j]] for i, j in model.pairs] != meta["planted_pairs"]:
            raise ValueError("schema's planted pairs do not match the rebuilt model (generator changed?)")
        return model


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_probs(rng: np.random.Generator, vocab: int) -> np.ndarray:
    exponent = rng.uniform(0.8, 1.3)
    weights = 1.0 / np.arange(1, vocab, dtype=np.float64) ** exponent  # ids 1..V-1, id 1 most frequent
    return np.r_[OOV_MASS, (1.0 - OOV_MASS) * weights / weights.sum()]  # (V,)


def _centred_factor(rng: np.random.Generator, probs: np.ndarray, rank: int) -> np.ndarray:
    f = rng.standard_normal((len(probs), rank))  # (V, rank)
    return f - probs @ f  # weighted column means 0


def build_model(
    fields: int, planted_pairs: int, rank: int, seed: int, vocab_range: tuple[int, int] = VOCAB_RANGE
) -> SynthModel:
    """The deterministic true model of `synthesize(..., fields, planted_pairs, seed, rank, vocab_range)`."""
    if fields < 2:
        raise ConfigError(f"fields must be >= 2, got {fields}")
    all_pairs = np.stack(np.triu_indices(fields, k=1), axis=1)  # (P, 2), i < j
    if not 0 <= planted_pairs <= len(all_pairs):
        raise ConfigError(f"planted_pairs must be in [0, {len(all_pairs)}], got {planted_pairs}")
    if not 1 <= rank <= 4:
        raise ConfigError(f"rank must be in [1, 4], got {rank}")
    if not 3 <= vocab_range[0] <= vocab_range[1]:
        raise ConfigError(f"vocab_range must be (lo, hi) with 3 <= lo <= hi, got {vocab_range}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    lo, hi = np.log(vocab_range[0]), np.log(vocab_range[1])
    vocab_sizes = [int(v) for v in np.exp(rng.uniform(lo, hi, size=fields)).round()]
    value_probs = [_zipf_probs(rng, v) for v in vocab_sizes]
    first_order = []
    for probs in value_probs:
        w = rng.standard_normal(len(probs))
        w -= probs @ w
        first_order.append(w * (FIRST_ORDER_STD / np.sqrt(fields)) / np.sqrt(probs @ w**2))
    chosen = np.sort(rng.choice(len(all_pairs), size=planted_pairs, replace=False))
    pairs = [(int(all_pairs[c, 0]), int(all_pairs[c, 1])) for c in chosen]
    p_factors, q_factors = [], []
    for i, j in pairs:
        p = _centred_factor(rng, value_probs[i], rank)
        q = _centred_factor(rng, value_probs[j], rank)
        # E[<p[a], q[b]>^2] for independent a ~ probs_i, b ~ probs_j
        var = float(np.sum((p.T * value_probs[i]) @ p * ((q.T * value_probs[j]) @ q)))
        scale = np.sqrt(PAIR_STD / np.sqrt(var))
        p_factors.append(p * scale)
        q_factors.append(q * scale)
    model = SynthModel(vocab_sizes, value_probs, first_order, pairs, p_factors, q_factors, bias=0.0)
    model.bias = _solve_bias(model, np.random.default_rng(np.random.SeedSequence([seed, 1])))
    return model


def _solve_bias(model: SynthModel, rng: np.random.Generator) -> float:
    """Bias giving a mean click probability of POSITIVE_RATE on a calibration sample (bisection)."""
    x = model.sample_features(rng, CALIBRATION_ROWS)
    logit = model.first_order_logit(x) + model.pair_logit(x)  # (R,) with bias 0
    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < POSITIVE_RATE else (lo, mid)
    return (lo + hi) / 2


def _split_rows(rows: int, split: tuple[float, float, float]) -> dict[str, int]:
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"split must be 3 non-negative fractions summing to 1, got {split}")
    train, val = int(rows * split[0]), int(rows * split[1])
    return {"train": train, "val": val, "test": rows - train - val}


def synthesize(
    output: str | Path,
    rows: int,
    fields: int,
    planted_pairs: int = 3,
    seed: int = 0,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    overwrite: bool = False,
    rank: int = 4,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    vocab_range: tuple[int, int] = VOCAB_RANGE,
) -> Schema:
    """Write a synthetic dataset to `output` (train/val/test shards + schema.json) and return its schema.

    Generated in chunks of CHUNK_ROWS rows (memory does not grow with `rows`); identical for the same
    arguments except the shard layout, which does not change the rows. schema.extra["synthetic"] records
    the planted pairs and the test-split AUC of the true probabilities (Bayes ceiling) and of the
    first-order part alone.
    """
    if rows < 1:
        raise ConfigError(f"rows must be positive, got {rows}")
    counts = _split_rows(rows, split)
    vocab_range = (int(vocab_range[0]), int(vocab_range[1]))
    model = build_model(fields, planted_pairs, rank, seed, vocab_range)
    names = model.field_names
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    bayes, first, positives = BinnedAUC(), BinnedAUC(), {s: 0 for s in SPLITS}
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        for split_name in SPLITS:
            writer = ShardWriter(tmp, split_name, names, rows_per_shard, row_group_size)
            left = counts[split_name]
            while left > 0:
                n = min(CHUNK_ROWS, left)
                x = model.sample_features(rng, n)  # (n_rows, n_fields) int32
                first_logit = model.first_order_logit(x)  # (n_rows,)
                prob = _sigmoid(first_logit + model.pair_logit(x))  # (n_rows,)
                y = (rng.random(n) < prob).astype(np.int8)  # (n_rows,)
                writer.write(x, y)
                positives[split_name] += int(y.sum())
                if split_name == "test":
                    bayes.update(prob, y)
                    first.update(_sigmoid(first_logit), y)
                left -= n
            writer.close()
        has_both = 0 < positives["test"] < counts["test"]
        schema = Schema(
            format="synthetic",
            fields=[FieldSpec(name, v) for name, v in zip(names, model.vocab_sizes, strict=True)],
            rows=counts,
            seed=seed,
            split=list(split),
            extra={
                "synthetic": {
                    "planted_pairs": [[names[i], names[j]] for i, j in model.pairs],
                    "rank": rank,
                    "vocab_range": list(vocab_range),
                    "bias": model.bias,
                    "bayes_auc_test": bayes.compute() if has_both else None,
                    "first_order_auc_test": first.compute() if has_both else None,
                    "positive_rate": sum(positives.values()) / rows,
                    "positive_rate_by_split": {s: positives[s] / max(counts[s], 1) for s in SPLITS},
                }
            },
        )
        schema.save(tmp)
    return schema
