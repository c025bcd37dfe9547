"""Exact mid-epoch resume: the stream's position is in the checkpoint, so an interrupted and resumed search
ends where the straight run ends, and a resumed stream yields exactly the batches it had left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by the DDP test

from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.stream import ParquetStream, StreamLoader, _worker_skips
from autoias_pl.search import AutoIASSearch

FIELDS_KW = {"emb_dims": (2, 4), "proj_dims": (2, 4), "num_layers": 1, "hidden_units": (4, 8), "num_students": 3}
B = 1024  # 16k train rows in row groups of 2048: 15 batches per epoch


def loader(data: Path, mode: str = "train", workers: int = 0, **kw: Any) -> StreamLoader:
    split = "train" if mode == "train" else "val"
    ds = ParquetStream(data, split, 300, mode=mode, seed=1, shuffle_buffer_row_groups=2, **kw)  # type: ignore[arg-type]
    return StreamLoader(ds, num_workers=workers)


def take(items: Any, n: int | None) -> list[torch.Tensor]:
    out = []
    for batch in items:
        out.append(torch.cat([batch.features, batch.labels[:, None]], 1))
        if n is not None and len(out) == n:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("mode", ["train", "endless"])
def test_stream_resumes_with_exactly_the_remaining_batches(synth_dir: Path, mode: str, workers: int) -> None:
    """Consume k batches, state_dict, a new loader + load_state_dict yields the rest, in order."""
    kw = {"rank": 1, "world_size": 2}  # rank 1 of 2: the plan and the per-rank rng are used
    a = loader(synth_dir, mode, workers, **kw)
    total = None if mode == "train" else 40
    first = take(a, total)  # epoch 0, to move the loader's epoch counter to 1
    straight = take(a, total)  # epoch 1
    assert len(first) > 20 and not all(torch.equal(x, y) for x, y in zip(first, straight, strict=True))
    for k in (1, 4, 7, len(straight) - 2):
        a = loader(synth_dir, mode, workers, **kw)
        take(a, total)
        it = iter(a)
        head = take(it, k)
        state = a.state_dict()
        assert state["epoch"] == 1 and state["batches"] == k
        assert all(torch.equal(x, y) for x, y in zip(head, straight, strict=False))
        b = loader(synth_dir, mode, workers, **kw)
        b._iters = 1  # a fresh loader at epoch 1, as under a trainer resumed there (epoch_fn)
        b.load_state_dict(state)
        rest = take(b, None if mode == "train" else total - k)
        assert len(rest) == len(straight) - k, (k, len(rest))
        assert all(torch.equal(x, y) for x, y in zip(rest, straight[k:], strict=True)), k
        assert b.state_dict()["batches"] == len(straight)
        assert len(take(b, total)) == (len(straight) if mode == "train" else total)  # the next epoch is whole


def test_a_state_of_another_epoch_is_dropped(synth_dir: Path) -> None:
    straight = take(loader(synth_dir), None)
    b = loader(synth_dir)
    b.load_state_dict({**b.state_dict(), "epoch": 3, "batches": 5})
    assert all(torch.equal(x, y) for x, y in zip(take(b, None), straight, strict=True))


def test_a_changed_plan_is_refused(synth_dir: Path) -> None:
    state = loader(synth_dir, workers=0).state_dict()
    with pytest.raises(ValueError, match="num_workers 0 in the checkpoint, 2 now"):
        loader(synth_dir, workers=2).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        loader(synth_dir, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="mid-epoch"):
        ev = StreamLoader(ParquetStream(synth_dir, "val", 300, mode="eval"))
        ev.load_state_dict({**ev.state_dict(), "batches": 2})


def test_worker_skips_follow_the_dataloader_round_robin() -> None:
    quotas = [2, 4, 3]
    order = [w for r in range(4) for w in range(3) if quotas[w] > r]  # 0 1 2 0 1 2 1 2 1
    for k in range(len(order) + 1):
        counts, shift = _worker_skips(quotas, k)  # type: ignore[arg-type]
        assert counts == [order[:k].count(w) for w in range(3)]
        if 0 < k < len(order):
            nxt = order[k]  # the next worker that has a batch, from `shift` on in cyclic order
            assert nxt == next(w % 3 for w in range(shift, shift + 3) if counts[w % 3] < quotas[w % 3])
    assert _worker_skips([None, None], 5) == ([3, 2], 1)


# ----- a search interrupted mid-epoch and resumed -----


class Interrupt(Exception):
    pass


class SaveAndStop(Callback):
    """At batch `batch` of epoch `epoch`: save a checkpoint as a preempted job would, then die."""

    def __init__(self, path: Path, epoch: int, batch: int) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.current_epoch == self.epoch and args[-1] == self.batch:
            trainer.save_checkpoint(self.path)
            raise Interrupt


def search_run(root: Path, data: CTRDataModule, ckpt_path: str | None = None, **kw: Any) -> AutoIASSearch:
    model = AutoIASSearch.from_flat(data.field_names, data.vocab_sizes, data.schema_hash, **FIELDS_KW,
                                    reward_rows=0 if data.reward_stream else 1024, warmup_epochs=0.2)  # 3 of 15
    kw = {"logger": False, "enable_checkpointing": False, **kw}
    t = Trainer(accelerator="cpu", max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, default_root_dir=str(root), **kw)
    t.fit(model, datamodule=data, ckpt_path=ckpt_path)
    model.trainer_global_step = t.global_step  # type: ignore[attr-defined]
    return model


def same_end(resumed: AutoIASSearch, straight: AutoIASSearch) -> None:
    assert int(resumed.batch_count) == int(straight.batch_count) == 30
    assert resumed.trainer_global_step == straight.trainer_global_step  # type: ignore[attr-defined]
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-6, rtol=0, msg=name)
    assert resumed.best_score == straight.best_score


def datamodule(synth_dir: Path, reward_stream: bool) -> CTRDataModule:
    return CTRDataModule(str(synth_dir), batch_size=B, eval_batch_size=4096, reward_stream=reward_stream,
                         reward_batch_size=512, shuffle_buffer_row_groups=2, seed=5)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("reward_stream", [False, True], ids=["reward_set", "reward_stream"])
def test_interrupted_search_resumes_exactly(tmp_path: Path, synth_dir: Path, reward_stream: bool) -> None:
    """Straight for 2 epochs; the same run killed after batch 6 of epoch 1 (a checkpoint saved there),
    resumed with ckpt_path: the same parameters, counters and best score as the straight run."""
    straight = search_run(tmp_path / "a", datamodule(synth_dir, reward_stream))
    ck = tmp_path / "interrupted.ckpt"
    with pytest.raises(Interrupt):
        search_run(tmp_path / "b", datamodule(synth_dir, reward_stream), callbacks=[SaveAndStop(ck, 1, 6)])
    states = torch.load(ck, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert [(s["epoch"], s["batches"], s["mode"]) for s in states] == [(1, 7, "train")] + (
        [(1, 7, "endless")] if reward_stream else [])
    same_end(search_run(tmp_path / "c", datamodule(synth_dir, reward_stream), ckpt_path=str(ck)), straight)

class Sigterm(Callback):
    """What Lightning does under DDP after a SIGTERM: SIGTERMException at the start of the next batch."""

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 9:
            raise SIGTERMException


@pytest.mark.usefixtures("one_thread")
def test_slurm_yaml_checkpoints_resume_exactly(tmp_path: Path, synth_dir: Path) -> None:
    """The two ModelCheckpoints of configs/trainer/slurm.yaml, as configured there: mid_epoch.ckpt (every
    1001 global steps there, 7 here: coprime with 2 and 3, the optimizer steps per search batch) and
    exception.ckpt (a SIGTERM under DDP); resuming from either ends as the straight run."""
    config = yaml.safe_load((Path(__file__).parents[1] / "configs/trainer/slurm.yaml").read_text())
    specs = [c["init_args"] for c in config["trainer"]["callbacks"]]
    assert [s["filename"] for s in specs] == ["mid_epoch", "exception"] and specs[0]["every_n_train_steps"] == 1001

    def callbacks(root: Path) -> list[ModelCheckpoint]:
        return [ModelCheckpoint(dirpath=root, **{**s, "every_n_train_steps": 7} if "every_n_train_steps" in s
                                else s) for s in specs]

    straight = search_run(tmp_path / "a", datamodule(synth_dir, False))
    with pytest.raises(SIGTERMException):
        search_run(tmp_path / "b", datamodule(synth_dir, False), enable_checkpointing=True,
                   callbacks=[*callbacks(tmp_path / "ck"), Sigterm()])
    saved = {p.name: torch.load(p, weights_only=False) for p in (tmp_path / "ck").glob("*.ckpt")}
    assert set(saved) == {"mid_epoch.ckpt", "exception.ckpt"}
    loader_state = {n: c["loops"]["fit_loop"]["state_dict"]["combined_loader"][0] for n, c in saved.items()}
    assert loader_state["exception.ckpt"]["epoch"] == 1 and loader_state["exception.ckpt"]["batches"] == 9
    assert saved["mid_epoch.ckpt"]["global_step"] % 7 == 0 and 0 < loader_state["mid_epoch.ckpt"]["batches"] < 9
    for name in saved:
        same_end(search_run(tmp_path / name, datamodule(synth_dir, False), ckpt_path=str(tmp_path / "ck" / name)),
                 straight)


# ----- the same under DDP: 2 CPU processes (gloo); the file runs itself as a script (Lightning's DDP
# launcher re-executes sys.argv, so it cannot run inside pytest) -----


class SaveAndStopAll(Callback):
    """Every rank: at batch `batch` of epoch 1 save a checkpoint (a collective) and stop."""

    def __init__(self, path: Path, batch: int) -> None:
        self.path, self.batch = path, batch

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1 and args[-1] == self.batch:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def ddp_main(data: Path, out: Path, phase: str) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    torch.set_num_threads(1)
    dm = datamodule(data, True)
    model = AutoIASSearch.from_flat(dm.field_names, dm.vocab_sizes, dm.schema_hash, **FIELDS_KW, reward_rows=0,
                                    warmup_epochs=0.2)
    ck = out / "interrupted.ckpt"
    t = Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True,
                process_group_backend="gloo"), max_epochs=2, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=str(out), callbacks=[SaveAndStopAll(ck, 3)] if phase == "interrupt" else [])
    t.fit(model, datamodule=dm, ckpt_path=str(ck) if phase == "resume" else None)
    torch.save({"state": model.state_dict(), "batch_count": int(model.batch_count), "step": t.global_step},
               out / f"{phase}-rank{t.global_rank}.pt")


@pytest.mark.slow
def test_ddp_interrupted_search_resumes_exactly(tmp_path: Path, synth_dir: Path) -> None:
    """2 ranks, reward stream: killed after batch 4 of epoch 1 of 7 per rank and resumed from rank 0's
    checkpoint, both ranks end with the straight run's parameters."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    for phase in ("straight", "interrupt", "resume"):
        try:
            done = subprocess.run([sys.executable, __file__, str(synth_dir), str(tmp_path), phase], env=env,
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"DDP {phase} run hung\n{e.stderr}")
        assert done.returncode == 0, done.stderr[-4000:]
    states = torch.load(tmp_path / "interrupted.ckpt", weights_only=False)["loops"]["fit_loop"]["state_dict"]
    assert [(s["epoch"], s["batches"], s["world_size"]) for s in states["combined_loader"]] == [(1, 4, 2)] * 2
    for rank in (0, 1):
        straight, resumed = (torch.load(tmp_path / f"{p}-rank{rank}.pt") for p in ("straight", "resume"))
        assert resumed["batch_count"] == straight["batch_count"] == 14
        assert resumed["step"] == straight["step"]
        for name, value in straight["state"].items():
            torch.testing.assert_close(resumed["state"][name], value, atol=1e-6, rtol=0, msg=name)


if __name__ == "__main__":
    ddp_main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
