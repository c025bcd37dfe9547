"""The whole real-log comparison on a prepared folder: search -> top-k finalize -> compare -> table.

    PYTHONPATH=. python benchmarks/real_log.py --data /work/data/ml100k/prepared --out runs/real [--seeds 3]

1. search: `autoias fit -c configs/data/synthetic.yaml -c <--config> -c configs/trainer/cpu.yaml` on --data
   into `<out>/search` (skipped when that folder already holds a finished search: rerunning resumes there);
2. finalize (`--k` > 0): `python -m autoias_pl.search.finalize --widen --recipe configs/retrain.yaml
   configs/trainer/cpu.yaml` retrains the search's pick and the generator's most likely models, each also at
   its widest widths, from scratch by the retraining recipe and keeps the best on val AUC
   (`<out>/search/final_architecture.json`; `--finalize-epochs N`: N epochs each instead, `--no-widen`);
3. compare: `python -m autoias_pl.experiments.compare` retrains the searched architecture(s) (`autoias` = the finalized
   one, `autoias-pick` = the search's own pick when finalize chose another) and the baselines (in-space
   deepfm, fm, dnn, lr and the published ref:deepfm, ref:dcnv2) over --seeds seeds with the same recipe;
4. `<out>/real_log.md`: the comparison table and the verdict of the goal (searched >= best baseline + 0.002
   test AUC, mean over seeds, with test logloss no worse). Prints one JSON object (the verdict).

Every step runs as a subprocess with OMP_NUM_THREADS=--threads (1 on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoias_pl.io import atomic_write_text  # noqa: E402

BASELINES = ["deepfm", "fm", "dnn", "lr", "ref:deepfm", "ref:dcnv2"]
RECIPE = ["configs/retrain.yaml", "configs/trainer/cpu.yaml"]  # finalize's candidates retrain as compare's models do
SEARCHED = ("autoias", "autoias-pick")
GOAL_AUC = 0.002


def run(cmd: list[str], threads: int, log: Path) -> float:
    """Run `cmd` from the repository root with `threads` OpenMP threads, output to `log`; its wall seconds."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
                        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"real_log: {cmd[2]} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def search(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The search run folder and its wall seconds (None when an earlier run's folder was reused)."""
    folder = args.out / "search"
    if (folder / "best_architecture.json").is_file() and (folder / "checkpoints" / "last.ckpt").is_file():
        return folder, None
    cmd = [sys.executable, "-m", "autoias_pl.cli", "fit", "-c", "configs/data/synthetic.yaml", "-c", str(args.config),
           "-c", "configs/trainer/cpu.yaml", f"--data.data_dir={args.data}", f"--seed_everything={args.seed}",
           f"--model.init_args.seed={args.seed}", f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.name=",
           "--trainer.logger.init_args.version=search", "--trainer.enable_progress_bar=false", *args.search_arg]
    return folder, run(cmd, args.threads, args.out / "search.log")


def finalize(args: argparse.Namespace, folder: Path) -> tuple[Path, float]:
    how = ["--epochs", str(args.finalize_epochs)] if args.finalize_epochs else ["--recipe", *RECIPE]
    cmd = [sys.executable, "-m", "autoias_pl.search.finalize", "--search", str(folder), "--data", str(args.data),
           "--k", str(args.k), *how, "--seed", str(args.seed), "--batch-size", str(args.batch_size),
           *(["--widen"] if args.widen else [])]
    seconds = run(cmd, args.threads, args.out / "finalize.log")
    return folder / "final_architecture.json", seconds


def compare(args: argparse.Namespace, models: list[str]) -> float:
    cmd = [sys.executable, "-m", "autoias_pl.experiments.compare", "--data", str(args.data), "--models", *models,
           "--seeds", str(args.seeds), "--batch-size", str(args.batch_size), "--out", str(args.out / "compare"),
           "--no-progress-bar", "--overwrite"]
    if args.max_epochs is not None:
        cmd += ["--max-epochs", str(args.max_epochs)]
    return run(cmd, args.threads, args.out / "compare.log")


def verdict(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The searched row(s) against the best baseline by mean test AUC."""
    base = [r for r in rows if r["model"] not in SEARCHED]
    best = max(base, key=lambda r: float(r["test_auc_mean"]))
    out: dict[str, Any] = {"best_baseline": best["model"], "best_baseline_auc": float(best["test_auc_mean"]),
                           "best_baseline_logloss": float(best["test_logloss_mean"]),
                           "best_baseline_params": int(best["params"])}
    for r in rows:
        if r["model"] in SEARCHED:
            auc, ll = float(r["test_auc_mean"]), float(r["test_logloss_mean"])
            out[r["model"]] = {"auc": auc, "logloss": ll, "params": int(r["params"]),
                               "auc_gap": auc - out["best_baseline_auc"],
                               "logloss_gap": ll - out["best_baseline_logloss"],
                               "goal_met": auc >= out["best_baseline_auc"] + GOAL_AUC
                               and ll <= out["best_baseline_logloss"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared folder (autoias-data prepare)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, default=Path("configs/search/cpu_real.yaml"))
    p.add_argument("--search-arg", action="append", default=[], help="an extra override of the search (repeatable)")
    p.add_argument("--k", type=int, default=3, help="top-k finalize candidates (0: retrain the search's pick)")
    p.add_argument("--finalize-epochs", type=int, default=0,
                   help="train finalize's candidates this many epochs (0, default: each by the retraining recipe "
                        "to its own stop, as compare retrains)")
    p.add_argument("--no-widen", dest="widen", action="store_false",
                   help="finalize without each candidate's widest twin (default: with)")
    p.add_argument("--widen", dest="widen", action="store_true", default=True, help=argparse.SUPPRESS)  # the default
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=None, help="compare's retraining epochs (default: its recipe)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    folder, search_s = search(args)
    pick = folder / "best_architecture.json"
    models, final_s = [f"autoias={pick}"], None
    if args.k > 0:
        final, final_s = finalize(args, folder)
        report = json.loads(final.with_suffix(".report.json").read_text())
        models = [f"autoias={final}"] + ([f"autoias-pick={pick}"] if report["candidates"][report["chosen"]]["source"]
                                         != "search" else [])
    compare_s = compare(args, models + BASELINES)
    with (args.out / "compare" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    result = {"data": str(args.data), "config": str(args.config), "seeds": args.seeds, "search_seconds": search_s,
              "finalize_seconds": final_s, "compare_seconds": round(compare_s, 1), **verdict(rows)}
    table = (args.out / "compare" / "results.md").read_text()
    atomic_write_text(args.out / "real_log.md", table + "\n```json\n" + json.dumps(result, indent=1) + "\n```\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
