"""bf16 mixed precision on CPU: the supernet and the standalone model run under `torch.autocast` (their custom
autograd Functions and in-place matmuls align dtypes themselves), their loss stays within bf16 rounding of
fp32, gradients land in the fp32 parameters, and a search and a retrain step run under
`Trainer(precision="bf16-mixed")`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch import nn

from autoias_pl.ctr_model import CTRModel
from autoias_pl.retrain import AutoIASRetrain
from autoias_pl.search import AutoIASSearch
from autoias_pl.space import COMPONENTS, FUNCTIONS, Architecture, SearchSpace
from autoias_pl.supernet import Supernet
from tests.ddp_worker import MemoryDataModule, tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

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


@pytest.mark.parametrize("func", FUNCTIONS)
def test_supernet_teacher_and_students_under_bf16_autocast(func: str) -> None:
    torch.manual_seed(0)
    net = Supernet(SPACE, VOCAB, init_std=0.3)  # large enough embeddings that the pair vectors matter
    x, y = data()
    for arch in archs_of(func):
        check_close(net, lambda a=arch: net(x, a), y)


def test_supernet_paper_teacher_under_bf16_autocast() -> None:
    """The unchanged teacher (all concat) and uniform students drawn over all four functions."""
    torch.manual_seed(0)
    net = Supernet(SPACE, VOCAB, init_std=0.3)
    x, y = data()
    archs = [Architecture.teacher(SPACE)] + [Architecture.uniform_random(SPACE, torch.Generator().manual_seed(s))
                                             for s in range(6)]
    for arch in archs:
        check_close(net, lambda a=arch: net(x, a), y)


@pytest.mark.parametrize("func", FUNCTIONS)
def test_standalone_model_under_bf16_autocast(func: str) -> None:
    x, y = data()
    for arch in archs_of(func):
        torch.manual_seed(0)
        model = CTRModel(arch, VOCAB)
        for table in model.tables:
            nn.init.normal_(table.weight, 0.0, 0.3)
        check_close(model, lambda m=model: m(x), y)


def bf16_trainer(tmp_path: Path, max_steps: int) -> Trainer:
    return Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=max_steps, limit_val_batches=1,
                   logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, default_root_dir=str(tmp_path))


@pytest.fixture(scope="module")
def tiny() -> MemoryDataModule:
    return MemoryDataModule(tiny_data(1024, fields=6, seed=0), tiny_data(512, fields=6, seed=1), batch_size=256,
                            eval_batch_size=256)


def test_search_step_with_bf16_mixed_trainer(tmp_path: Path, tiny: MemoryDataModule) -> None:
    model = AutoIASSearch.from_flat(list(FIELDS), [16] * 6, emb_dims=(2, 4), proj_dims=(2, 4), num_layers=2,
                                    hidden_units=(4, 8), num_students=3, reward_rows=256)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = bf16_trainer(tmp_path, max_steps=3)  # one batch: teacher, students and generator steps
    t.fit(model, datamodule=tiny)
    assert int(model.batch_count) == 1 and t.global_step == 3
    assert all(p.dtype == torch.float32 for p in model.parameters())
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("supernet.") for k in changed) and any(k.startswith("generator.") for k in changed)
    for name in ("train/teacher_loss", "train/student_loss", "search/generator_loss"):
        assert torch.isfinite(t.callback_metrics[name]), name


def test_retrain_step_with_bf16_mixed_trainer(tmp_path: Path, tiny: MemoryDataModule) -> None:
    model = AutoIASRetrain(list(FIELDS), [16] * 6, "", architecture="deepfm", baseline_dim=4, baseline_hidden=8,
                           baseline_layers=2)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    t = bf16_trainer(tmp_path, max_steps=1)
    t.fit(model, datamodule=tiny)
    assert t.global_step == 1 and torch.isfinite(t.callback_metrics["train/loss"])
    assert all(not torch.equal(v, before[k]) for k, v in model.model.state_dict().items() if v.is_floating_point())
