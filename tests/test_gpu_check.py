"""The GPU check (`bash benchmarks/gpu_check.sh`) must not rot between GPU runs: its `--smoke` run (tiny sizes,
on the CPU, the CUDA tests skipped) prints one JSON object with every figure the GPU run prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                TMPDIR=str(tmp_path))


def test_smoke_run_prints_one_json_object_with_every_figure(tmp_path: Path) -> None:
    cmd = ["bash", "benchmarks/gpu_check.sh", "--smoke", "--cache", str(tmp_path / "cache")]
    done = subprocess.run(cmd, cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-2000:]
    out = json.loads(lines[0])
    assert out["check"] == "gpu_check" and out["smoke"] is True and out["device"] == "cpu"
    assert out["errors"] == [] and out["skipped"] == [] and "incomplete" not in out, out
    tests = out["tests"]
    assert tests["rc"] == 0 and tests["failed"] == [] and tests["files"] == ["tests/test_cuda.py"]
    assert tests["tests"] >= 10
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"] and any("CUDA" in r for r in tests["skip_reasons"])
    sizes = [str(b) for b in out["setting"]["batch_sizes"]]
    run_keys = {"samples_per_s", "step_s", "timed_steps", "peak_gpu_mem_gb"}
    for phase in ("teacher", "search"):
        for prec in ("fp32", "bf16"):
            assert set(out[phase][prec]) == set(sizes)
            for run in out[phase][prec].values():
                assert run_keys <= set(run) and run["samples_per_s"] > 0 and run["timed_steps"] >= 1
    for mode in ("eager", "compiled"):
        for prec in ("fp32", "bf16"):
            assert set(out["retrain"][mode][prec]) == set(sizes)
            for run in out["retrain"][mode][prec].values():
                assert run_keys | {"params"} <= set(run) and run["samples_per_s"] > 0
                assert ("first_step_s" in run) == (mode == "compiled")
    stream = out["stream"]
    assert set(stream["rows_per_s_by_workers"]) == {"0", "1"} == set(stream["headroom_by_workers"])
    assert set(stream["first_batch_s_by_workers"]) == {"0", "1"}
    assert min(stream["rows_per_s_by_workers"].values()) > 0 and stream["fastest_consumer"]["samples_per_s"] > 0
    assert set(stream["search_step_consumes"]) == {f"search/{p}/{b}" for p in ("fp32", "bf16") for b in sizes}
    assert out["wall_s"] < 60  # the smoke's own budget (--smoke), beside pytest's start in gpu_check.sh


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
def test_full_run_without_cuda_is_a_json_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cache", str(tmp_path)], cwd=ROOT,
                          env=env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and "no CUDA device" in out["errors"][0]
