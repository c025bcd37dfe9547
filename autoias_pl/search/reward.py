"""The losses and reward shaping of the AutoIAS search (paper 3.3.2, 3.4), free of Lightning.

- `kd_student_loss`: eq. 14-16, beta * BCE(teacher prob, student) + (1 - beta) * BCE(y, student).
- `RewardShaper`: reward -> advantage. "ema" is the paper's baseline (eq. 22-23); "leave_one_out" uses the
  mean reward of the step's other M - 1 architectures; optional scaling by a running std. Its state lives in
  buffers, so it travels in checkpoints and is identical across DDP ranks that see identical rewards.
- `selection_cost`: the fraction of candidate vectors an architecture selects (the optional cost term);
  `budget_excess`: the relative excess over a parameter or MACs budget (the optional size budget).
- `reinforce_loss`: eq. 20 with an optional entropy bonus.
- `phase_generator`: the torch.Generator of one (seed, batch, phase), so every DDP rank draws the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoias_pl.space import Architecture

BaselineKind = Literal["ema", "leave_one_out"]


def phase_generator(seed: int, batch: int, phase: str) -> torch.Generator:
    """CPU generator seeded from (seed, batch counter, phase): same draws on every rank and on resume."""
    key = hashlib.sha256(f"autoias/{seed}/{batch}/{phase}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


def kd_student_loss(
    logits: Tensor, teacher_prob: Tensor, labels: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One student's (loss, soft, hard). logits, teacher_prob, labels: (B,)."""
    soft = F.binary_cross_entropy_with_logits(logits, teacher_prob)
    hard = F.binary_cross_entropy_with_logits(logits, labels)
    return beta * soft + (1.0 - beta) * hard, soft, hard


def budget_excess(archs: Sequence[Architecture], vocab_sizes: Sequence[int], max_params: int | None,
                  max_macs: int | None) -> Tensor:
    """Relative excess over the size budgets, summed: (M,) float64, 0 for an architecture within them.

    max(0, params / max_params - 1) + max(0, MACs / max_macs - 1); a budget of None does not count."""
    out = torch.zeros(len(archs), dtype=torch.float64)
    for k, a in enumerate(archs):
        if max_params:
            out[k] += max(0.0, a.num_params(vocab_sizes) / max_params - 1.0)
        if max_macs:
            out[k] += max(0.0, a.num_macs() / max_macs - 1.0)
    return out


def selection_cost(archs: Sequence[Architecture]) -> Tensor:
    """Fraction of the n + P candidate vectors each architecture selects: (M,) float64 in [0, 1]."""
    return torch.tensor([sum(a.selected) / len(a.selected) for a in archs], dtype=torch.float64)


class RewardShaper(nn.Module):
    """Rewards (M,) of one generator step -> advantages (M,), with the baseline and scaler state as buffers.

    ema: A_i = R_i - tau_bar, then tau_bar <- alpha * tau_bar + (1 - alpha) * R_i for each i in order (eq. 23;
    tau_bar starts at the first step's mean reward, so the first step has zero-mean advantages).
    leave_one_out: A_i = R_i - mean_{j != i} R_j (needs M >= 2); tau_bar is still tracked for logging.
    scaling: A /= sqrt(EMA of A^2) (decay `scale_decay`, bias-corrected), so the step size of the generator
    does not shrink as the supernet's AUC differences shrink.
    """

    def __init__(
        self, baseline: BaselineKind = "ema", alpha_tau: float = 0.9, scaling: bool = False, scale_decay: float = 0.99
    ) -> None:
        super().__init__()
        if baseline not in ("ema", "leave_one_out"):
            raise ValueError(f"baseline must be 'ema' or 'leave_one_out', got {baseline!r}")
        if not 0.0 <= alpha_tau < 1.0 or not 0.0 < scale_decay < 1.0:
            raise ValueError(f"alpha_tau must be in [0, 1) and scale_decay in (0, 1), got {alpha_tau}, {scale_decay}")
        self.kind, self.alpha, self.scaling, self.decay = baseline, alpha_tau, scaling, scale_decay
        self.register_buffer("tau_bar", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("sq_ema", torch.zeros((), dtype=torch.float64))

    @property
    def baseline(self) -> float:
        return float(self.tau_bar)

    def forward(self, rewards: Tensor) -> Tensor:
        """rewards (M,) float64 -> advantages (M,) float64; updates the buffers."""
        r = rewards.detach().double().to(self.tau_bar.device)  # (M,)
        if self.steps == 0:
            self.tau_bar.fill_(float(r.mean()))
        if self.kind == "ema":
            adv = r - self.tau_bar  # (M,)
        else:
            m = r.numel()
            if m < 2:
                raise ValueError("baseline='leave_one_out' needs num_reward_archs >= 2")
            adv = r - (r.sum() - r) / (m - 1)  # (M,)
        for value in r.tolist():
            self.tau_bar.mul_(self.alpha).add_((1.0 - self.alpha) * value)
        self.steps += 1
        if self.scaling:
            self.sq_ema.mul_(self.decay).add_((1.0 - self.decay) * adv.pow(2).mean())
            var = self.sq_ema / (1.0 - self.decay ** self.steps.double())  # bias-corrected
            adv = adv / (var.sqrt() + 1e-8)
        return adv


def reinforce_loss(
    log_prob: Tensor, advantages: Tensor, entropy: dict[str, Tensor], entropy_weight: float,
    decisions: dict[str, int],
) -> Tensor:
    """-(1/M) sum_i log P(a_i) A_i (eq. 20) - entropy_weight * total entropy.

    log_prob, advantages: (M,); entropy: component -> (M,) mean per-decision entropy; decisions: component ->
    number of decisions D_c. The bonus is the sum over all decisions of their entropy (mean over the M
    samples), so `entropy_weight` acts per decision, on the same scale as one decision's log-prob term.
    """
    loss = -(log_prob * advantages.to(log_prob.dtype)).mean()
    if entropy_weight:
        total = sum(h * decisions[c] for c, h in entropy.items())  # (M,)
        loss = loss - entropy_weight * total.mean()
    return loss
