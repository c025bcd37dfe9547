"""Cost of one full search batch vs one plain teacher step, through a Trainer, on 39 synthetic fields.

Prints ONE JSON object. A search batch = teacher step + soft labels + N=9 students (one step) + M=4 reward
architectures on a fixed 2048-row reward set + a generator step. The plain teacher step is the same
module with `training_step` reduced to the teacher's BCE + Adam step. Both are timed per batch by a callback
(on_train_batch_start .. end) after `--warmup` batches; the median is reported. Threads are pinned.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_search.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer

from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.data.synth import synthesize
from autoias_pl.search import AutoIASSearch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable as a script from anywhere
from autoias_pl.data.memory import MemoryDataModule  # noqa: E402

SPACE = {"emb_dims": (4, 8, 16), "proj_dims": (4, 8, 16), "num_layers": 3, "hidden_units": (64, 128, 256)}


class TeacherOnly(AutoIASSearch):
    """The plain teacher training step: BCE of the largest architecture and one Adam step."""

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        sup_opt, _ = self.optimizers()
        self._step(F.binary_cross_entropy_with_logits(self.supernet(x, self.teacher), y), sup_opt, "teacher", 0)


class BatchTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def time_module(cls: type[AutoIASSearch], schema: Schema, dm: MemoryDataModule, batches: int, warmup: int,
                fused: bool = False, **kw: Any) -> float:
    model = cls.from_flat(schema.field_names, schema.vocab_sizes, schema.hash, reward_rows=2048, **SPACE,
                          supernet_optimizer=partial(torch.optim.Adam, lr=1e-3, fused=fused), **kw)
    timer = BatchTimer()
    Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=warmup + batches, limit_val_batches=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[timer]).fit(model, datamodule=dm)
    return statistics.median(timer.times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--unfused", dest="fused", action="store_false",
                        help="Adam(fused=False) for the supernet (both timings); default fused, as the module's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth39"
        rows = args.batch_size * (args.batches + args.warmup + 2) * 10 // 8
        schema = synthesize(data, rows, 39, planted_pairs=10, seed=0)
        dm = MemoryDataModule(read_rows(data, "train", rows), read_rows(data, "val", rows),
                              batch_size=args.batch_size)
    teacher = time_module(TeacherOnly, schema, dm, args.batches, args.warmup, args.fused)
    search = time_module(AutoIASSearch, schema, dm, args.batches, args.warmup, args.fused)
    print(json.dumps({
        "fields": 39, "pairs": 39 * 38 // 2, "space": {k: list(v) if isinstance(v, tuple) else v for k, v in SPACE.items()},
        "vocab_total": sum(schema.vocab_sizes), "batch_size": args.batch_size, "threads": args.threads,
        "students": 9, "reward_archs": 4, "reward_rows": 2048, "timed_batches": args.batches,
        "supernet_optimizer": f"Adam(lr=1e-3, fused={args.fused})",
        "method": "Trainer, per-batch callback timing, median",
        "teacher_step_s": round(teacher, 4), "search_step_s": round(search, 4), "ratio": round(search / teacher, 2),
        "search_samples_per_s": round(args.batch_size / search, 1),
        "teacher_samples_per_s": round(args.batch_size / teacher, 1),
    }))


if __name__ == "__main__":
    main()
