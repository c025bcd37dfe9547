"""GPU figures at the paper's defaults on Criteo-shaped synthetic data. Prints ONE JSON object.

    python benchmarks/gpu_check.py            # on a CUDA GPU (bash benchmarks/gpu_check.sh runs the tests first)
    python benchmarks/gpu_check.py --smoke    # tiny sizes on the CPU, < 60 s: keeps this script from rotting

Setting (full run): 39 fields, ~1 M ids in all (vocabularies spread geometrically from 4 to 250k), the paper's
space (emb/proj dims 4..128, all four functions, 5 layers of 64/128/256, no read-out target), N = 9 students,
M = 4 reward architectures on a reward batch of 2048 validation rows per step, Adam (fused), batch 2048 and 4096.
Measured through a Lightning Trainer on in-memory batches, timed per batch (CUDA-synchronised) after warm-up,
median:

- `teacher`: the teacher's BCE step alone (forward, backward, Adam);
- `search`: the full search step (teacher, soft labels, 9 KD students, 4 reward architectures, generator step);
- `retrain`: the `deepfm` baseline (39 x 16 embeddings, 741 product pairs at the read-out, MLP 3 x 400) through
  AutoIASRetrain, eager and with `torch.compile` of its model (the supernet is not compiled: it would recompile
  for every architecture), the first compiled step's time (compilation) reported apart;
each in fp32 (`32-true`) and bf16 (`bf16-mixed`), with the peak GPU memory of the run (weights, gradients,
optimizer state and activations: `torch.cuda.max_memory_allocated`). `stream`: steady rows/s of the DataModule's
shuffled train loader over a parquet copy (1 M rows, 39 fields, batch 4096) with 0, 4 and 8 workers (and the
seconds to its first batch), beside the samples/s the steps above consume.

Runs are ordered by importance; one that would start past `--budget-s` is listed under `skipped`, one that
fails under `errors` (the JSON is printed either way).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from common import cached_synth  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from lightning.pytorch import Callback, Trainer

from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.retrain import AutoIASRetrain
from autoias_pl.search import AutoIASSearch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable as a script from anywhere
from autoias_pl.data.memory import MemoryDataModule  # noqa: E402

PAPER_SPACE = {"emb_dims": (4, 8, 16, 32, 64, 128), "proj_dims": (4, 8, 16, 32, 64, 128), "num_layers": 5,
               "hidden_units": (64, 128, 256), "output_insertion": False}
SMOKE_SPACE = {"emb_dims": (2, 4), "proj_dims": (2, 4), "num_layers": 2, "hidden_units": (8, 16),
               "output_insertion": False}
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


class TimedSearch(AutoIASSearch):
    """AutoIASSearch whose training step is the plain teacher step while `teacher_only` is set."""

    teacher_only = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if not self.teacher_only:
            return super().training_step(batch, batch_idx)
        x, y = batch["train"] if isinstance(batch, dict) else batch
        opt, _ = self.optimizers()
        loss = F.binary_cross_entropy_with_logits(self.supernet(x, self.teacher), y)
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return None


class StepTimer(Callback):
    """Wall seconds of every training batch (synchronised on CUDA) and the run's peak GPU memory."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.peak: int | None = None

    @staticmethod
    def _sync(module: Any) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_start(self, trainer: Trainer, module: Any) -> None:
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)

    def on_train_batch_start(self, trainer: Trainer, module: Any, *args: Any) -> None:
        self._sync(module)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, module: Any, *args: Any) -> None:
        self._sync(module)
        self.times.append(time.perf_counter() - self._t)

    def on_train_end(self, trainer: Trainer, module: Any) -> None:
        if module.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(module.device)


def vocab_sizes(fields: int, smoke: bool) -> list[int]:
    """Criteo-like spread: geometric from 4 to 250k ids (~1 M in all at 39 fields); 50 each in the smoke."""
    if smoke:
        return [50] * fields
    return [int(v) for v in np.geomspace(4, 250_000, fields).round()]


def random_rows(rows: int, vocab: list[int], seed: int) -> CTRBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, v, (rows,), generator=g) for v in vocab], 1)  # (R, n)
    return CTRBatch(x, (torch.rand(rows, generator=g) < 0.25).float())  # (R, n), (R,)


def fit(module: Any, dm: Any, accelerator: str, precision: str, batches: int) -> StepTimer:
    timer = StepTimer()
    Trainer(accelerator=accelerator, devices=1, precision=precision, max_epochs=1, limit_train_batches=batches,
            limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[timer]).fit(module, datamodule=dm)
    module.trainer = None  # the finished trainer (and its optimizer state) can go before the next run's peak
    return timer


def figures(timer: StepTimer, batch: int, warmup: int, **extra: Any) -> dict[str, Any]:
    step = statistics.median(timer.times[warmup:])
    out = {"samples_per_s": round(batch / step, 1), "step_s": round(step, 5), "timed_steps": len(timer.times) - warmup,
           "peak_gpu_mem_gb": None if timer.peak is None else round(timer.peak / 2**30, 3)}
    return {**out, **extra}


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def stream_rates(path: Path, batch: int, workers: list[int]) -> dict[str, dict[str, float]]:
    """Per number of workers: steady rows/s of the DataModule's shuffled train loader (from its first batch
    to the end of the epoch, best of 2 epochs) and the seconds to that first batch (worker start-up)."""
    out = {}
    for w in workers:
        loader = CTRDataModule(str(path), batch_size=batch, num_workers=w).train_dataloader()
        best, first = 0.0, math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            it = iter(loader)
            next(it)
            t1 = time.perf_counter()
            rows = sum(b.labels.numel() for b in it)
            best, first = max(best, rows / max(time.perf_counter() - t1, 1e-9)), min(first, t1 - t0)
        out[str(w)] = {"rows_per_s": round(best), "first_batch_s": round(first, 3)}
    return out


def pytest_summary(args: argparse.Namespace) -> dict[str, Any] | None:
    """What gpu_check.sh's pytest run reported (exit code, counts, skip reasons, failures), if it ran."""
    if args.pytest_rc is None:
        return None
    out: dict[str, Any] = {"rc": args.pytest_rc, "files": args.pytest_files}
    try:
        root = ET.parse(args.pytest_junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        out.update(n, passed=n["tests"] - n["failures"] - n["errors"] - n["skipped"])
        cases = suite.iter("testcase")
        reasons, failed = set(), []
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            for s in case.findall("skipped"):
                reasons.add(s.get("message", ""))
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
        out.update(skip_reasons=sorted(reasons), failed=failed)
    except (OSError, ET.ParseError, AttributeError, TypeError) as e:
        out["junit_error"] = f"{type(e).__name__}: {e}"
    return out


class Check:
    """The result being built, the time budget, and `run`: one measured run that may be skipped or fail."""

    def __init__(self, result: dict[str, Any], budget_s: float, partial: Path | None, device: str) -> None:
        self.result, self.budget_s, self.partial, self.device = result, budget_s, partial, device
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save_partial(self, running: str | None = None) -> None:
        """The JSON so far to `partial` (what gpu_check.sh prints if a time limit kills this process)."""
        if self.partial is not None:
            note = {"incomplete": f"stopped during {running} (killed by a time limit?)"} if running else {}
            self.partial.write_text(json.dumps({**self.result, **note, "wall_s": round(self.elapsed(), 1)}))

    def run(self, label: str, min_left_s: float, fn: Any) -> Any:
        """fn() unless fewer than min_left_s seconds of the budget are left; an error is recorded, not raised."""
        if self.elapsed() > self.budget_s - min_left_s:
            self.result["skipped"].append(label)
            return None
        self.save_partial(label)
        try:
            return fn()
        except Exception as e:  # one failing run must not cost the others their figures
            self.result["errors"].append(f"{label}: {type(e).__name__}: {str(e)[:300]}")
            print(traceback.format_exc(), file=sys.stderr)
            return None
        finally:
            free(self.device)
            self.save_partial()


def supernet_runs(check: Check, cfg: dict[str, Any], train: CTRBatch, val: CTRBatch) -> None:
    """Teacher step and full search step, fp32 and bf16, per batch size: one supernet reused by every run."""
    search = TimedSearch.from_flat(cfg["names"], cfg["vocab"], "", **cfg["space"], num_students=9,
                                   num_reward_archs=4, reward_rows=0)
    check.result["setting"]["supernet_params"] = sum(q.numel() for q in search.supernet.parameters())
    for phase in ("teacher", "search"):
        for prec, precision in PRECISIONS.items():
            for bs in cfg["batch_sizes"]:
                def one(phase: str = phase, precision: str = precision, bs: int = bs) -> dict[str, Any]:
                    search.teacher_only = phase == "teacher"
                    dm = MemoryDataModule(train, val, batch_size=bs, reward_stream=True,
                                          reward_batch_size=cfg["reward_batch"])
                    return figures(fit(search, dm, cfg["accelerator"], precision, cfg["batches"]), bs, cfg["warmup"])
                out = check.run(f"{phase}/{prec}/{bs}", 20, one)
                if out:
                    check.result[phase].setdefault(prec, {})[str(bs)] = out


def retrain_runs(check: Check, cfg: dict[str, Any], train: CTRBatch, val: CTRBatch) -> None:
    """Retraining the deepfm baseline, eager then compiled (compilation is the slow part), fp32 and bf16."""
    for compiled in (False, True):
        mode = "compiled" if compiled else "eager"
        for prec, precision in PRECISIONS.items():
            for bs in cfg["batch_sizes"]:
                def one(precision: str = precision, bs: int = bs, compiled: bool = compiled) -> dict[str, Any]:
                    torch.manual_seed(0)
                    module = AutoIASRetrain(cfg["names"], cfg["vocab"], "", architecture="deepfm")
                    if compiled:
                        torch._dynamo.reset()  # every compiled run compiles afresh (no shape or dtype carried over)
                        module.model = torch.compile(module.model, backend=cfg["compile_backend"])
                    dm = MemoryDataModule(train, val, batch_size=bs)
                    timer = fit(module, dm, cfg["accelerator"], precision, cfg["batches"])
                    extra: dict[str, Any] = {"params": sum(q.numel() for q in module.parameters())}
                    if compiled:
                        extra["first_step_s"] = round(timer.times[0], 3)
                    return figures(timer, bs, cfg["warmup"], **extra)
                out = check.run(f"retrain/{mode}/{prec}/{bs}", 90 if compiled and not cfg["smoke"] else 15, one)
                if out:
                    check.result["retrain"].setdefault(mode, {}).setdefault(prec, {})[str(bs)] = out


def beside_consumption(result: dict[str, Any]) -> None:
    """The stream's rows/s next to the samples/s the measured steps consume."""
    consumption = {f"{k}/{prec}/{bs}": v["samples_per_s"] for k in ("search", "teacher")
                   for prec, by_bs in result[k].items() for bs, v in by_bs.items()}
    consumption.update({f"retrain/{mode}/{prec}/{bs}": v["samples_per_s"]
                        for mode, by_prec in result["retrain"].items() for prec, by_bs in by_prec.items()
                        for bs, v in by_bs.items()})
    stream = result["stream"]
    if not stream or not consumption:
        return
    fastest = max(consumption, key=consumption.get)
    stream["fastest_consumer"] = {"run": fastest, "samples_per_s": consumption[fastest]}
    stream["headroom_by_workers"] = {w: round(r / consumption[fastest], 2)
                                     for w, r in stream["rows_per_s_by_workers"].items()}
    stream["search_step_consumes"] = {k: v for k, v in consumption.items() if k.startswith("search/")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, a few steps (< 60 s)")
    p.add_argument("--batch-sizes", type=int, nargs="+")
    p.add_argument("--steps", type=int, help="timed steps per run")
    p.add_argument("--warmup", type=int, help="untimed steps per run (the first compiled step among them)")
    p.add_argument("--workers", type=int, nargs="+", help="DataLoader workers of the stream runs")
    p.add_argument("--budget-s", type=float, default=300.0, help="start no run after this many seconds")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "autoias-bench",
                   help="where the parquet copy for the stream runs is written once")
    p.add_argument("--pytest-rc", type=int, help="(gpu_check.sh) exit code of the CUDA tests")
    p.add_argument("--pytest-junit", type=Path, help="(gpu_check.sh) their junit XML")
    p.add_argument("--pytest-files", nargs="*", default=[])
    p.add_argument("--partial", type=Path, help="rewrite the JSON so far to this file after every run")
    args = p.parse_args()
    smoke = args.smoke
    cuda = torch.cuda.is_available() and not smoke
    fields = 6 if smoke else 39
    cfg: dict[str, Any] = {
        "smoke": smoke, "device": "cuda" if cuda else "cpu", "accelerator": "gpu" if cuda else "cpu",
        "batch_sizes": args.batch_sizes or ([64, 128] if smoke else [2048, 4096]),
        "warmup": args.warmup or (1 if smoke else 3), "steps": args.steps or (2 if smoke else 10),
        "workers": args.workers if args.workers is not None else ([0, 1] if smoke else [0, 4, 8]),
        "space": SMOKE_SPACE if smoke else PAPER_SPACE, "vocab": vocab_sizes(fields, smoke),
        "names": [f"C{i}" for i in range(fields)], "reward_batch": 64 if smoke else 2048,
        "compile_backend": "eager" if smoke else "inductor",  # eager: dynamo's tracing, no C++ toolchain needed
    }
    cfg["batches"] = cfg["warmup"] + cfg["steps"]
    torch.set_num_threads(1 if smoke else max(1, min(8, os.cpu_count() or 1)))
    result: dict[str, Any] = {
        "check": "gpu_check", "smoke": smoke, "device": cfg["device"],
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "lightning": lightning.__version__,
        "tests": pytest_summary(args),
        "setting": {"fields": fields, "pairs": fields * (fields - 1) // 2, "vocab_total": sum(cfg["vocab"]),
                    "space": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["space"].items()},
                    "students": 9, "reward_archs": 4, "reward_batch": cfg["reward_batch"],
                    "batch_sizes": cfg["batch_sizes"], "timed_steps": cfg["steps"], "warmup_steps": cfg["warmup"],
                    "optimizer": "Adam(lr=1e-3, fused=True)", "compile_backend": cfg["compile_backend"],
                    "method": "Trainer on in-memory batches, per-batch wall time (CUDA-synchronised), median"},
        "teacher": {}, "search": {}, "retrain": {}, "stream": {}, "skipped": [], "errors": [],
    }
    if not cuda and not smoke:
        result["errors"].append("no CUDA device: run on a GPU machine, or --smoke for the tiny CPU run")
        print(json.dumps(result))
        sys.exit(2)
    check = Check(result, args.budget_s, args.partial, cfg["device"])

    # 1. the data stream from parquet on disk, first (it needs no GPU and is quick)
    rows = 20_000 if smoke else 1_000_000
    bs = max(cfg["batch_sizes"])
    rates = check.run("stream", 10, lambda: stream_rates(cached_synth(args.cache, rows, fields), bs, cfg["workers"]))
    if rates:
        result["stream"] = {"rows": rows, "fields": fields, "batch_size": bs,
                            "rows_per_s_by_workers": {w: r["rows_per_s"] for w, r in rates.items()},
                            "first_batch_s_by_workers": {w: r["first_batch_s"] for w, r in rates.items()}}
    # 2.-3. the steps, on in-memory batches of Criteo-shaped random ids
    train = random_rows(bs * cfg["batches"], cfg["vocab"], 0)
    val = random_rows(max(cfg["reward_batch"] * cfg["batches"], 4096), cfg["vocab"], 1)
    supernet_runs(check, cfg, train, val)
    retrain_runs(check, cfg, train, val)
    beside_consumption(result)
    result["wall_s"] = round(check.elapsed(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
