"""Calibration (autoias_pl/calibration.py) against references: sklearn's LogisticRegression (Platt) and
IsotonicRegression on the same logits, a plain loop for ECE; Platt keeps the AUC; state dicts restore it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from autoias_pl.auc import auc
from autoias_pl.calibration import Calibrator, ece, fit_platt, pav, reliability_bins, reliability_figure
from autoias_pl.metrics import CalibrationError


def overconfident(rows: int, seed: int, scale: float = 3.5, shift: float = -0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from sigmoid(t), logits scale * t + shift: a model whose logits are too large (as an
    AUC-selected one late in training), so Platt's slope should come out near 1 / scale."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, generator=gen, dtype=torch.float64) * 1.5
    y = (torch.rand(rows, generator=gen, dtype=torch.float64) < torch.sigmoid(t)).double()
    return (scale * t + shift).float(), y.float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_equals_sklearn_logistic_regression_on_the_logit(seed: int) -> None:
    z, y = overconfident(5000, seed)
    a, b = fit_platt(z, y)
    ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(z.double().numpy()[:, None], y.numpy())
    assert a == pytest.approx(float(ref.coef_[0, 0]), abs=1e-5) and b == pytest.approx(float(ref.intercept_[0]),
                                                                                        abs=1e-5)
    assert a == pytest.approx(1 / 3.5, abs=0.03)  # the planted overconfidence is found
    cal = Calibrator("platt").fit(z, y)
    np.testing.assert_allclose(cal(z.double()).numpy(), ref.predict_proba(z.double().numpy()[:, None])[:, 1],
                               rtol=0, atol=1e-6)


def test_platt_never_changes_the_auc_and_lowers_the_logloss() -> None:
    z, y = overconfident(4000, 3)
    cal = Calibrator("platt").fit(z, y)
    p = cal(z.double())
    assert float(cal.slope) > 0
    assert auc(p.numpy(), y.numpy()) == auc(z.double().numpy(), y.numpy())  # exact: a strictly increasing map
    raw = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    calibrated = torch.nn.functional.binary_cross_entropy_with_logits(cal.logit(z), y)
    assert float(calibrated) < float(raw) - 0.05


def test_platt_refuses_a_negative_slope_and_keeps_the_ranking() -> None:
    """Logits anti-correlated with the labels would want a < 0 (reversed ranking): kept a = 1, bias fitted,
    which is the logistic regression on the logit with its slope fixed at 1 (sklearn: the logit as offset)."""
    z, y = overconfident(3000, 4)
    a, b = fit_platt(-z, y)
    assert a == 1.0
    base = float(y.mean())
    # bias-only optimum: mean(sigmoid(-z + b)) == mean(y) (the score equation of the intercept)
    assert float(torch.sigmoid(-z.double() + b).mean()) == pytest.approx(base, abs=1e-6)
    cal = Calibrator("platt").fit(-z, y)
    assert auc(cal(-z.double()).numpy(), y.numpy()) == auc(-z.double().numpy(), y.numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_isotonic_equals_sklearn(seed: int) -> None:
    z, y = overconfident(3000, seed)
    z = torch.round(z * 20) / 20  # ties: pooled before PAV, as sklearn does
    cal = Calibrator("isotonic").fit(z, y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(z.double().numpy(), y.numpy())
    gen = torch.Generator().manual_seed(seed + 10)
    probe = torch.cat([z.double(), torch.randn(500, generator=gen, dtype=torch.float64) * 8])  # outside: clipped
    np.testing.assert_allclose(cal(probe).numpy(), ref.predict(probe.numpy()), rtol=0, atol=1e-9)


def test_pav_against_a_sequential_reference() -> None:
    rng = np.random.default_rng(0)
    values, weights = rng.normal(size=300).cumsum() * 0.1 + rng.normal(size=300), rng.integers(1, 5, 300) * 1.0

    def sequential(v: np.ndarray, w: np.ndarray) -> np.ndarray:
        blocks: list[list[float]] = []  # [mean, weight, count]
        for x, wx in zip(v, w, strict=True):
            blocks.append([x, wx, 1])
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                m2, w2, c2 = blocks.pop()
                m1, w1, c1 = blocks.pop()
                blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
        return np.concatenate([[m] * c for m, _, c in blocks])

    got = pav(values, weights)
    np.testing.assert_allclose(got, sequential(values, weights), rtol=0, atol=1e-12)
    assert (np.diff(got) >= 0).all()


def test_ece_against_a_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(2000, generator=gen, dtype=torch.float64) ** 2
    p[:3] = torch.tensor([0.0, 1.0, 14 / 15])  # the edges: 1.0 in the last bin, 14/15 opens it
    y = (torch.rand(2000, generator=gen, dtype=torch.float64) < p * 0.8).double()
    total = 0.0
    for b in range(15):
        members = [i for i in range(len(p)) if min(int(float(p[i]) * 15), 14) == b]
        if members:
            total += len(members) / len(p) * abs(sum(float(p[i]) for i in members) / len(members)
                                                 - sum(float(y[i]) for i in members) / len(members))
    assert ece(p, y) == pytest.approx(total, abs=1e-12)
    metric = CalibrationError()
    for chunk in range(0, 2000, 300):  # accumulated over batches == all at once
        metric.update(p[chunk : chunk + 300], y[chunk : chunk + 300])
    assert float(metric.compute()) == pytest.approx(total, abs=1e-6)
    assert reliability_bins(p, y)[0].sum() == 2000


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_state_dict_restores_the_calibrator(method: str) -> None:
    z, y = overconfident(2000, 5)
    fitted = Calibrator(method).fit(z, y)
    fresh = Calibrator(method)
    fresh.load_state_dict(fitted.state_dict())  # isotonic: knots of another count than the fresh module's
    probe = torch.linspace(-12, 12, 101)
    assert torch.equal(fresh(probe), fitted(probe)) and bool(fresh.fitted) == (method != "none")
    if method == "none":
        assert torch.equal(fresh(probe), torch.sigmoid(probe))


def test_one_class_leaves_it_unfitted_and_bad_method_is_refused() -> None:
    cal = Calibrator("platt").fit(torch.randn(50), torch.zeros(50))
    assert not bool(cal.fitted) and float(cal.slope) == 1.0
    with pytest.raises(ValueError, match="calibration must be one of"):
        Calibrator("beta")


def test_reliability_figure_has_one_curve_per_input() -> None:
    z, y = overconfident(1000, 6)
    fig = reliability_figure({"raw": reliability_bins(torch.sigmoid(z), y),
                              "platt": reliability_bins(Calibrator().fit(z, y)(z), y)})
    (ax,) = fig.axes
    assert len(ax.lines) == 3  # the diagonal and two curves
