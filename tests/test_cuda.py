"""CUDA checks (skipped without a GPU): bf16 autocast of the supernet and the standalone model, the CPU-seeded
architecture draws of a module on the GPU, pinned batches of the data stream, and a 2-GPU DDP search (NCCL).

`bash benchmarks/gpu_check.sh` runs this file on a GPU machine. The DDP run is a separate process started from
this file (`python tests/test_cuda.py --ddp-worker OUT`), because Lightning's DDP launcher re-executes sys.argv.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script (the DDP worker)

from autoias_pl.ctr_model import CTRModel  # noqa: E402
from autoias_pl.data.datamodule import CTRDataModule  # noqa: E402
from autoias_pl.data.memory import MemoryDataModule  # noqa: E402
from autoias_pl.data.stream import StreamLoader  # noqa: E402
from autoias_pl.search import AutoIASSearch  # noqa: E402
from autoias_pl.search.reward import phase_generator  # noqa: E402
from autoias_pl.space import FUNCTIONS, Architecture  # noqa: E402
from autoias_pl.supernet import Supernet  # noqa: E402
from tests.helpers.precision import SPACE, VOCAB, archs_of, check_close, data  # noqa: E402
from tests.helpers.search import RecordingSearch, tiny_data  # noqa: E402

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
FIELDS = [f"C{i}" for i in range(5)]
SMALL = {"emb_dims": (2, 4), "proj_dims": (2, 4), "num_layers": 2, "hidden_units": (4, 8), "num_students": 3}


# ----- bf16 autocast on the GPU -----
@pytest.mark.parametrize("func", FUNCTIONS)
def test_supernet_bf16_autocast_on_cuda(func: str) -> None:
    torch.manual_seed(0)
    net = Supernet(SPACE, VOCAB, init_std=0.3).cuda()
    x, y = data(device="cuda")
    for arch in [Architecture.teacher(SPACE), *archs_of(func)]:
        check_close(net, lambda a=arch: net(x, a), y)


@pytest.mark.parametrize("func", FUNCTIONS)
def test_standalone_model_bf16_autocast_on_cuda(func: str) -> None:
    x, y = data(device="cuda")
    for arch in archs_of(func):
        torch.manual_seed(0)
        model = CTRModel(arch, VOCAB)
        for table in model.tables:
            torch.nn.init.normal_(table.weight, 0.0, 0.3)
        model = model.cuda()
        check_close(model, lambda m=model: m(x), y)


def test_supernet_forward_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    net = Supernet(SPACE, VOCAB, init_std=0.3)
    gpu = copy.deepcopy(net).cuda()
    x, _ = data()
    for arch in [Architecture.teacher(SPACE), *archs_of("concat")]:
        torch.testing.assert_close(gpu(x.cuda(), arch).cpu(), net(x, arch), rtol=1e-4, atol=1e-5)


# ----- architecture draws: CPU generators, the same architectures with the module on the GPU -----
def test_cpu_seeded_draws_are_the_same_on_cuda() -> None:
    cpu = AutoIASSearch.from_flat(FIELDS, [16] * 5, **SMALL, seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking generator: non-uniform conditionals everywhere
        for p in cpu.generator.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    gpu = copy.deepcopy(cpu).cuda()
    for step in range(4):
        assert gpu.sample_students(step) == cpu.sample_students(step), step
        a = cpu.generator.sample(4, phase_generator(3, step, "rewards"))
        b = gpu.generator.sample(4, phase_generator(3, step, "rewards"))
        assert b.architectures == a.architectures, step
        torch.testing.assert_close(b.log_prob.cpu(), a.log_prob, rtol=1e-4, atol=1e-4)


# ----- pinned batches of the DataModule's stream -----
@pytest.mark.parametrize("workers", [0, 2])
def test_pinned_batches_from_the_datamodule(synth_dir: Path, workers: int) -> None:
    def stream() -> StreamLoader:
        return CTRDataModule(str(synth_dir), batch_size=1024, num_workers=workers).train_dataloader()

    plain = stream()
    pinned = StreamLoader(stream().dataset, num_workers=workers, epoch_fn=lambda: 0, pin_memory=True)
    plain.epoch_fn = lambda: 0
    n = 0
    for a, b in zip(plain, pinned, strict=True):
        assert type(b).__name__ == "CTRBatch" and b.features.is_pinned() and b.labels.is_pinned()
        on_gpu = b.features.to("cuda", non_blocking=True), b.labels.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        assert torch.equal(on_gpu[0].cpu(), a.features) and torch.equal(on_gpu[1].cpu(), a.labels)
        n += 1
    assert n == len(plain) > 0


# ----- DDP over NCCL (2 GPUs) -----
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with NCCL needs >= 2 GPUs")
def test_ddp_nccl_two_gpus_stay_identical(tmp_path: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ddp-worker", str(tmp_path)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="0,1")
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"NCCL DDP search hung for 100 s\n{e.stderr}")
    assert done.returncode == 0, done.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == 2 and r0["pid"] != r1["pid"] and r0["device"] != r1["device"]
    assert r0["sampled"] == r1["sampled"] and len(set(r0["sampled"])) > 1
    for part in ("supernet", "generator"):
        for name, value in r0[part].items():
            assert torch.equal(value, r1[part][name]), f"{part}.{name} differs across ranks"
    assert r0["batch_count"] == r1["batch_count"] == 4 and r0["best_score"] == r1["best_score"]


def ddp_worker(out: Path) -> None:
    """Rank of a 2-GPU NCCL search of 4 batches (1 warm-up) in bf16-mixed; writes out/rank{r}.pt."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DDPStrategy

    torch.set_num_threads(1)
    dm = MemoryDataModule(tiny_data(4096, seed=0), tiny_data(2048, seed=1), batch_size=128, eval_batch_size=512)
    model = RecordingSearch.from_flat(FIELDS, [16] * 5, **SMALL, num_reward_archs=4, warmup_epochs=0.25, reward_rows=1024,
                            baseline="leave_one_out", reward_scaling=True)
    trainer = Trainer(accelerator="gpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True,
                      process_group_backend="nccl"), precision="bf16-mixed", max_epochs=1, limit_train_batches=4,
                      limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out))
    trainer.fit(model, datamodule=dm)
    torch.save({
        "supernet": {k: v.detach().cpu().clone() for k, v in model.supernet.state_dict().items()},
        "generator": {k: v.detach().cpu().clone() for k, v in model.generator.state_dict().items()},
        "batch_count": int(model.batch_count), "sampled": model.sampled, "world_size": trainer.world_size,
        "best_score": model.best_score, "pid": os.getpid(), "device": str(model.device),
    }, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ddp-worker", type=Path, required=True)
    ddp_worker(parser.parse_args().ddp_worker)
