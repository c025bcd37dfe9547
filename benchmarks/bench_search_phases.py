"""Two phases of a search step at a given thread count, on configs/search/cpu.yaml's space. Prints ONE JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_search_phases.py --threads 1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_search_phases.py --threads 2

Space: widths 4/8/16, the four functions, 2 layers of 16/32/64, function blocks, over the demo's planted data
(10 fields, vocabularies 50..500). Medians over `--repeats` timings of:
- `students_step_s`: the student phase of one batch as `AutoIASSearch._student_phase` runs it: `--students`
  uniform architectures (cpu.yaml: 9), their KD losses on a batch of `--batch` rows (cpu.yaml: 512), one backward,
  one fused Adam step;
- `reward_ms_per_arch_whole`: the reward forwards as `AutoIASSearch.reward_auc` runs them, one forward per
  architecture over all `--rows` rows (cpu.yaml: 16 architectures on 8,192; the proof's CI size: 8 on 4,096),
  and `reward_ms_per_arch_chunked` the same in row chunks of `--chunk-rows` (not in the package: faster here at
  one thread, not inside a search; BENCHMARKS.md), with the largest difference of their logits (0.0: same bits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from autoias_pl.data.stream import read_rows
from autoias_pl.data.synth import synthesize
from autoias_pl.search.reward import kd_student_loss
from autoias_pl.space import Architecture, SearchSpace
from autoias_pl.supernet.supernet import Supernet

SPACE = {"emb_dims": (4, 8, 16), "proj_dims": (4, 8, 16), "functions": ("product", "concat", "plus", "max"),
         "num_layers": 2, "hidden_units": (16, 32, 64)}


def median_time(f: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--students", type=int, default=9)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--archs", type=int, default=16)
    p.add_argument("--chunk-rows", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        schema = synthesize(Path(tmp) / "data", max(args.rows, args.batch * 20) * 5 // 4 + 100, fields=10,
                            planted_pairs=3, seed=0, rank=1, vocab_range=(50, 500))  # 80% of it: the training split
        train = read_rows(Path(tmp) / "data", "train", max(args.rows, args.batch * 20))
    torch.manual_seed(0)
    net = Supernet(SearchSpace(tuple(schema.field_names), **SPACE), schema.vocab_sizes, init_std=0.1)
    g = torch.Generator().manual_seed(0)

    # the student phase: fresh uniform students per step, batches in turn (as in a search)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    soft = torch.full((args.batch,), 0.3)  # the teacher's probabilities (their values do not change the cost)
    step = iter(range(10**9))

    def students() -> None:
        b = next(step) % 20
        x, y = train.features[b * args.batch:(b + 1) * args.batch], train.labels[b * args.batch:(b + 1) * args.batch]
        archs = [Architecture.uniform_random(net.space, g) for _ in range(args.students)]
        total = sum(kd_student_loss(net(x, a), soft, y, 0.5)[0] for a in archs)
        (total / len(archs)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    students_s = median_time(students, args.repeats * 5, warmup=10)

    # the reward forwards, one over all rows against row chunks
    x = train.features[:args.rows]
    archs = [Architecture.uniform_random(net.space, g) for _ in range(args.archs)]
    chunks = x.split(args.chunk_rows)

    @torch.no_grad()
    def whole() -> torch.Tensor:
        return torch.stack([net(x, a) for a in archs])  # (M, R)

    @torch.no_grad()
    def chunked() -> torch.Tensor:
        return torch.stack([torch.cat([net(c, a) for c in chunks]) for a in archs])  # (M, R)

    diff = float((whole() - chunked()).abs().max())
    whole_ms, chunked_ms = (median_time(f, args.repeats) * 1e3 / len(archs) for f in (whole, chunked))
    print(json.dumps({
        "threads": args.threads, "students": args.students, "batch": args.batch,
        "students_step_s": round(students_s, 4), "rows": x.shape[0], "archs": len(archs),
        "chunk_rows": args.chunk_rows, "reward_ms_per_arch_whole": round(whole_ms, 2),
        "reward_ms_per_arch_chunked": round(chunked_ms, 2), "chunk_speedup": round(whole_ms / chunked_ms, 3),
        "max_abs_logit_diff": diff,
    }))


if __name__ == "__main__":
    main()
