"""Post-hoc calibration of click logits: a map logit -> probability fitted on the validation split.

A model selected on ranking (val AUC) trains past the epoch of its best logloss and grows overconfident:
its logits are too large by a near-constant factor. A monotone map fitted on held-out rows restores the
probabilities without touching the ranking:

- "platt" (the default): p = sigmoid(a * z + b), slope a and bias b fitted by Newton's method in float64 on
  the mean BCE (the unregularised logistic regression of the label on the logit, as sklearn's
  `LogisticRegression` with a large C). The slope is kept positive so the ranking (AUC) never changes: a
  fit that wants a <= 0 (logits no better than chance on the rows) keeps a = 1 and fits the bias alone.
- "isotonic": the non-decreasing step map of the pool-adjacent-violators algorithm over the sorted logits,
  interpolated linearly between its knots and clipped outside them (sklearn's `IsotonicRegression` with
  out_of_bounds="clip"). It may tie rows (and so move AUC slightly); more flexible, needs more rows.
- "none": p = sigmoid(z).

`Calibrator` is an `nn.Module` whose fitted values are buffers (slope, bias, knots), so a checkpoint's state
dict restores it and `torch.export` / ONNX carry it. `ece` and `reliability_bins` measure calibration
(expected calibration error over equal-width bins). Core module: no Lightning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

METHODS = ("platt", "isotonic", "none")
ECE_BINS = 15
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] where a logit is taken of them


def fit_platt(logits: Tensor, labels: Tensor, steps: int = 50, tol: float = 1e-12) -> tuple[float, float]:
    """(slope a, bias b) minimising mean BCE(a z + b, y) over logits z (R,) and 0/1 labels y (R,), float64.

    Newton's method with step halving (the loss is convex in (a, b)); a fit with a <= 0 is replaced by
    a = 1 and the bias alone (ranking kept: see the module docstring)."""
    z, y = logits.detach().double().flatten(), labels.detach().double().flatten()
    a, b = _newton(z, y, fit_slope=True, steps=steps, tol=tol)
    if not a > 0:
        a, b = _newton(z, y, fit_slope=False, steps=steps, tol=tol)
    return a, b


def _bce(z: Tensor, y: Tensor, a: float, b: float) -> float:
    return float(nn.functional.binary_cross_entropy_with_logits(a * z + b, y))


def _newton(z: Tensor, y: Tensor, fit_slope: bool, steps: int, tol: float) -> tuple[float, float]:
    """Newton on (a, b) (or b alone with a = 1) for mean BCE(a z + b, y); z, y (R,) float64."""
    a, b = 1.0, 0.0
    x = torch.stack([z, torch.ones_like(z)], 1) if fit_slope else torch.ones_like(z)[:, None]  # (R, k)
    loss = _bce(z, y, a, b)
    for _ in range(steps):
        p = torch.sigmoid(a * z + b)  # (R,)
        grad = x.T @ (p - y) / len(z)  # (k,)
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(z) + 1e-12 * torch.eye(x.shape[1], dtype=x.dtype)
        step = torch.linalg.solve(hess, grad)  # (k,)
        da, db = (float(step[0]), float(step[1])) if fit_slope else (0.0, float(step[0]))
        t = 1.0
        while t > 1e-6:  # halve until the loss does not rise (Newton overshoots far from the optimum)
            new = _bce(z, y, a - t * da, b - t * db)
            if new <= loss:
                break
            t /= 2
        a, b, done = a - t * da, b - t * db, loss - new < tol
        loss = min(loss, new)
        if done:
            break
    return a, b


def pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) least-squares fit of `values` (K,) in their order -> (K,).

    Pool adjacent violators, all violating neighbours of a pass at once (pooling adjacent violators in any
    order reaches the same solution): each pass is vectorised; passes repeat until no block decreases."""
    v, w = values.astype(np.float64), weights.astype(np.float64)
    starts = np.arange(len(v))  # first index of each block
    while len(v) > 1:
        keep = np.concatenate([[True], v[1:] >= v[:-1]])  # a block starts a new pool unless it violates
        if keep.all():
            break
        group = np.flatnonzero(keep)  # (G,) first old block of each new pool
        sw = np.add.reduceat(w, group)
        v, w, starts = np.add.reduceat(v * w, group) / sw, sw, starts[group]
    counts = np.diff(np.append(starts, len(values)))  # (G,)
    return np.repeat(v, counts)


def fit_isotonic(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Knots (x (K,), p (K,)), float64: the isotonic fit of labels on logits at the distinct logits (ties pooled
    first, as sklearn's IsotonicRegression), with the knots inside constant runs dropped (same interpolation)."""
    z = logits.detach().double().flatten().cpu().numpy()
    y = labels.detach().double().flatten().cpu().numpy()
    x, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)  # sorted distinct logits
    means = np.bincount(inverse, weights=y) / counts  # (K,)
    p = pav(means, counts.astype(np.float64))
    keep = np.ones(len(p), dtype=bool)  # drop interior knots of a flat run: p[i-1] == p[i] == p[i+1]
    keep[1:-1] = (p[1:-1] != p[:-2]) | (p[1:-1] != p[2:])
    return torch.from_numpy(x[keep]), torch.from_numpy(p[keep])


class Calibrator(nn.Module):
    """logits (B,) -> calibrated click probabilities (B,) by `method` (METHODS); unfitted: sigmoid.

    Buffers (in the state dict): `slope`, `bias` (Platt; 1 and 0 until fitted), `knots_x`, `knots_p` (isotonic
    knots, float64, empty until fitted; a state dict of another size resizes them on load) and `fitted`."""

    def __init__(self, method: str = "platt") -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}, got {method!r}")
        self.method = method
        self.register_buffer("slope", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("bias", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("knots_x", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("knots_p", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, logits: Tensor, labels: Tensor) -> Calibrator:
        """Fit on logits (R,) and 0/1 labels (R,) (the validation split's); needs both classes."""
        positives = int((labels > 0.5).sum())
        if positives in (0, labels.numel()):
            return self  # nothing to learn from one class: stays as it is
        if self.method == "platt":
            a, b = fit_platt(logits, labels)
            self.slope.fill_(a), self.bias.fill_(b)
        elif self.method == "isotonic":
            x, p = fit_isotonic(logits, labels)
            self.knots_x, self.knots_p = x.to(self.knots_x.device), p.to(self.knots_p.device)
        self.fitted.fill_(self.method != "none")
        return self

    def forward(self, logits: Tensor) -> Tensor:
        """logits (B,) -> probabilities (B,) in the logits' float dtype."""
        if self.method == "platt":
            return torch.sigmoid(self.slope.to(logits.dtype) * logits + self.bias.to(logits.dtype))
        if self.method == "isotonic" and self.knots_x.numel():
            return self._interpolate(logits)
        return torch.sigmoid(logits)

    def _interpolate(self, logits: Tensor) -> Tensor:
        """np.interp(z, knots_x, knots_p) (clipped outside) in float64, as comparisons: no searchsorted, so
        ONNX exports it."""
        x, p, z = self.knots_x, self.knots_p, logits.double()  # (K,), (K,), (B,)
        if x.numel() == 1:
            return p.to(logits.dtype).expand(logits.shape)
        i = (z[:, None] >= x[None, :]).sum(1).clamp(1, x.numel() - 1)  # (B,) right knot, in 1..K-1
        x0, x1, p0, p1 = x[i - 1], x[i], p[i - 1], p[i]
        t = ((z - x0) / (x1 - x0)).clamp(0, 1)  # (B,)
        return (p0 + t * (p1 - p0)).to(logits.dtype)

    def logit(self, logits: Tensor) -> Tensor:
        """The calibrated logits (B,) (for logloss from logits): a z + b for Platt, else logit(clip(p))."""
        if self.method == "platt":
            return self.slope.to(logits.dtype) * logits + self.bias.to(logits.dtype)
        return torch.logit(self(logits).clamp(EPS, 1 - EPS))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("knots_x", "knots_p"):  # the fitted knots' count is the checkpoint's
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        if self.method == "platt":
            return f"platt: slope={float(self.slope):.4f}, bias={float(self.bias):.4f}"
        return f"{self.method}: {self.knots_x.numel()} knots" if self.method == "isotonic" else "none"


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> Tensor:
    """(3, bins) float64: per equal-width bin of probs (R,) on [0, 1] the count, sum of probs and of labels."""
    p, y = probs.detach().double().flatten(), labels.detach().double().flatten()
    idx = (p * bins).long().clamp(0, bins - 1)  # (R,) p == 1 goes to the last bin
    out = torch.zeros(3, bins, dtype=torch.float64, device=p.device)
    out[0].index_add_(0, idx, torch.ones_like(p))
    out[1].index_add_(0, idx, p)
    out[2].index_add_(0, idx, y)
    return out


def ece_from_bins(stats: Tensor) -> float:
    """Expected calibration error of `reliability_bins` output: sum_b n_b / N * |mean p_b - mean y_b|."""
    count, sp, sy = stats.double()
    return float((sp - sy).abs().sum() / count.sum().clamp_min(1))


def ece(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error of probs (R,) against 0/1 labels (R,) over `bins` equal-width bins."""
    return ece_from_bins(reliability_bins(probs, labels, bins))


def reliability_figure(curves: dict[str, Tensor], title: str = "reliability") -> Any:
    """A matplotlib Figure (no pyplot): per named `reliability_bins` output, the mean label against the mean
    predicted probability of each non-empty bin, and the diagonal of perfect calibration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, stats in curves.items():
        count, sp, sy = stats.double().cpu()
        nz = count > 0
        ax.plot((sp[nz] / count[nz]).numpy(), (sy[nz] / count[nz]).numpy(), marker="o", markersize=3,
                label=f"{name} (ECE {ece_from_bins(stats):.4f})")
    ax.set(xlabel="mean predicted probability", ylabel="observed click rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
