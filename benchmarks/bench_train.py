"""Retraining throughput through Lightning vs a plain PyTorch loop of the same model. Prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train.py [--batch 4096] [--steps 20]

Both train DeepFM at the same sizes on the same in-memory batches of a 39-field synthetic dataset with Adam
(lr 1e-3), one thread, CPU:
- `lightning`: `AutoIASRetrain(architecture="deepfm")` (the `CTRModel` of the `deepfm` baseline) under a
  `Trainer` without logger, checkpointing or progress bar;
- `plain`: a hand-written DeepFM of exactly that structure and parameter count (fields into the MLP, every
  pair's Hadamard product of projected embeddings read out at the logit, computed as CTRModel does: bilinear
  forms, no (B, P, k) tensor) and a bare zero_grad / forward / backward / step loop.
The ratio lightning / plain is the framework's cost (target >= 0.9). `lightning_datamodule` adds the
parquet stream (`CTRDataModule`) to the Lightning run: the full retraining path. Rates are the best of
`--repeats` alternating runs (the machine may be shared).

`reference_deepfm` (issue 10): the published DeepFM at DeepCTR-Torch's default size (dim 16, DNN 256-128,
`--ref-dim`, `--ref-hidden`) on the same 39 fields, at each of `--ref-batches` (256 and 4096), on the same
in-memory batches, in this process:
- `ours`: `ref:deepfm` through `AutoIASRetrain` training steps (the Trainer as above), without L2, and
  `ours_l2` with the embedding L2 of configs/retrain.yaml (`l2_embedding`, the rows looked up in the batch;
  1e-2 where the config has none);
- `deepctr`: DeepCTR-Torch's `DeepFM` of the same parameter count, trained by the inner loop of its own
  `fit` (sigmoid output, sum-reduced BCE + `get_regularization_loss()`, zero_grad / backward / Adam step)
  with l2_reg_embedding = l2_reg_linear = 0, and `deepctr_l2` with its defaults 1e-5 (which square whole
  tables every step), and `deepctr_fused_adam` (no L2, an Adam(fused=True) given to its compile).
Ours uses configs/retrain.yaml's Adam arguments (lr, fused).

Multiply-adds per sample (`macs_per_sample`: `Architecture.num_macs` for `deepfm`, the reference's
`num_macs` for `ref:deepfm`) times samples/s is each model's arithmetic rate; `arithmetic_rate.ratio` is
the `lightning` deepfm's over `ours` ref:deepfm's at the same batch size (issue 21 target >= 0.6), when the
reference runs at `--batch`; `ratio_per_cpu_second` the same with samples per CPU second of this process
(with one thread, robust to other processes sharing the machine). Ratios ours / deepctr (target >= 1.5 at both
batch sizes), ours_l2 / deepctr_l2 and ours / deepctr_fused_adam. Without deepctr_torch (the `ref` extra)
its entries say why it is absent.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import contextlib
import json
import sys
import tempfile
import threading
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
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
L2_TIMED = 1e-2  # ours_l2's l2_embedding when configs/retrain.yaml sets none


class PlainDeepFM(nn.Module):
    """DeepFM as the `deepfm` baseline expresses it, written out: (B, n) ids -> logits (B,). The pairs' read-out
    sum_p w_p . (ê_i * ê_j) is computed as CTRModel does, per column c one bilinear form ê_c^T M_c ê_c (M_c
    holds w_pc at (i, j)) in one bmm, so `ratio` compares the same arithmetic."""

    def __init__(self, vocab_sizes: list[int], dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        n = len(vocab_sizes)
        self.register_buffer("offsets", torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0))  # (n,)
        left, right = torch.triu_indices(n, n, 1)  # (P,), (P,)
        perm = torch.full((n * n,), len(left), dtype=torch.long)  # (n n,) row of the pair weights at (i, j)
        perm[left * n + right] = torch.arange(len(left))
        self.register_buffer("perm", perm)
        self.embedding = nn.Embedding(sum(vocab_sizes), dim)
        nn.init.normal_(self.embedding.weight, 0.0, 0.01)
        self.projection = nn.Parameter(torch.empty(n, dim, dim).uniform_(-(dim**-0.5), dim**-0.5))  # (n, d, k)
        widths = [n * dim] + [hidden] * layers
        pairs = zip(widths, widths[1:], strict=False)
        self.mlp = nn.Sequential(*[m for a, b in pairs for m in (nn.Linear(a, b), nn.ReLU())])
        self.readout = nn.Linear(hidden + len(left) * dim, 1)
        self.hidden = hidden

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x + self.offsets)  # (B, n, d)
        deep = self.mlp(e.flatten(1))  # (B, H)
        w, k, n = self.readout.weight[0], self.projection.shape[2], e.shape[1]  # (H + P k,)
        t = torch.bmm(e.transpose(0, 1), self.projection).permute(2, 1, 0).contiguous()  # (k, B, n)
        m = torch.cat([w[self.hidden :].view(-1, k), w.new_zeros(1, k)]).index_select(0, self.perm)  # (n n, k)
        fm = (torch.bmm(t, m.t().reshape(k, n, n)) * t).sum((0, 2))  # (B,)
        return deep @ w[: self.hidden] + self.readout.bias + fm  # (B,)


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
        self.cpu_start, self.cpu_end = 0.0, 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: CTRBatch, i: int) -> None:
        if i == self.warmup:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, out: object, batch: CTRBatch,
                           i: int) -> None:
        if i >= self.warmup:
            self.rows += len(batch.labels)
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

    @property
    def rate(self) -> float:
        return self.rows / (self.end - self.start)

    @property
    def cpu_rate(self) -> float:
        """samples per CPU second of this process (1 thread: robust to other processes on the machine)."""
        return self.rows / (self.cpu_end - self.cpu_start)


def lightning_rate(module: AutoIASRetrain, steps: int, warmup: int, data: list[CTRBatch] | CTRDataModule,
                   cpu: list[float] | None = None) -> float:
    """samples/s of `steps` Trainer steps (the first `warmup` not timed); appends samples per CPU s to `cpu`."""
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
    if cpu is not None:
        cpu.append(timer.cpu_rate)
    return timer.rate


def import_deepctr() -> tuple[object | None, str]:
    """(deepctr_torch or None, why absent). Its import starts a thread that checks PyPI for a newer version
    and prints: kept off stdout (which carries the JSON) and waited for."""
    before = set(threading.enumerate())
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import deepctr_torch
            for t in set(threading.enumerate()) - before:
                t.join(timeout=30)
    except Exception as e:  # noqa: BLE001  (any import failure: tensorflow missing, version clash, ...)
        return None, f"deepctr_torch not importable ({type(e).__name__}: {e}); pip install -e '.[ref]'"
    return deepctr_torch, ""


def deepctr_deepfm(vocab_sizes: list[int], dim: int, hidden: list[int], l2: float, fused: bool = False) -> nn.Module:
    """DeepCTR-Torch's DeepFM over one SparseFeat per field, compiled with Adam (lr 1e-3) and BCE: its own
    "adam" (torch's default Adam), or with `fused` an Adam(fused=True) instance passed to its compile."""
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    cols = [SparseFeat(f"f{i}", v, embedding_dim=dim) for i, v in enumerate(vocab_sizes)]
    model = DeepFM(cols, cols, dnn_hidden_units=tuple(hidden), l2_reg_linear=l2, l2_reg_embedding=l2, seed=0)
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3, fused=True) if fused else "adam",
                  "binary_crossentropy")
    return model


def deepctr_rate(model: nn.Module, batches: list[CTRBatch], warmup: int) -> float:
    """samples/s of the inner loop of DeepCTR-Torch's `BaseModel.fit` over `batches` (x as floats, as its
    TensorDataset gives them)."""
    model.train()
    data = [(b.features.float(), b.labels.float()) for b in batches]
    start, rows = 0.0, 0
    for k, (x, y) in enumerate(data):
        if k == warmup:
            start = time.perf_counter()
        y_pred = model(x).squeeze(-1)
        model.optim.zero_grad()
        loss = model.loss_func(y_pred, y, reduction="sum")
        total = loss + model.get_regularization_loss() + model.aux_loss
        loss.item(), total.item()  # what fit logs every step
        total.backward()
        model.optim.step()
        rows += len(y) if k >= warmup else 0
    return rows / (time.perf_counter() - start)


def recipe() -> tuple[float, dict[str, object]]:
    """configs/retrain.yaml's l2_embedding (0 if it sets none) and Adam's init_args (lr, fused)."""
    import yaml

    init = yaml.safe_load((CONFIGS / "retrain.yaml").read_text())["model"]["init_args"]
    if init["optimizer"]["class_path"] != "torch.optim.Adam":
        raise SystemExit(f"configs/retrain.yaml: optimizer {init['optimizer']['class_path']}, this bench times Adam")
    return float(init.get("l2_embedding", 0)), dict(init["optimizer"].get("init_args", {}))


def reference_deepfm(args: argparse.Namespace, path: Path, schema: Schema) -> dict[str, object]:
    """Rates of ours (ref:deepfm via AutoIASRetrain) and DeepCTR-Torch's DeepFM per batch size."""
    deepctr, why = import_deepctr()
    hidden, (l2, adam) = [int(h) for h in args.ref_hidden.split(",")], recipe()
    l2 = l2 or L2_TIMED  # the config's, or (off there) the value the docs suggest: the penalty's cost is timed

    def ours(l2_embedding: float) -> AutoIASRetrain:
        torch.manual_seed(0)
        return AutoIASRetrain(schema.field_names, schema.vocab_sizes, schema.hash, "ref:deepfm",
                              baseline_dim=args.ref_dim, baseline_hidden=hidden, l2_embedding=l2_embedding,
                              optimizer=lambda params: torch.optim.Adam(params, **adam))

    params = sum(p.numel() for p in ours(0.0).parameters())
    out: dict[str, object] = {"dim": args.ref_dim, "hidden": hidden, "params": params,
                              "macs_per_sample": ours(0.0).model.num_macs(), "ours_l2_embedding": l2,
                              "ours_adam": adam,
                              "deepctr": "absent: " + why if deepctr is None else deepctr.__version__}
    if deepctr is not None:
        theirs = sum(p.numel() for p in deepctr_deepfm(schema.vocab_sizes, args.ref_dim, hidden, 0.0).parameters())
        if theirs != params:
            raise AssertionError(f"ref:deepfm has {params} parameters, DeepCTR-Torch's DeepFM {theirs}")
    total = args.warmup + args.steps
    for batch in (int(b) for b in args.ref_batches.split(",")):
        stream = ParquetStream(path, "train", batch, mode="train", seed=0)
        batches = [b for _, b in zip(range(total), stream, strict=False)]
        if len(batches) < total:
            raise SystemExit(f"{path}: {len(batches)} batches of {batch}; need {total} (raise --rows)")
        rates: dict[str, list[float]] = {"ours": [], "ours_l2": []}
        ours_cpu: list[float] = []
        if deepctr is not None:
            rates |= {"deepctr": [], "deepctr_l2": [], "deepctr_fused_adam": []}
        for _ in range(args.repeats):
            rates["ours"].append(lightning_rate(ours(0.0), total, args.warmup, batches, ours_cpu))
            rates["ours_l2"].append(lightning_rate(ours(l2), total, args.warmup, batches))
            if deepctr is not None:
                for key, l2_theirs, fused in (("deepctr", 0.0, False), ("deepctr_l2", 1e-5, False),
                                              ("deepctr_fused_adam", 0.0, True)):
                    torch.manual_seed(0)
                    model = deepctr_deepfm(schema.vocab_sizes, args.ref_dim, hidden, l2_theirs, fused)
                    rates[key].append(deepctr_rate(model, batches, args.warmup))
        best = {k: max(v) for k, v in rates.items()}
        row: dict[str, object] = {f"{k}_samples_per_s": round(v) for k, v in best.items()}
        row["ours_macs_per_s"] = round(best["ours"] * out["macs_per_sample"])
        row["ours_cpu_samples_per_s"] = round(max(ours_cpu))  # per CPU second of this process
        if deepctr is not None:
            row["ratio"] = round(best["ours"] / best["deepctr"], 3)
            row["ratio_l2"] = round(best["ours_l2"] / best["deepctr_l2"], 3)
            row["ratio_vs_fused_adam"] = round(best["ours"] / best["deepctr_fused_adam"], 3)
        row["all_runs"] = {k: [round(r) for r in v] for k, v in rates.items()}
        out[f"batch_{batch}"] = row
    return out


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
    parser.add_argument("--ref-batches", default="256,4096", help="batch sizes of the reference_deepfm runs")
    parser.add_argument("--ref-dim", type=int, default=16)
    parser.add_argument("--ref-hidden", default="256,128", help="DNN widths of the reference DeepFMs")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference_deepfm runs")
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
    lightning_cpu: list[float] = []
    for _ in range(args.repeats):
        rates["plain"].append(plain_rate(plain(), batches, args.warmup))
        rates["lightning"].append(lightning_rate(retrain(), total, args.warmup, batches, lightning_cpu))
        dm = CTRDataModule(str(path), batch_size=args.batch, seed=0, num_workers=args.workers)
        rates["lightning_datamodule"].append(lightning_rate(retrain(), total, args.warmup, dm))
    best = {k: max(v) for k, v in rates.items()}
    macs = retrain().model.architecture.num_macs()
    reference = None if args.no_reference else reference_deepfm(args, path, schema)
    same_batch = (reference or {}).get(f"batch_{args.batch}")
    arithmetic = {"deepfm_macs_per_s": round(best["lightning"] * macs)}
    if same_batch:  # issue 21 target: >= 0.6
        arithmetic["ref_deepfm_macs_per_s"] = same_batch["ours_macs_per_s"]
        arithmetic["ratio"] = round(arithmetic["deepfm_macs_per_s"] / same_batch["ours_macs_per_s"], 3)
        ref_cpu = same_batch["ours_cpu_samples_per_s"] * reference["macs_per_sample"]
        arithmetic["ratio_per_cpu_second"] = round(max(lightning_cpu) * macs / ref_cpu, 3)  # a shared machine
    print(json.dumps({
        "bench": "train_deepfm",
        "fields": FIELDS,
        "params": params,
        "macs_per_sample": macs,
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
        "arithmetic_rate": arithmetic,
        "reference_deepfm": reference,
        "torch_threads": torch.get_num_threads(),
        "datamodule_workers": args.workers,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
