"""Retrain several models on one prepared dataset over K seeds each and tabulate them, through `autoias`.

    python -m autoias_pl.experiments.compare --data DIR --models NAME_OR_JSON [...] --seeds K --out DIR [--max-epochs E]

A model is a searched architecture JSON (`best_architecture.json`), an in-space baseline (`deepfm`, ...:
autoias_pl/baselines.py) or a published reference model (`ref:deepfm`, ...: autoias_pl/references.py);
`LABEL=MODEL` names its row. Every (model, seed) is `autoias fit` then `autoias test` of its `best.ckpt`
(configs/retrain.yaml, `--seed_everything` = the seed) in `--out/<label>/seed<s>/`. Written atomically to
`--out`: `results.md` and `results.csv` (per model: mean +- sample std over seeds of test AUC, raw and
calibrated logloss, ECE, parameters, multiply-adds per sample, training samples/s and epochs), `runs.csv` (one
row per run), `results.png` (test AUC vs parameters, error bars one std) and `reliability.png` (per model
the calibrated test reliability diagram, seeds pooled). Nothing imports this module (a CLI).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a program only (never on import): before torch loads OpenMP
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads thrash 2-core machines

import argparse
import csv
import io
import json
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from autoias_pl.calibration import reliability_figure
from autoias_pl.data.schema import Schema
from autoias_pl.errors import ConfigError, run_main
from autoias_pl.experiments.demo import cli, common
from autoias_pl.io import atomic_write, atomic_write_text

RETRAIN_CONFIGS = ["retrain.yaml"]


@dataclass
class Run:
    """One (model, seed): what its `test_metrics.json` and its fit say."""

    model: str
    architecture: str
    seed: int
    test_auc: float
    test_logloss: float
    test_logloss_calibrated: float
    test_ece: float
    params: int
    macs: int | None
    epochs: int
    samples_per_s: float
    fit_seconds: float
    best_epoch: int | None
    hit_max_epochs: bool
    monitor: str | None
    reliability: list[list[float]] = field(default_factory=list, repr=False)  # (3, bins) calibrated


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m autoias_pl.experiments.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared dataset folder (autoias-data prepare|synth)")
    p.add_argument("--models", nargs="+", required=True, metavar="[LABEL=]MODEL",
                   help="architecture JSON files, baseline names (deepfm, ...) or references (ref:deepfm, ...)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per model (default 3)")
    p.add_argument("--out", required=True, help="folder of the runs and the tables")
    p.add_argument("--max-epochs", type=int, default=None, help="default: configs/retrain.yaml's")
    p.add_argument("--data-config", default="data/synthetic.yaml",
                   help="configs/<this> for the data's batch sizes and workers (data_dir is --data)")
    p.add_argument("--trainer-config", default="trainer/cpu.yaml", help="configs/<this> (e.g. trainer/gpu.yaml)")
    p.add_argument("--retrain-config", action="append", default=[], metavar="YAML",
                   help="a config file applied after configs/retrain.yaml, e.g. a retraining recipe (repeatable)")
    p.add_argument("--lr", type=float, default=None, help="Adam lr (default: configs/retrain.yaml's 1e-3)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: the data config's)")
    p.add_argument("--dim", type=int, default=None, help="baseline_dim of baselines and references")
    p.add_argument("--hidden", type=int, default=None, help="baseline_hidden")
    p.add_argument("--layers", type=int, default=None, help="baseline_layers")
    p.add_argument("--limit-train-batches", type=float, default=None, help="trainer.limit_train_batches")
    p.add_argument("--overwrite", action="store_true", help="replace run folders of an earlier comparison")
    p.add_argument("--no-progress-bar", action="store_true")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    return args


def labelled(specs: list[str]) -> list[tuple[str, str]]:
    """(label, model) per `--models` entry; a JSON's label is its stem (its folder's for best_architecture)."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        label, sep, model = spec.partition("=")
        if not sep:
            model, path = spec, Path(spec)
            label = (path.parent.name or path.stem) if path.stem == "best_architecture" else path.stem
            label = spec if path.suffix != ".json" else label
        out.append((label, model))
    labels = [lab for lab, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"duplicate model labels {labels}; name them with LABEL=MODEL")
    return out


def folder(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label)


def run_one(args: argparse.Namespace, data: Path, out: Path, label: str, model: str, seed: int) -> Run:
    """`autoias fit` then `autoias test` (best.ckpt) of `model` with seed `seed` in out/<label>/seed<seed>."""
    parent = out / folder(label)
    version, run = f"seed{seed}", parent / f"seed{seed}"
    if run.exists():
        if not args.overwrite:
            raise FileExistsError(f"{run}: exists (an earlier comparison?); pass --overwrite or another --out")
        shutil.rmtree(run)
    extra = [str(Path(c).resolve()) if Path(c).is_file() else c for c in args.retrain_config]
    configs = [args.data_config, *RETRAIN_CONFIGS, *extra, args.trainer_config]
    o = common(SimpleNamespace(seed=seed, no_progress_bar=args.no_progress_bar), data, parent, version)
    o.append(f"--model.init_args.architecture={model}")
    for flag, value in (("model.init_args.optimizer.init_args.lr", args.lr), ("data.batch_size", args.batch_size),
                        ("model.init_args.baseline_dim", args.dim), ("model.init_args.baseline_hidden", args.hidden),
                        ("model.init_args.baseline_layers", args.layers)):
        if value is not None:
            o.append(f"--{flag}={value}")
    fit_only = [f"--trainer.max_epochs={args.max_epochs}"] if args.max_epochs is not None else []
    if args.limit_train_batches is not None:
        fit_only.append(f"--trainer.limit_train_batches={args.limit_train_batches:g}")
    start = time.perf_counter()
    fit = cli("fit", configs, o + fit_only)
    seconds = time.perf_counter() - start
    trainer = fit.trainer  # type: ignore[attr-defined]
    epochs = int(trainer.current_epoch)
    rows = Schema.load(data).rows["train"]
    samples = min(trainer.global_step * fit.datamodule.batch_size, rows * max(epochs, 1))  # type: ignore[attr-defined]
    cli("test", configs, o + [f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}"])
    m = json.loads((run / "test_metrics.json").read_text())
    return Run(label, model, seed, m["test/auc"], m["test/logloss"], m["test/logloss_calibrated"], m["test/ece"],
               m["params"], m.get("macs_per_sample"), epochs, samples / seconds, seconds, m.get("best_epoch"),
               bool(m.get("hit_max_epochs")), m.get("monitor"), m["reliability"]["calibrated"])


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


COLUMNS = ["model", "architecture", "seeds", "test_auc_mean", "test_auc_std", "test_logloss_mean",
           "test_logloss_std", "test_logloss_calibrated_mean", "test_logloss_calibrated_std", "test_ece_mean",
           "test_ece_std", "params", "macs_per_sample", "train_samples_per_s", "epochs", "hit_max_epochs"]


def summarize(runs: list[Run]) -> list[dict[str, object]]:
    """One row per model (in first-seen order), COLUMNS as keys."""
    rows = []
    for label in dict.fromkeys(r.model for r in runs):
        rs = [r for r in runs if r.model == label]
        auc, auc_sd = _mean_std([r.test_auc for r in rs])
        ll, ll_sd = _mean_std([r.test_logloss for r in rs])
        cal, cal_sd = _mean_std([r.test_logloss_calibrated for r in rs])
        ece, ece_sd = _mean_std([r.test_ece for r in rs])
        rows.append(dict(zip(COLUMNS, [label, rs[0].architecture, len(rs), auc, auc_sd, ll, ll_sd, cal, cal_sd,
                                       ece, ece_sd, rs[0].params, rs[0].macs,
                                       statistics.fmean(r.samples_per_s for r in rs),
                                       statistics.fmean(r.epochs for r in rs), sum(r.hit_max_epochs for r in rs)],
                             strict=True)))
    return rows


def tables(rows: list[dict[str, object]]) -> tuple[str, str]:
    """(markdown, csv) of the summary rows."""
    md = ["| model | test AUC | test logloss | calibrated logloss | ECE | parameters | MACs / sample | "
          "train samples/s | epochs | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        macs = "" if r["macs_per_sample"] is None else f"{r['macs_per_sample']:,}"
        md.append(f"| {r['model']} | {r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} | "
                  f"{r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f} | "
                  f"{r['test_logloss_calibrated_mean']:.4f} ± {r['test_logloss_calibrated_std']:.4f} | "
                  f"{r['test_ece_mean']:.4f} ± {r['test_ece_std']:.4f} | {r['params']:,} | {macs} | "
                  f"{r['train_samples_per_s']:,.0f} | {r['epochs']:.1f}{'*' if r['hit_max_epochs'] else ''} | "
                  f"{r['seeds']} |")
        w.writerow([f"{v:.6f}" if isinstance(v, float) else ("" if v is None else v) for v in r.values()])
    return "\n".join(md) + "\n", buf.getvalue()


def runs_csv(runs: list[Run]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = [f for f in Run.__dataclass_fields__ if f != "reliability"]
    w.writerow(fields)
    for r in runs:
        w.writerow(["" if getattr(r, f) is None else getattr(r, f) for f in fields])
    return buf.getvalue()


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    """Test AUC (mean, error bar one std) against parameters, one labelled point per model."""
    from matplotlib.figure import Figure  # no pyplot: no global backend is chosen

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.errorbar([r["params"]], [r["test_auc_mean"]], yerr=[r["test_auc_std"]], fmt="o", capsize=3)
        ax.annotate(str(r["model"]), (r["params"], r["test_auc_mean"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="test AUC (mean ± std over seeds)", title=title)
    ax.grid(True, alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def plot_reliability(runs: list[Run], path: Path, title: str) -> None:
    """The calibrated test reliability diagram of every model, its seeds' bins pooled."""
    curves: dict[str, torch.Tensor] = {}
    for r in runs:
        stats = torch.tensor(r.reliability, dtype=torch.float64)  # (3, bins)
        curves[r.model] = curves[r.model] + stats if r.model in curves else stats
    fig = reliability_figure(curves, title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def monitor_note(runs: list[Run]) -> str:
    """What selected the epochs, as the runs' fit summaries say (the monitor actually used)."""
    monitors = sorted({r.monitor for r in runs if r.monitor})
    capped = sum(r.hit_max_epochs for r in runs)
    note = f"epochs: trained before early stopping (on {' / '.join(monitors) or 'the configured monitor'})"
    return note + (f"; * {capped} run(s) hit max_epochs while still improving" if capped else "")


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """A known error (no dataset at --data, an earlier comparison in --out) is one line, exit 2."""
    args = parse_args(argv)
    return run_main("python -m autoias_pl.experiments.compare", lambda: _main(args))


def _main(args: argparse.Namespace) -> list[dict[str, object]]:
    data, out = Path(args.data), Path(args.out)
    schema = Schema.load(data)  # a SchemaError naming the folder before any run
    models = labelled(args.models)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = [run_one(args, data, out, label, model, seed) for label, model in models for seed in range(args.seeds)]
    rows = summarize(runs)
    md, csv_text = tables(rows)
    title = f"{data.name}: {schema.rows['train']:,} training rows, {len(schema.field_names)} fields"
    header = f"# Comparison on {data} ({title}), seeds 0..{args.seeds - 1}\n\n"
    notes = ("mean ± sample std over seeds; parameters and MACs (multiply-adds per sample, lookups free) of the "
             "model; calibrated logloss and ECE (15 equal-width bins): of the probabilities after the calibrator "
             "fitted on the validation split (configs/retrain.yaml's `calibration`); train samples/s: samples "
             f"trained / wall time of `autoias fit` (validation included); {monitor_note(runs)}. `ref:` rows are "
             "the published models (autoias_pl/references.py), plain baseline names their in-space analogues "
             "(autoias_pl/baselines.py).")
    total = time.perf_counter() - start
    atomic_write_text(out / "results.md", header + md + f"\n{notes}\n\nTotal wall time {total:.0f} s.\n")
    atomic_write_text(out / "results.csv", csv_text)
    atomic_write_text(out / "runs.csv", runs_csv(runs))
    plot(rows, out / "results.png", title)
    plot_reliability(runs, out / "reliability.png", f"{data.name}: test reliability (calibrated)")
    print("\n" + md)
    print(f"wrote {out / 'results.md'}, results.csv, runs.csv, results.png and reliability.png in {total:.0f} s")
    return rows


if __name__ == "__main__":
    main()
