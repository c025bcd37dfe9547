"""Operator calls per full search step (`AutoIASSearch.training_step`) at the bench_search.py setting, counted
with torch.profiler on CPU. Prints ONE JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_launches.py --threads 1

39 synthetic fields, 741 pairs, bench_search.py's CPU space, batch 2048, N = 9 students, M = 4 reward
architectures on 2048 reward rows, fused Adam, through a Trainer. `--steps` search steps after `--warmup`
are profiled one by one (their architectures differ, so do their counts; mean, min and max are reported).

- `aten_ops`: every aten op the step dispatches (nested ones included, forward and backward);
- `top_level_ops`: aten ops called from Python or an autograd node, not from inside another aten op (what the
  host pays dispatch overhead for);
- `kernel_like`: the ops that compute: per top-level op, the lowest ops below it that are not a view,
  metadata, allocation or no-op (`NO_KERNEL`), plus matmuls and reductions that compute beside such a child
  (`SELF_KERNEL`: addmm copies its bias, then multiplies). On a GPU each is about one kernel launch; a
  CPU op can be a few CUDA kernels or none, so this estimates the launch count, it is not a CUDA trace;
- `host_syncs`: ops that hand a device value to the host (`_local_scalar_dense` under item/bool/float,
  `nonzero`, ...): each is a stream synchronisation on a GPU. Not counted: the item() per parameter of the
  CPU fused Adam (its CUDA kernel reads no step count on the host), and `.tolist()`/`.cpu()` of a CPU tensor
  (no op is dispatched; on a GPU each would be a sync).
Each is split by phase (teacher, students, generator = sampling + reward scoring + REINFORCE step; plan =
building the index tensors of an architecture not seen before, nested in the other phases and counted
apart; other = Lightning around the phases), and the most frequent kernel-like ops are listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from autoias_pl.data.stream import read_rows
from autoias_pl.data.synth import synthesize
from autoias_pl.search import AutoIASSearch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable as a script from anywhere
from autoias_pl.data.memory import MemoryDataModule  # noqa: E402
from benchmarks.bench_search import SPACE  # noqa: E402

PHASES = ("teacher", "students", "generator", "plan")
# leaf ops that launch no kernel: views, metadata, allocation (an allocation is not a launch)
NO_KERNEL = {
    "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::reshape", "aten::t", "aten::transpose",
    "aten::permute", "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze",
    "aten::alias", "aten::detach", "aten::detach_", "aten::empty", "aten::empty_strided", "aten::empty_like",
    "aten::resize_", "aten::lift_fresh", "aten::split", "aten::split_with_sizes", "aten::unbind", "aten::chunk",
    "aten::narrow", "aten::flatten", "aten::unflatten", "aten::view_as", "aten::expand_as", "aten::numpy_T",
    "aten::_reshape_alias", "aten::set_", "aten::result_type", "aten::is_nonzero", "aten::requires_grad_",
    "aten::_has_compatible_shallow_copy_type", "aten::contiguous", "aten::type_as", "aten::movedim",
    "aten::to", "aten::resolve_conj", "aten::resolve_neg", "aten::conj", "aten::_conj",  # as leaves: no-ops
    "aten::is_same_size", "aten::size", "aten::stride", "aten::dim", "aten::new_empty", "aten::new_empty_strided",
}
SELF_KERNEL = {"aten::addmm", "aten::addmm_", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addbmm",
               "aten::sum", "aten::mean", "aten::cumsum", "aten::_fused_adam_"}
SYNCS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim",
         "aten::unique_consecutive", "aten::masked_select", "aten::bincount"}


class PhaseRecorded(AutoIASSearch):
    """AutoIASSearch with a profiler range around each phase and around building a plan."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        build = self.supernet._build_plan

        def recorded(arch: Any) -> Any:
            with record_function("phase::plan"):
                return build(arch)

        self.supernet._build_plan = recorded  # instance attribute: the supernet's code is untouched

    def _teacher_phase(self, *args: Any) -> Any:
        with record_function("phase::teacher"):
            return super()._teacher_phase(*args)

    def _student_phase(self, *args: Any) -> Any:
        with record_function("phase::students"):
            return super()._student_phase(*args)

    def _generator_phase(self, *args: Any) -> Any:
        with record_function("phase::generator"):
            return super()._generator_phase(*args)


class StepProfiler(Callback):
    """Profiles each training batch from `start` on, one profile per batch, and keeps its counts."""

    def __init__(self, start: int) -> None:
        self.start, self.counts, self._prof = start, [], None

    def on_train_batch_start(self, trainer: Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx >= self.start:
            self._prof = profile(activities=[ProfilerActivity.CPU])
            self._prof.__enter__()

    def on_train_batch_end(self, trainer: Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self.counts.append(count(self._prof.events()))
            self._prof = None


def _phase(event: Any) -> str:
    p = event.cpu_parent
    while p is not None:
        if p.name.startswith("phase::"):
            return p.name.removeprefix("phase::")
        p = p.cpu_parent
    return "other"  # Lightning's own work around the step (logging, hooks)


def _aten_children(e: Any) -> list[Any]:
    return [c for c in e.cpu_children if c.name.startswith("aten::")]


def _kernels(e: Any, names: Counter[str]) -> int:
    """Kernel-like ops at and below aten op `e` (see the module docstring); counts them by name in `names`."""
    below = sum(_kernels(c, names) for c in _aten_children(e))
    own = e.name not in NO_KERNEL and (below == 0 or e.name in SELF_KERNEL)
    if own:
        names[e.name] += 1
    return below + own


def _in_cpu_fused_adam(e: Any) -> bool:
    """CPU fused Adam reads every parameter's step count with item(); its CUDA kernel does not (no sync)."""
    p = e.cpu_parent
    while p is not None and p.name.startswith("aten::"):
        if p.name == "aten::_fused_adam_":
            return True
        p = p.cpu_parent
    return False


KINDS = ("aten_ops", "top_level_ops", "kernel_like", "host_syncs")


def count(events: Any) -> dict[str, Any]:
    """Profiler events of one step -> counts overall and per phase, and the kernel-like ops by name."""
    total = dict.fromkeys(KINDS, 0)
    by_phase = {p: dict.fromkeys(KINDS, 0) for p in (*PHASES, "other")}
    names: Counter[str] = Counter()
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        top = e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")
        hits = {"aten_ops": 1, "top_level_ops": int(top), "kernel_like": _kernels(e, names) if top else 0,
                "host_syncs": int(e.name in SYNCS and not _in_cpu_fused_adam(e))}
        phase = _phase(e)
        for k, n in hits.items():
            total[k] += n
            by_phase[phase][k] += n
    return {**total, "by_phase": by_phase, "top_kernel_like": dict(names.most_common(20))}


def summarize(counts: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[int]) -> dict[str, float]:
        return {"mean": round(statistics.mean(values), 1), "min": min(values), "max": max(values)}

    out: dict[str, Any] = {k: stats([c[k] for c in counts]) for k in KINDS}
    out["by_phase_mean"] = {p: {k: round(statistics.mean(c["by_phase"][p][k] for c in counts), 1) for k in KINDS}
                            for p in (*PHASES, "other")}
    names: Counter[str] = Counter()
    for c in counts:
        names.update(c["top_kernel_like"])
    out["top_kernel_like_mean"] = {k: round(v / len(counts), 1) for k, v in names.most_common(20)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=3, help="profiled search steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fields", type=int, default=39)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        rows = args.batch_size * (batches + 2) * 10 // 8
        schema = synthesize(data, rows, args.fields, planted_pairs=10, seed=0)
        dm = MemoryDataModule(read_rows(data, "train", rows), read_rows(data, "val", rows),
                              batch_size=args.batch_size)
    model = PhaseRecorded.from_flat(schema.field_names, schema.vocab_sizes, schema.hash, reward_rows=2048, **SPACE)
    prof = StepProfiler(args.warmup)
    Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[prof]).fit(model, datamodule=dm)
    pairs = args.fields * (args.fields - 1) // 2
    print(json.dumps({
        "fields": args.fields, "pairs": pairs,
        "space": {k: list(v) if isinstance(v, tuple) else v for k, v in SPACE.items()},
        "batch_size": args.batch_size, "threads": args.threads, "students": model.num_students,
        "reward_archs": model.num_reward_archs, "reward_rows": 2048, "profiled_steps": len(prof.counts),
        "torch": torch.__version__, "method": "torch.profiler (CPU) per training batch; counts per full search step",
        "per_step": summarize(prof.counts),
    }))


if __name__ == "__main__":
    main()
