"""What a search costs in retrainings (issue 21, target 1: <= 10). Prints ONE JSON object.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_search_cost.py [--rows 100000]

On the demo's planted data (`python -m autoias_pl.experiments.demo`: 100k rows, 10 fields, vocabularies 50..500, 3
rank-1 planted pairs), in this one process and with `--threads` torch threads, the wall time of
- the search: configs/search/cpu.yaml through the demo's `search` step (its warm-up of 8 epochs of the train
  rows, then the generator), and
- one retraining of `ref:deepfm`: `autoias fit` with configs/retrain.yaml as it is (dim 16, DNN 400 x 3,
  Adam 1e-3, early stopping), on the same data,
and their ratio; also per CPU second of this process (`*_cpu`: robust to other processes on a shared
machine). Also the planted pairs the search selected (each with its function), as the demo reports.
Slow: the search alone takes minutes (about 8 at 1 thread on an idle 2-core machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoias_pl.data.schema import Schema
from autoias_pl.data.synth import synthesize
from autoias_pl.experiments import demo
from autoias_pl.space import Architecture


def retrain(args: argparse.Namespace, data: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `autoias fit -c configs/retrain.yaml` of ref:deepfm (its sizes and lr, as the
    config has them; the demo's own retraining shrinks the baselines to the data's scale) on `data`."""
    overrides = demo.common(args, data, out, "ref-deepfm") + ["--model.init_args.architecture=ref:deepfm"]
    start, cpu = time.perf_counter(), time.process_time()
    demo.cli("fit", ["data/synthetic.yaml", "retrain.yaml", "trainer/cpu.yaml"], overrides)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    cli = p.parse_args()
    torch.set_num_threads(cli.threads)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON only
        out = cli.out or Path(tmp) / "cost"
        args = demo.parse_args(["--out", str(out), "--rows", str(cli.rows), "--seed", str(cli.seed),
                                "--no-progress-bar"])
        demo.prepare_out(out)
        data = out / "data"
        schema = synthesize(data, args.rows, args.fields, planted_pairs=args.planted_pairs, seed=args.seed,
                            rank=demo.PAIR_RANK, vocab_range=demo.VOCAB_RANGE)
        cpu = time.process_time()
        arch_path, search_seconds = demo.search(args, data, out)
        search_cpu = time.process_time() - cpu
        retrain_seconds, retrain_cpu = retrain(args, data, out)
        arch = Architecture.load(arch_path, schema_hash=Schema.load(data).hash)
        planted = {"x".join(q) for q in schema.extra["synthetic"]["planted_pairs"]}
        n, names, func = arch.space.num_fields, arch.space.vector_names, arch.indices("func")
        chosen = {names[v]: arch.space.functions[func[v - n]] for v in arch.layout.selected_vectors if v >= n}
    print(json.dumps({
        "rows": cli.rows, "threads": torch.get_num_threads(), "search_seconds": round(search_seconds, 1),
        "ref_deepfm_retrain_seconds": round(retrain_seconds, 1),
        "search_over_retrain": round(search_seconds / retrain_seconds, 2),
        "search_cpu_seconds": round(search_cpu, 1), "ref_deepfm_retrain_cpu_seconds": round(retrain_cpu, 1),
        "search_over_retrain_cpu": round(search_cpu / retrain_cpu, 2),
        "planted": sorted(planted), "planted_selected": {q: chosen.get(q, "off") for q in sorted(planted)},
        "pairs_selected": len(chosen), "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
