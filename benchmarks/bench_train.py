"""Retraining throughput through Lightning vs a plain PyTorch loop of the same model. Prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train.py [--batch 4096] [--steps 20]

Both train DeepFM at the same sizes on the same in-memory batches of a 39-field synthetic dataset with Adam
(lr 1e-3), one thread, CPU:
- `lightning`: `AutoIASRetrain(architecture="deepfm")` (the `CTRModel` of the `deepfm` baseline) under a
  `Trainer` without logger, checkpointing or progress bar;
- `plain`: a hand-written DeepFM of exactly that structure and parameter count (fields into the MLP, every
  pair's Hadamard product of projected embeddings read out at the logit) and a bare zero_grad / forward /
  backward / step loop.
The ratio lightning / plain is the framework's cost (target >= 0.9). `lightning_datamodule` adds the
parquet stream (`CTRDataModule`) to the Lightning run: the full retraining path. Rates are the best of
`--repeats` alternating runs (the machine may be shared).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from common import cached_synth  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import ParquetStream
from autoias_pl.retrain import AutoIASRetrain

FIELDS = 39



class PlainDeepFM(nn.Module):
    """DeepFM as the `deepfm` baseline expresses it, written out: (B, n) ids -> logits (B,)."""

    def __init__(self, vocab_sizes: list[int], dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        n = len(vocab_sizes)
        self.register_buffer("offsets", torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0))  # (n,)
        left, right = torch.triu_indices(n, n, 1)  # (P,), (P,)
        self.register_buffer("left", left)
        self.register_buffer("right", right)
        self.embedding = nn.Embedding(sum(vocab_sizes), dim)
        nn.init.normal_(self.embedding.weight, 0.0, 0.01)
        self.projection = nn.Parameter(torch.empty(n, dim, dim).uniform_(-(dim**-0.5), dim**-0.5))  # (n, d, k)
        widths = [n * dim] + [hidden] * layers
        pairs = zip(widths, widths[1:], strict=False)
        self.mlp = nn.Sequential(*[m for a, b in pairs for m in (nn.Linear(a, b), nn.ReLU())])
        self.readout = nn.Linear(hidden + len(left) * dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x + self.offsets)  # (B, n, d)
        deep = self.mlp(e.flatten(1))  # (B, H)
        p = torch.einsum("bnd,ndk->bnk", e, self.projection)  # (B, n, k)
        fm = p.index_select(1, self.left) * p.index_select(1, self.right)  # (B, P, k)
        return self.readout(torch.cat([deep, fm.flatten(1)], 1)).squeeze(1)  # (B,)


def plain_rate(model: nn.Module, batches: list[CTRBatch], warmup: int) -> float:
    """samples/s of a bare training loop over `batches` (the first `warmup` not timed)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, rows = 0.0, 0
    for k, b in enumerate(batches):
        if k == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(b.features), b.labels).backward()
        opt.step()
        rows += len(b.labels) if k >= warmup else 0
    return rows / (time.perf_counter() - start)


class Batches:
    """An iterable over in-memory batches (a bare list would be read as a list of dataloaders)."""

    def __init__(self, batches: list[CTRBatch]) -> None:
        self.batches = batches

    def __iter__(self):  # noqa: ANN204
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Timer(Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.rows = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: CTRBatch, i: int) -> None:
        if i == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, out: object, batch: CTRBatch,
                           i: int) -> None:
        if i >= self.warmup:
            self.rows += len(batch.labels)
            self.end = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.rows / (self.end - self.start)


def lightning_rate(module: AutoIASRetrain, steps: int, warmup: int, data: list[CTRBatch] | CTRDataModule) -> float:
    timer = Timer(warmup)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=1, max_steps=steps, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(data, CTRDataModule):
            trainer.fit(module, datamodule=data)
        else:
            trainer.fit(module, train_dataloaders=Batches(data))
    return timer.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="dataloader workers of the datamodule run")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "autoias-bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = cached_synth(args.cache, args.rows, FIELDS)
    schema = Schema.load(path)
    total = args.warmup + args.steps
    stream = ParquetStream(path, "train", args.batch, mode="train", seed=0)
    batches = [b for _, b in zip(range(total), stream, strict=False)]
    if len(batches) < total:
        raise SystemExit(f"{path}: {len(batches)} batches of {args.batch}; need {total} (raise --rows)")

    def retrain() -> AutoIASRetrain:
        torch.manual_seed(0)
        return AutoIASRetrain(schema.field_names, schema.vocab_sizes, schema.hash, "deepfm",
                              baseline_dim=args.dim, baseline_hidden=args.hidden, baseline_layers=args.layers)

    def plain() -> PlainDeepFM:
        torch.manual_seed(0)
        return PlainDeepFM(schema.vocab_sizes, args.dim, args.hidden, args.layers)

    params = sum(p.numel() for p in retrain().parameters())
    if params != sum(p.numel() for p in plain().parameters()):
        raise AssertionError("the plain DeepFM and the deepfm baseline differ in size")
    rates: dict[str, list[float]] = {"plain": [], "lightning": [], "lightning_datamodule": []}
    for _ in range(args.repeats):
        rates["plain"].append(plain_rate(plain(), batches, args.warmup))
        rates["lightning"].append(lightning_rate(retrain(), total, args.warmup, batches))
        dm = CTRDataModule(str(path), batch_size=args.batch, seed=0, num_workers=args.workers)
        rates["lightning_datamodule"].append(lightning_rate(retrain(), total, args.warmup, dm))
    best = {k: max(v) for k, v in rates.items()}
    print(json.dumps({
        "bench": "train_deepfm",
        "fields": FIELDS,
        "params": params,
        "batch_size": args.batch,
        "dim": args.dim,
        "hidden": [args.hidden] * args.layers,
        "timed_steps": args.steps,
        "plain_samples_per_s": round(best["plain"]),
        "lightning_samples_per_s": round(best["lightning"]),
        "ratio": round(best["lightning"] / best["plain"], 3),
        "lightning_datamodule_samples_per_s": round(best["lightning_datamodule"]),
        "ratio_datamodule": round(best["lightning_datamodule"] / best["plain"], 3),
        "all_runs": {k: [round(r) for r in v] for k, v in rates.items()},
        "torch_threads": torch.get_num_threads(),
        "datamodule_workers": args.workers,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
