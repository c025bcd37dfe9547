"""bf16 autocast checks shared by the CPU (test_bf16.py) and the GPU (test_cuda.py) tests: a small space,
random ids, and the comparison of a model's loss and gradients under bf16 with fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoias_pl.space import COMPONENTS, Architecture, SearchSpace

FIELDS = tuple(f"C{i}" for i in range(6))


VOCAB = (5, 7, 3, 9, 4, 6)


SPACE = SearchSpace(FIELDS, emb_dims=(2, 4, 8), proj_dims=(2, 4, 8), num_layers=2, hidden_units=(8, 16))


REL_TOL = 2e-2  # |loss_bf16 - loss_fp32| / loss_fp32


def data(batch: int = 256, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, v, (batch,), generator=g) for v in VOCAB], 1)  # (B, n)
    y = torch.randint(0, 2, (batch,), generator=g).float()  # (B,)
    return x.to(device), y.to(device)


def with_func(arch: Architecture, func: str) -> Architecture:
    """`arch` with every pair's interaction function set to `func`."""
    choice = {c: arch.indices(c) for c in COMPONENTS}
    choice["func"] = [SPACE.functions.index(func)] * SPACE.num_pairs
    return Architecture.from_indices(SPACE, choice)


def archs_of(func: str) -> list[Architecture]:
    """The teacher's structure and 4 uniform students, all pairs with `func`; plus 2 mixed-function students."""
    rng = torch.Generator().manual_seed(7)
    one = [with_func(Architecture.teacher(SPACE), func)]
    one += [with_func(Architecture.uniform_random(SPACE, rng), func) for _ in range(4)]
    return one + [Architecture.uniform_random(SPACE, torch.Generator().manual_seed(s)) for s in range(2)]


def loss_and_grads(model: nn.Module, run, y: torch.Tensor, bf16: bool) -> tuple[float, torch.Tensor]:
    """BCE of `run()` (optionally under bf16 autocast on y's device) and the flattened parameter gradients."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = run()
        loss = F.binary_cross_entropy_with_logits(logits, y)
    if bf16:
        assert logits.dtype == torch.bfloat16  # really ran in bf16
    loss.backward()
    grads = []
    for p in model.parameters():
        if p.grad is not None:
            assert p.grad.dtype == p.dtype == torch.float32
            grads.append(p.grad.flatten())
    return float(loss.detach()), torch.cat(grads)


def check_close(model: nn.Module, run, y: torch.Tensor) -> None:
    ref, g_ref = loss_and_grads(model, run, y, bf16=False)
    got, g_got = loss_and_grads(model, run, y, bf16=True)
    assert abs(got - ref) < REL_TOL * ref, (got, ref)
    assert torch.isfinite(g_got).all()
    if g_ref.norm() > 0:
        assert F.cosine_similarity(g_got, g_ref, dim=0) > 0.98
