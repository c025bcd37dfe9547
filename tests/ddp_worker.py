"""The 2-process DDP run that `test_search_ddp.py` launches (its data and module: tests/helpers/search.py).

Run as a script (Lightning's DDP launcher re-executes sys.argv, so it cannot run inside pytest):
    python tests/ddp_worker.py OUT_DIR [--batches 4]
Each rank writes OUT_DIR/rank{r}.pt: supernet and generator state, the reward baseline, the batch counter,
global_step and the hashes of every architecture it sampled (students and reward architectures).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoias_pl.data.memory import MemoryDataModule  # noqa: E402
from tests.helpers.search import RecordingSearch, tiny_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--reward-stream", action="store_true")
    parser.add_argument("--hang-timeout", type=float, default=120.0)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # a hung collective fails loudly
    torch.set_num_threads(1)
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DDPStrategy

    train, val = tiny_data(4096, seed=0), tiny_data(2048, seed=1)
    dm = MemoryDataModule(train, val, batch_size=128, reward_stream=args.reward_stream, reward_batch_size=256,
                          eval_batch_size=512)
    model = RecordingSearch.from_flat(
        [f"C{i}" for i in range(5)], [16] * 5, emb_dims=(2, 4), proj_dims=(2, 4), num_layers=2,
        hidden_units=(4, 8), num_students=3, num_reward_archs=4, warmup_epochs=1 / args.batches,  # 1 batch
        reward_rows=0 if args.reward_stream else 1024, baseline="leave_one_out", reward_scaling=True,
        entropy_weight=0.01, cost_weight=0.01)
    trainer = Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True,
                      process_group_backend="gloo"), max_epochs=1, limit_train_batches=args.batches,
                      limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(args.out))
    trainer.fit(model, datamodule=dm)
    rank = trainer.global_rank
    torch.save({
        "supernet": {k: v.detach().clone() for k, v in model.supernet.state_dict().items()},
        "generator": {k: v.detach().clone() for k, v in model.generator.state_dict().items()},
        "baseline": float(model.shaper.tau_bar), "sq_ema": float(model.shaper.sq_ema),
        "batch_count": int(model.batch_count), "global_step": trainer.global_step, "sampled": model.sampled,
        "world_size": trainer.world_size, "best_score": model.best_score, "pid": os.getpid(),
    }, args.out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
