"""Two CPU processes (gloo) run a few search batches: every rank must end with identical state.

The run is a separate script (`tests/ddp_worker.py`) because Lightning's DDP launcher re-executes sys.argv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.parametrize("reward_stream", [False, True], ids=["fixed_reward_set", "reward_stream"])
def test_two_ranks_stay_identical(tmp_path: Path, reward_stream: bool) -> None:
    cmd = [sys.executable, str(WORKER), str(tmp_path), "--batches", "4", "--hang-timeout", "150"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(cmd + (["--reward-stream"] if reward_stream else []), env=env, capture_output=True,
                              text=True, timeout=180)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"DDP search run hung for 180 s (a collective on one rank only?)\n{e.stderr}")
    assert done.returncode == 0, done.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == 2 and r0["pid"] != r1["pid"]
    assert r0["sampled"] == r1["sampled"] and len(r0["sampled"]) == 4 * 3 + 3 * 4  # students + reward archs
    assert len(set(r0["sampled"])) > 1
    for part in ("supernet", "generator"):
        for name, value in r0[part].items():
            assert torch.equal(value, r1[part][name]), f"{part}.{name} differs across ranks"
    assert r0["baseline"] == r1["baseline"] and r0["sq_ema"] == r1["sq_ema"]
    assert r0["batch_count"] == r1["batch_count"] == 4
    assert r0["global_step"] == r1["global_step"] == 2 + 3 * 3  # 1 warm-up batch, then 3 steps per batch
    assert r0["best_score"] == r1["best_score"]
    assert (tmp_path / "best_architecture.json").is_file()
