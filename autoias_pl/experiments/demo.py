"""`make demo`: the whole AutoIAS flow on synthetic data with planted pairs, through the `autoias` CLI.

    python -m autoias_pl.experiments.demo --out runs/demo [--rows 100000] [--max-epochs 10] [--quick]

1. synthesize a dataset whose clicks depend on a few planted field pairs (known Bayes-optimal ceiling);
2. search (configs/search/cpu.yaml) -> `search/best_architecture.json`, then finalize (`python -m
   autoias_pl.search.finalize --k 3 --widen --recipe ...`): the search's pick and the generator's top models,
   each also at its widest widths, retrained by the demo's recipe, the best val AUC kept ->
   `search/final_architecture.json` (`--finalize-k 0`: the search's pick as it is);
3. retrain the chosen architecture, the in-space baselines lr, fm, dnn, deepfm and the published
   reference models ref:fm, ref:deepfm from scratch (configs/retrain.yaml);
4. test each on the test split; print and write the comparison (`results.md`, `results.csv`).
Every step is the `autoias` command a user would type (`autoias_pl.cli.run([...])`); each run's resolved
config, checkpoints and TensorBoard logs are under `--out/<model>/`.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a program only (never on import): before torch loads OpenMP
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads thrash 2-core machines

import argparse
import csv
import io
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from autoias_pl.auc import auc
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.data.synth import SynthModel, synthesize
from autoias_pl.errors import run_main
from autoias_pl.io import atomic_write_text
from autoias_pl.space import Architecture

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASELINE_NAMES = ("lr", "fm", "dnn", "deepfm", "ref:fm", "ref:deepfm")  # in-space analogues, then as published
MARKER = ".autoias-demo"  # marks a folder the demo owns (and may wipe on the next run)
# Vocabularies of 50..500 ids and rank-1 planted pairs, as tests/test_search_proof.py: the crosses are worth
# ~0.04 AUC to a DNN over field embeddings at 100k rows (at 10..30 ids they were worth 0.0035), and still
# learnable by the supernet on a CPU.
VOCAB_RANGE = (50, 500)
PAIR_RANK = 1
T = TypeVar("T")


@dataclass
class Result:
    model: str
    test_auc: float
    test_logloss: float
    params: int | None
    train_seconds: float | None
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m autoias_pl.experiments.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="run folder (replaced if it holds an earlier demo)")
    p.add_argument("--rows", type=int, default=100_000, help="synthetic rows (80/10/10 train/val/test)")
    p.add_argument("--fields", type=int, default=10)
    p.add_argument("--planted-pairs", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=10, help="retraining epochs (early stopping on val/auc)")
    p.add_argument("--lr", type=float, default=0.01,
                   help="retraining Adam lr (configs/retrain.yaml has the paper's 1e-3, for Criteo-sized data)")
    p.add_argument("--search-epochs", type=int, default=None, help="default: configs/search/cpu.yaml's")
    p.add_argument("--finalize-k", type=int, default=3,
                   help="finalize's candidates: the search's pick, then the generator's most likely models, each "
                        "also at its widest widths; 0: retrain the search's pick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of every step, finalize's subprocesses too (default: torch's, one per "
                        "core); the demo's steps are small ops: on 2 cores under OMP_WAIT_POLICY=PASSIVE, 1 thread ran "
                        "it in 7 min instead of 9-10 (docs/usage.md, 'Numbers of threads')")
    p.add_argument("--quick", action="store_true", help="tiny sizes for tests: 20k rows, 2 epochs, no bar")
    p.add_argument("--no-progress-bar", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick:
        args.rows, args.max_epochs = min(args.rows, 10_000), min(args.max_epochs, 2)
        args.search_epochs, args.no_progress_bar = args.search_epochs or 2, True
        args.finalize_k = min(args.finalize_k, 1)
    return args


def prepare_out(out: Path) -> None:
    """Create `out`; replace it only if an earlier demo made it (never a folder of something else)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise FileExistsError(f"{out}: exists and was not made by the demo; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m autoias_pl.experiments.demo; rerunning the demo replaces this folder\n")


def cli(subcommand: str, configs: list[str], overrides: list[str]) -> object:
    """Run `autoias <subcommand> -c configs/... <overrides>` in-process; returns the LightningCLI."""
    from autoias_pl.cli import run

    args = [subcommand]
    for c in configs:
        args += ["-c", str(CONFIGS / c)]
    print(f"\n$ autoias {subcommand} " + " ".join(f"-c configs/{c}" for c in configs) + " " + " ".join(overrides))
    return run(args + overrides)


def common(args: argparse.Namespace, data: Path, out: Path, version: str) -> list[str]:
    """Overrides shared by every run: the data folder, the run folder `out/<version>`, seed (the data's shuffle
    seed too, so that `--seed N` changes the data order as well), progress bar."""
    o = [f"--data.data_dir={data}", f"--data.seed={args.seed}", f"--seed_everything={args.seed}",
         f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=",
         f"--trainer.logger.init_args.version={version}"]
    return o + (["--trainer.enable_progress_bar=false"] if args.no_progress_bar else [])


SEARCH_CONFIGS = ["data/synthetic.yaml", "search/cpu.yaml", "trainer/cpu.yaml"]  # the recipe, warm-up included


def search(args: argparse.Namespace, data: Path, out: Path) -> tuple[Path, float]:
    """configs/search/cpu.yaml as it is (its warm-up is in epochs: nothing to recompute for this data), through
    `build_search` (the run `autoias fit` makes); --quick shrinks it for tests."""
    from autoias_pl.cli import build_search

    overrides = common(args, data, out, "search") + [f"--model.init_args.seed={args.seed}"]
    if args.search_epochs is not None:
        overrides.append(f"--trainer.max_epochs={args.search_epochs}")
    if args.quick:  # the generator learns after 3 of ~32 batches (a warm-up epoch would leave it untrained)
        overrides += ["--model.init_args.reward.rows=1024", "--model.init_args.distill.num_students=3",
                      "--model.init_args.distill.uniform_students=1", "--model.init_args.reward.num_archs=4",
                      "--model.init_args.schedule.warmup_epochs=0.1"]
    print("\n$ autoias fit " + " ".join(f"-c configs/{c}" for c in SEARCH_CONFIGS) + " " + " ".join(overrides))
    start = time.perf_counter()
    model, datamodule, trainer = build_search([CONFIGS / c for c in SEARCH_CONFIGS], overrides)
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    path = out / "search" / "best_architecture.json"
    if not path.is_file():
        raise RuntimeError(f"{path}: the search wrote no architecture (did validation run?)")
    return path, seconds


RETRAIN_CONFIGS = ["data/synthetic.yaml", "retrain.yaml", "trainer/cpu.yaml"]


def final_choice(args: argparse.Namespace, data: Path, pick: Path) -> tuple[Path, str]:
    """`finalize` of the search in pick's folder, its candidates retrained exactly as step 3 retrains the
    searched model: (the chosen architecture's file, a note). `--finalize-k 0`: the pick itself."""
    if args.finalize_k < 1:
        return pick, ""
    from autoias_pl.search.finalize import finalize

    recipe = [CONFIGS / c for c in RETRAIN_CONFIGS]
    overrides = [f"--model.init_args.optimizer.init_args.lr={args.lr}", f"--trainer.max_epochs={args.max_epochs}"]
    overrides += ["--trainer.enable_progress_bar=false"] if args.no_progress_bar else []
    print(f"    finalize: {args.finalize_k} candidates (the search's pick, then the generator's most likely), each "
          "also at its widest widths")
    start = time.perf_counter()
    report = finalize(pick.parent, data, k=args.finalize_k, seed=args.seed, batch_size=None, widen=True,
                      recipe=recipe, recipe_overrides=overrides)
    won = report["candidates"][report["chosen"]]
    note = (f"; finalized in {time.perf_counter() - start:.0f} s: {won['source']} "
            f"{report['chosen'] + 1} of {len(report['candidates'])}")
    return Path(report["out"]), note


def folder(name: str) -> str:
    """The run folder of a model: its name with ':' (ref:deepfm) as '-'."""
    return name.replace(":", "-")


def retrain(args: argparse.Namespace, data: Path, out: Path, name: str, architecture: str) -> Result:
    """fit then test one architecture in `out/<folder(name)>`; the test reads `best.ckpt` of the fit."""
    configs = RETRAIN_CONFIGS
    overrides = common(args, data, out, folder(name)) + [f"--model.init_args.architecture={architecture}",
                                                 f"--model.init_args.optimizer.init_args.lr={args.lr}"]
    if name != "autoias":  # baselines and references at the sizes of the synthetic data's scale
        overrides += ["--model.init_args.baseline_dim=8", "--model.init_args.baseline_hidden=64",
                      "--model.init_args.baseline_layers=2"]
    start = time.perf_counter()
    cli("fit", configs, overrides + [f"--trainer.max_epochs={args.max_epochs}"])
    seconds = time.perf_counter() - start
    ckpt = out / folder(name) / "checkpoints" / "best.ckpt"
    cli("test", configs, overrides + [f"--ckpt_path={ckpt}"])
    metrics = json.loads((out / folder(name) / "test_metrics.json").read_text())
    # the calibrated probabilities (Platt on the validation split): what the retrained model serves
    return Result(name, metrics["test/auc"], metrics["test/logloss_calibrated"], metrics["params"], seconds)


def ceilings(data: Path) -> list[Result]:
    """The true click model on the test split: Bayes-optimal, and its first-order part alone."""
    schema = Schema.load(data)
    model = SynthModel.from_schema(schema)  # the schema records the vocabulary range
    batch = read_rows(data, "test", schema.rows["test"])
    x, y = batch.features.numpy(), batch.labels.numpy().astype(np.float64)
    first = 1.0 / (1.0 + np.exp(-model.first_order_logit(x)))
    rate = schema.extra["synthetic"]["positive_rate_by_split"]["train"]
    first = first * (rate / first.mean())  # without the pair terms the base rate shifts: recentre it
    rows = []
    for name, prob, note in (("bayes-optimal", model.probability(x), "true click probabilities"),
                             ("first-order only", first, "true model without its planted pairs")):
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        rows.append(Result(name, auc(prob, y), logloss, None, None, note))
    return rows


def pair_report(arch_path: Path, data: Path) -> str:
    planted = {"x".join(p) for p in Schema.load(data).extra["synthetic"]["planted_pairs"]}
    arch = Architecture.load(arch_path)
    chosen = set(arch.summary()["selected_pairs"])
    found = sorted(planted & chosen)
    return (f"planted pairs found by the search: {len(found)}/{len(planted)} {found}; "
            f"selected pairs {len(chosen)} of {arch.space.num_pairs}: {sorted(chosen)}")


def table(results: list[Result]) -> tuple[str, str]:
    """(markdown, csv) of the comparison."""
    md = ["| model | test AUC | test logloss | parameters | training s | note |", "|---|---|---|---|---|---|"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "test_auc", "test_logloss", "params", "train_seconds", "note"])
    for r in results:
        params = "" if r.params is None else f"{r.params:,}"
        secs = "" if r.train_seconds is None else f"{r.train_seconds:.1f}"
        md.append(f"| {r.model} | {r.test_auc:.4f} | {r.test_logloss:.4f} | {params} | {secs} | {r.note} |")
        w.writerow([r.model, f"{r.test_auc:.6f}", f"{r.test_logloss:.6f}", r.params or "",
                    "" if r.train_seconds is None else f"{r.train_seconds:.2f}", r.note])
    return "\n".join(md) + "\n", buf.getvalue()


def duration(seconds: float) -> str:
    """'540 s (9 min 0 s)' for 539.6: whole seconds, rounded once (not '8 min 60 s')."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes * 60 + rest} s ({minutes} min {rest} s)"


def main(argv: list[str] | None = None) -> list[Result]:
    """`make demo`; a known error (an --out the demo did not make, a bad option) is one line, exit 2."""
    args = parse_args(argv)
    return run_main("python -m autoias_pl.experiments.demo", lambda: _with_threads(args.threads, lambda: _main(args)))


def _with_threads(n: int | None, body: Callable[[], T]) -> T:
    """body() at `n` torch intra-op threads (finalize's subprocesses follow it), the caller's count restored after
    (the demo also runs inside the test suite). None: body() as it is."""
    if n is None:
        return body()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return body()
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace) -> list[Result]:
    out = Path(args.out)
    prepare_out(out)
    start = time.perf_counter()
    data = out / "data"
    print(f"1/4 synthesizing {args.rows:,} rows, {args.fields} fields, {args.planted_pairs} planted pairs -> {data}")
    schema = synthesize(data, args.rows, args.fields, planted_pairs=args.planted_pairs, seed=args.seed,
                        rank=PAIR_RANK, vocab_range=VOCAB_RANGE)
    print(f"    planted pairs: {schema.extra['synthetic']['planted_pairs']}")
    print("2/4 searching (configs/search/cpu.yaml)")
    pick, search_seconds = search(args, data, out)
    arch_path, final_note = final_choice(args, data, pick)
    print("3/4 retraining the searched architecture and the baselines", ", ".join(BASELINE_NAMES))
    results = [retrain(args, data, out, "autoias", str(arch_path))]
    results[0].note = f"searched in {search_seconds:.0f} s{final_note}"
    results += [retrain(args, data, out, name, name) for name in BASELINE_NAMES]
    print("4/4 results")
    results += ceilings(data)
    md, csv_text = table(results)
    pairs = pair_report(arch_path, data)
    total = time.perf_counter() - start
    header = (f"# AutoIAS demo: {args.rows:,} synthetic rows, {args.fields} fields, "
              f"{args.planted_pairs} planted pairs (seed {args.seed})\n\n")
    notes = ("test logloss: of the calibrated probabilities a retrained model serves (configs/retrain.yaml's "
             "calibrator, fitted on the validation split). training s: wall time of `autoias fit` (validation every "
             "epoch; checkpoint and early stopping on configs/retrain.yaml's criterion, at most --max-epochs "
             "epochs); the search's own time is in its note. lr, fm, dnn, deepfm are the "
             "in-space analogues (autoias_pl/baselines.py); ref-fm, ref-deepfm the models as published "
             "(autoias_pl/references.py).")
    atomic_write_text(out / "results.md", header + md + f"\n{notes}\n\n{pairs}\n\nTotal wall time {total:.0f} s.\n")
    atomic_write_text(out / "results.csv", csv_text)
    print("\n" + md + "\n" + pairs)
    print(f"\nwrote {out / 'results.md'} and {out / 'results.csv'} in {duration(total)}")
    print(f"curves and architecture views: tensorboard --logdir {out}")
    return results


if __name__ == "__main__":
    main()
