"""Supernet step costs on a Criteo-shaped schema (CPU, threads pinned). Prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_supernet.py [--space default|cpu] [--threads 1 2]

Measures, per thread count, in wall and process-CPU seconds: the teacher's forward+backward (median,
interleaved with the students); the mean forward+backward of `--archs`
uniform-random architectures (students) and its ratio to the teacher; the forward of the standalone model
of one uniform-random (mid-size) architecture vs the supernet forward of that architecture; and the
activation memory autograd keeps per sample (teacher, students).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from autoias_pl.space import Architecture, SearchSpace
from autoias_pl.supernet import Supernet
from autoias_pl.supernet.extract import extract_model

CPU_SPACE = {"emb_dims": (4, 8, 16, 32), "proj_dims": (4, 8, 16, 32), "hidden_units": (64, 128, 256)}


def timed(fn: Callable[[], object], reps: int, warmup: bool = True) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of `reps` calls (after one warm-up call). CPU time is the robust
    one on a shared machine: other processes stealing the cores inflate wall time, not this one's CPU time."""
    if warmup:
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def step(net: Supernet, x: torch.Tensor, y: torch.Tensor, arch: Architecture) -> None:
    """One forward + backward of `arch` (grads cleared, as in a training step)."""
    net.zero_grad(set_to_none=True)
    torch.nn.functional.binary_cross_entropy_with_logits(net(x, arch), y).backward()


def saved_bytes(net: Supernet, x: torch.Tensor, arch: Architecture) -> int:
    """Bytes of the non-parameter tensors autograd keeps for backward in one forward of `arch`."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, arch)
    params = {q.untyped_storage().data_ptr() for q in net.parameters()}
    return sum(v for k, v in seen.items() if k not in params)


def activation_memory(net: Supernet, space: SearchSpace, x: torch.Tensor, archs: int) -> dict:
    """Saved-for-backward bytes per sample (slope between batch 64 and 256) and the fixed part."""
    rng = torch.Generator().manual_seed(0)
    sets = {"teacher": [Architecture.teacher(space)],
            "student": [Architecture.uniform_random(space, rng) for _ in range(archs)]}
    out = {}
    for name, arches in sets.items():
        small = statistics.mean(saved_bytes(net, x[:64], a) for a in arches)
        large = statistics.mean(saved_bytes(net, x[:256], a) for a in arches)
        per_sample = (large - small) / 192
        out[name] = {"bytes_per_sample": round(per_sample), "fixed_bytes": round(small - 64 * per_sample)}
    return out


def measure(net: Supernet, space: SearchSpace, x: torch.Tensor, y: torch.Tensor, archs: int, reps: int) -> dict:
    """Teacher and student steps interleaved (teacher, student 1, teacher, student 2, ...) so that load from
    other processes hits both alike; forward of one mid-size architecture, supernet vs standalone."""
    teacher = Architecture.teacher(space)
    rng = torch.Generator().manual_seed(0)
    students = [Architecture.uniform_random(space, rng) for _ in range(archs)]
    step(net, x, y, teacher)  # warm-up
    t_teacher, t_students = [], []
    for a in students:
        net.plan(a)  # index tensors are built once per architecture and cached; not part of a step
        t_teacher.append(timed(lambda: step(net, x, y, teacher), 1, warmup=False))
        t_students.append(timed(lambda a=a: step(net, x, y, a), 1, warmup=False))
    mid = students[0]
    model = extract_model(net, mid)
    with torch.no_grad():
        t_super = timed(lambda: net(x, mid), reps)
        t_model = timed(lambda: model(x), reps)
    out: dict = {"mid_arch_params": mid.num_params(net.vocab_sizes)}
    for i, clock in enumerate(("wall", "cpu")):
        teacher_s = statistics.median(t[i] for t in t_teacher)
        student_s = statistics.mean(t[i] for t in t_students)
        out[clock] = {
            "teacher_fwd_bwd_s": round(teacher_s, 4),
            "student_fwd_bwd_mean_s": round(student_s, 4),
            "student_over_teacher": round(student_s / teacher_s, 3),
            "mid_supernet_fwd_s": round(t_super[i], 4),
            "mid_standalone_fwd_s": round(t_model[i], 4),
            "supernet_over_standalone": round(t_super[i] / t_model[i], 2),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fields", type=int, default=39)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--space", choices=("default", "cpu"), default="default")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    names = tuple(f"C{i}" for i in range(args.fields))
    space = SearchSpace(names, **(CPU_SPACE if args.space == "cpu" else {}))
    net = Supernet(space, [args.vocab] * args.fields)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, args.vocab, (args.batch, args.fields), generator=g)  # (B, n)
    y = torch.randint(0, 2, (args.batch,), generator=g).float()  # (B,)
    result = {
        "space": args.space, "fields": args.fields, "pairs": space.num_pairs, "vocab_per_field": args.vocab,
        "batch": args.batch, "supernet_params": sum(q.numel() for q in net.parameters()),
        "torch": torch.__version__, "by_threads": {},
    }
    result["saved_activations"] = activation_memory(net, space, x, 5)
    for threads in args.threads:
        torch.set_num_threads(threads)
        result["by_threads"][str(threads)] = measure(net, space, x, y, args.archs, args.reps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
