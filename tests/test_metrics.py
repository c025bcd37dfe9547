"""AUC and logloss against references written here: a brute-force pairwise AUC (every positive/negative pair,
ties count half) and logloss straight from its formula in float64. Covers `ctr_metrics` (torchmetrics; it
picks checkpoints and the best architecture), `auc.batched_auc` / `auc.auc` (the search reward) and
`auc.BinnedAUC` (streaming)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoias_pl.auc import BinnedAUC, auc, batched_auc
from autoias_pl.metrics import ctr_metrics
from tests.helpers.auc import pairwise_auc


def log_loss(logits, labels) -> float:
    """-mean(y log p + (1 - y) log(1 - p)), p = sigmoid(logit), in float64."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = 1.0 / (1.0 + np.exp(-z))
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def tied_logits(n: int, seed: int, scale: float = 2.0, levels: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) float32 logits, many of them tied (rounded to 1/levels), and labels (n,) correlated with them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.round(scale * torch.randn(n, generator=g) * levels) / levels
    labels = (torch.rand(n, generator=g) < torch.sigmoid(logits)).float()
    return logits, labels


def test_pairwise_reference_itself() -> None:
    assert pairwise_auc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert pairwise_auc([0.4, 0.3, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert pairwise_auc([1, 1, 1], [0, 1, 1]) == 0.5
    assert pairwise_auc([0.1, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert log_loss([0.0], [1]) == pytest.approx(np.log(2))


# ----- ctr_metrics (torchmetrics) -----
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctr_metrics_match_references_over_several_updates(seed: int) -> None:
    metrics = ctr_metrics("val/")
    batches = [tied_logits(n, seed * 10 + b) for b, n in enumerate((300, 1, 257, 64))]
    for logits, labels in batches:
        metrics.update(logits, labels)
    out = metrics.compute()
    assert set(out) == {"val/auc", "val/logloss"}
    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert len(torch.unique(logits)) < logits.numel() // 4  # ties are really there
    assert float(out["val/auc"]) == pytest.approx(pairwise_auc(logits, labels), abs=1e-6)
    assert float(out["val/logloss"]) == pytest.approx(log_loss(logits, labels), rel=1e-6)
    metrics.reset()  # a fresh accumulation after reset
    metrics.update(*batches[0])
    assert float(metrics.compute()["val/auc"]) == pytest.approx(pairwise_auc(*batches[0]), abs=1e-6)


def test_ctr_metrics_on_continuous_logits_and_int_labels() -> None:
    g = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(2000, generator=g)
    labels = (torch.rand(2000, generator=g) < 0.2).long()  # int labels, rare positives
    metrics = ctr_metrics("")
    for chunk in range(4):
        metrics.update(logits[chunk * 500:(chunk + 1) * 500], labels[chunk * 500:(chunk + 1) * 500])
    out = metrics.compute()
    assert float(out["auc"]) == pytest.approx(pairwise_auc(logits, labels), abs=1e-6)
    assert float(out["logloss"]) == pytest.approx(log_loss(logits, labels), rel=1e-6)


def test_ctr_metrics_auc_is_rank_exact_for_confident_logits() -> None:
    logits = torch.tensor([17.0, 18.0, 19.0, 20.0, -1.0, 0.0])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    metrics = ctr_metrics("")
    metrics.update(logits, labels)
    assert float(metrics.compute()["auc"]) == pytest.approx(pairwise_auc(logits, labels), abs=1e-6)


# ----- auc.batched_auc / auc.auc (one rank-sum implementation) -----
def test_batched_auc_matches_pairwise_reference_per_row() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.cat([torch.randint(0, 5, (3, 300), generator=g).float(),  # many ties
                        torch.randn(2, 300, generator=g, dtype=torch.float64)])  # no ties
    labels = (torch.rand(300, generator=g) < 0.3).float()
    got = batched_auc(scores, labels)
    assert got.shape == (5,) and got.dtype == torch.float64
    for m in range(5):
        assert got[m].item() == pytest.approx(pairwise_auc(scores[m], labels), abs=1e-12)
        assert auc(scores[m].numpy(), labels.numpy()) == pytest.approx(pairwise_auc(scores[m], labels), abs=1e-12)
    assert torch.isnan(batched_auc(scores, torch.zeros(300))).all()
    with pytest.raises(ValueError, match="both classes"):
        auc(scores[0].numpy(), np.ones(300))


# ----- auc.BinnedAUC: exact on bin indices, within ~1/bins of the exact AUC -----
@pytest.mark.parametrize("bins", [16, 1024, 1 << 18])
def test_binned_auc_is_the_pairwise_auc_of_its_bins(bins: int) -> None:
    rng = np.random.default_rng(bins)
    probs = np.concatenate([rng.random(1500), [0.0, 1.0, 1.0]])  # 1.0 falls into the last bin
    labels = rng.random(probs.size) < probs
    binned = BinnedAUC(bins)
    for chunk in np.array_split(np.arange(probs.size), 5):  # several update() calls
        binned.update(probs[chunk], labels[chunk])
    got = binned.compute()
    idx = np.minimum((probs * bins).astype(np.int64), bins - 1)
    assert got == pytest.approx(pairwise_auc(idx, labels), abs=1e-12)  # same-bin scores are ties
    assert abs(got - pairwise_auc(probs, labels)) <= 1.0 / bins
