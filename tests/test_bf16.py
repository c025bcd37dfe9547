"""bf16 mixed precision on CPU: the supernet and the standalone model run under `torch.autocast` (their custom
autograd Functions and in-place matmuls align dtypes themselves), their loss stays within bf16 rounding of
fp32, gradients land in the fp32 parameters, and a search and a retrain step run under
`Trainer(precision="bf16-mixed")`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from autoias_pl.ctr_model import CTRModel
from autoias_pl.data.memory import MemoryDataModule
from autoias_pl.retrain import AutoIASRetrain
from autoias_pl.search import AutoIASSearch
from autoias_pl.space import FUNCTIONS, Architecture
from autoias_pl.supernet import Supernet
from tests.helpers.precision import (
    FIELDS,
    SPACE,
    VOCAB,
    archs_of,
    check_close,
    data,
)
from tests.helpers.search import tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


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
