"""Throughput of `autoias-serve score` on raw Criteo-layout TSV, DeepFM, beside its two halves.

Writes a raw Criteo-layout file (`bench_prepare.write_criteo_tsv`: power-law hex categoricals, vocabularies
up to 100k), prepares its first `--train-rows` rows (the vocabularies), exports an untrained DeepFM of the
retraining defaults (dim 16, 3 x 400; throughput does not depend on the weights) as a bundle, then
measures on the whole file, with `--threads` torch and pyarrow threads:
- end to end: `score` (read, parse, encode, model, parquet output), in a fresh subprocess (its peak RSS;
  also on a quarter of the file, so the ratio shows whether memory grows with the rows);
- parse + encode alone: `read_blocks` + `Encoder.encode_block`;
- model alone: the exported program on already encoded ids, `--batch-size` rows per call.
`--runtime onnx` scores with the bundle's model.onnx through onnxruntime instead of the `.pt2` program
(the `onnx` extra). Prints ONE JSON object (rows/s of each, CPU seconds, load average).

    .venv/bin/python benchmarks/bench_score.py [--rows 200000] [--threads 2] [--batch-size 1024] [--runtime pt2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def set_threads(threads: int) -> None:
    import pyarrow as pa
    import torch

    torch.set_num_threads(threads)
    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)


def child(bundle: str, raw: str, out: str, threads: int, batch_size: int, runtime: str) -> None:
    """Run in a subprocess: score `raw` end to end; print seconds, CPU seconds, rows and peak RSS."""
    set_threads(threads)
    from autoias_pl.serve.score import score

    t0, c0 = time.perf_counter(), time.process_time()
    report = score(bundle, [raw], out, batch_size=batch_size, runtime=runtime)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                      "load_seconds": report.load_seconds, "rows": report.rows, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def end_to_end(bundle: Path, raw: Path, out: Path, threads: int, batch_size: int, runtime: str) -> dict[str, object]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", str(bundle), str(raw), str(out), "--threads", str(threads),
           "--batch-size", str(batch_size), "--runtime", runtime]
    load = os.getloadavg()[0]
    r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return {"rows": r["rows"], "seconds": round(r["seconds"], 3), "rows_per_s": round(r["rows"] / r["seconds"]),
            "cpu_seconds": round(r["cpu_seconds"], 2), "load_bundle_seconds": round(r["load_seconds"], 2),
            "peak_rss_mib": round(r["rss_mib"], 1),
            "load_avg_1m_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}


def halves(bundle: Path, raw: Path, batch_size: int, model_rows: int, runtime: str) -> dict[str, object]:
    """parse + encode alone over the file; the model alone on its first `model_rows` encoded rows."""
    import torch

    from autoias_pl.data.readers import read_blocks
    from autoias_pl.serve.score import Scorer

    scorer = Scorer(bundle, runtime)
    t0, c0, rows, kept = time.perf_counter(), time.process_time(), 0, []
    for block in read_blocks(raw, scorer.format):
        ids = scorer.encoder.encode_block(block)
        rows += len(ids)
        if sum(len(k) for k in kept) < model_rows:
            kept.append(np.ascontiguousarray(ids))
    parse = {"rows": rows, "seconds": round(time.perf_counter() - t0, 3),
             "rows_per_s": round(rows / (time.perf_counter() - t0)), "cpu_seconds": round(time.process_time() - c0, 2)}
    ids = np.concatenate(kept)[:model_rows]
    scorer.predict(ids[:batch_size], batch_size)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    scorer.predict(ids, batch_size)
    seconds = time.perf_counter() - t0
    return {"parse_encode": parse,
            "model": {"rows": len(ids), "seconds": round(seconds, 3), "rows_per_s": round(len(ids) / seconds),
                      "cpu_seconds": round(time.process_time() - c0, 2), "torch_threads": torch.get_num_threads()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="raw rows scored")
    ap.add_argument("--train-rows", type=int, default=200_000, help="rows the vocabularies are prepared from")
    ap.add_argument("--model-rows", type=int, default=50_000, help="rows of the model-alone measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--runtime", choices=("pt2", "onnx"), default="pt2", help="the model that scores")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", nargs=3, metavar=("BUNDLE", "RAW", "OUT"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.threads, args.batch_size, args.runtime)
    from bench_prepare import head_lines, write_criteo_tsv

    from autoias_pl.baselines import baseline
    from autoias_pl.ctr_model import CTRModel
    from autoias_pl.data.prepare import prepare
    from autoias_pl.data.readers import criteo_format
    from autoias_pl.serve.bundle import write_bundle
    from autoias_pl.space import FUNCTIONS, SearchSpace

    set_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        raw, train, quarter = work / "raw.tsv", work / "train.tsv", work / "quarter.tsv"
        write_criteo_tsv(raw, args.rows, seed=1)
        write_criteo_tsv(train, args.train_rows, seed=0)
        head_lines(raw, quarter, args.rows // 4)
        schema = prepare(work / "data", criteo_format(), train=[train], min_count=10, progress=False)
        space = SearchSpace(tuple(schema.field_names), (16,), (16,), FUNCTIONS, 3, (400,), True, schema.hash)
        model = CTRModel(baseline("deepfm", space, dim=16, hidden=400), schema.vocab_sizes)
        bundle = write_bundle(work / "bundle", model, work / "data", schema.hash, {},
                              onnx="require" if args.runtime == "onnx" else "skip")
        raw_mb = round(raw.stat().st_size / 1e6, 1)
        os.sync()
        e2e = end_to_end(bundle, raw, work / "preds.parquet", args.threads, args.batch_size, args.runtime)
        e2e_quarter = end_to_end(bundle, quarter, work / "preds_q.parquet", args.threads, args.batch_size,
                                 args.runtime)
        parts = halves(bundle, raw, args.batch_size, args.model_rows, args.runtime)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "benchmark": "autoias-serve score, raw criteo tsv, deepfm (dim 16, 3 x 400)", "runtime": args.runtime,
        "rows_per_s": e2e["rows_per_s"], "parse_encode_rows_per_s": parts["parse_encode"]["rows_per_s"],
        "model_rows_per_s": parts["model"]["rows_per_s"],
        "rss_ratio_full_vs_quarter": round(e2e["peak_rss_mib"] / e2e_quarter["peak_rss_mib"], 3),
        "end_to_end": e2e, "end_to_end_quarter": e2e_quarter, **parts,
        "params": sum(p.numel() for p in model.parameters()), "max_vocab_size": max(schema.vocab_sizes),
        "raw_mb": raw_mb,
        "threads": {"torch": args.threads, "pyarrow_cpu": args.threads, "OMP_WAIT_POLICY": "PASSIVE"},
        "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }))


if __name__ == "__main__":
    main()
