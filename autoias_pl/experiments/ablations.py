"""The ablations of paper section 4.4 on one prepared dataset, as figures, tables and a results file.

    python -m autoias_pl.experiments.ablations --data DIR --out DIR [--budget-minutes N] [--seeds K]
                                   [--studies beta,students,sampler,reward_archs]

Every run is the current search (`AutoIASSearch`) on the whole-space CPU recipe, configs/search/cpu.yaml (read
into `BASE["model"]` as flat keywords; the plan sets the run's length and warm-up), launched as `autoias fit`
launches it (`autoias_pl.cli.build_search`), with only what a study varies overridden (`STUDIES`):

- beta (4.4.1, Fig. 3): the soft/hard weight of the students' KD loss, 0 = no KD;
- students (4.4.2, Fig. 4): the number N of students trained per batch;
- sampler (4.4.3, Fig. 5): the generator against uniform random sampling, in the paper's "simplest
  setting" (beta = 0, one student per batch);
- reward_archs (4.4.4, Fig. 6): the number M of architectures scored per generator step (with the EMA
  baseline of eq. 23 for every M: the recipe's leave-one-out baseline is undefined at M = 1).

All runs of a plan train the same number of rows (equal budget), validated at the same `checks` points,
the first `warmup_fraction` of the batches (the recipe's share: cpu.yaml's 8 warm-up of 11 epochs) with
uniform students and no generator step (its validation points
score the teacher: their candidate val AUC is NaN, left out of the AUC statistics). `--budget-minutes`
sizes them: the pieces of a search step are timed on the data (`calibrate`), and the largest number of
batches is taken for which the estimated time of all runs to do fits (`size_runs`; over several epochs
only if the training split is too small). `--train-rows` sets the rows instead; `--plan-only` prints the
sizing and the estimates and trains nothing.
At each validation point a `StudentLoss` callback records the supernet's mean BCE on `eval_rows` fixed
validation rows of `eval_archs` fixed uniformly drawn architectures ("supernet validation loss of sampled
students") beside the module's val/auc and val/logloss of its candidate (the searched architecture:
`module.candidate()` scored on the whole validation split with inherited weights).

Written to --out: `records/<study>/<value>-seed<k>.json` (one finished run, atomically; a rerun skips it, and
a run whose settings equal a finished one of another study, e.g. beta = 0.5 and N = 9, is copied, not
retrained), `plan.json` (the sizing: kept on rerun so resumed runs stay comparable), `<study>.png` (the
two curves, mean and +- one std over seeds), `results.json` (tables and mean curves) and `report.md`
(the tables, mean +- std over seeds, and for each study the paper's claim against what the numbers show;
`commentary.md` in --out, if present, is appended verbatim). Progress goes to stderr: a line per
validation point and per run, with the estimated time of each study (from a calibration of the forward
and backward costs, rescaled by the measured time of the first run). No package module imports this one
(a CLI); the benchmark takes its SPACE and RECIPE.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a program only (never on import): before torch loads OpenMP
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads thrash 2-core machines

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from autoias_pl.auc import auc
from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.errors import run_main
from autoias_pl.io import atomic_write, atomic_write_text, read_json
from autoias_pl.search import AutoIASSearch
from autoias_pl.search.config import flat_from_nested, nested_name, recipe_from_flat
from autoias_pl.space import Architecture, SearchSpace

# ----- the base recipe: configs/search/cpu.yaml, the whole-space CPU search (all four interaction functions) -----
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPE_FILE = "search/cpu.yaml"
_CPU = yaml.safe_load((CONFIGS / RECIPE_FILE).read_text())
SPACE: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in _CPU["model"]["init_args"]["space"].items()}
BASE: dict[str, Any] = {
    # the recipe as flat keywords (search/config.py); the warm-up is the plan's `warmup_fraction` instead
    "model": {k: v for k, v in flat_from_nested(_CPU["model"]["init_args"]).items() if k != "warmup_epochs"},
    "supernet_lr": _CPU["model"]["init_args"]["supernet_optimizer"]["init_args"]["lr"],  # the recipe's (reported)
    "batch_size": int(_CPU["data"]["batch_size"]),
    # the recipe's own warm-up as a share of its run (cpu.yaml: 8 of 11 epochs of uniform students, no generator
    # step); a plan of another length keeps that share
    "warmup_fraction": _CPU["model"]["init_args"]["schedule"]["warmup_epochs"] / _CPU["trainer"]["max_epochs"],
    "checks": 8,  # validation points per run
    "eval_rows": 4096,  # fixed validation rows of the student loss
    "eval_archs": 8,  # fixed uniform architectures of the student loss
    "eval_seed": 2021,
}


def _students(n: int) -> dict[str, Any]:
    """N students, of which the recipe's share stays uniform (cpu.yaml: 4 of 9)."""
    m = BASE["model"]
    return {"num_students": n, "uniform_students": round(n * m["uniform_students"] / m["num_students"])}


# study -> (the paper's values, value -> overrides of BASE["model"])
STUDIES: dict[str, tuple[list[Any], Callable[[Any], dict[str, Any]]]] = {
    "beta": ([0.0, 0.25, 0.5, 0.75, 1.0], lambda v: {"beta": float(v)}),
    "students": ([1, 3, 5, 9, 15], lambda v: _students(int(v))),
    "sampler": (["generator", "uniform"], lambda v: {"sampler": str(v), "beta": 0.0, **_students(1)}),
    "reward_archs": ([1, 2, 4, 8], lambda v: {"num_reward_archs": int(v), "baseline": "ema"}),
}
TITLES = {"beta": "4.4.1 knowledge distillation: soft/hard weight beta (Fig. 3)",
          "students": "4.4.2 number of students N (Fig. 4)",
          "sampler": "4.4.3 generator vs uniform random sampling, beta = 0, N = 1 (Fig. 5)",
          "reward_archs": "4.4.4 number of reward architectures M (Fig. 6)"}
SYMBOL = {"beta": "beta", "students": "N", "sampler": "sampler", "reward_archs": "M"}
RUN_OVERHEAD_S = 1.5  # Trainer set-up and data loading per run, for the estimates
RECORDS = "records"  # the finished runs under --out (not "runs", which .gitignore hides)


class AblationError(ValueError):
    """Bad input to the ablations (a one-line message naming the file or option)."""


# ----- one run -----
@dataclass(frozen=True)
class Sizing:
    """The shape every run of a plan shares: `epochs` x `batches_per_epoch` batches of `batch_size` rows,
    validated every `val_every` batches; the generator starts after `warmup_batches`."""

    batches_per_epoch: int
    epochs: int
    val_every: int
    warmup_batches: int
    batch_size: int

    @property
    def batches(self) -> int:
        return self.batches_per_epoch * self.epochs

    @property
    def rows(self) -> int:
        return self.batches * self.batch_size

    @property
    def checks(self) -> int:
        return self.epochs * (self.batches_per_epoch // self.val_every)

    @classmethod
    def for_batches(cls, batches: int, train_rows: int, base: dict[str, Any]) -> Sizing:
        """`batches` training batches (at least `checks`), over as few epochs of `train_rows` as fit them."""
        bs, checks = int(base["batch_size"]), int(base["checks"])
        available = train_rows // bs
        if available < 1:
            raise AblationError(f"{train_rows} training rows are fewer than one batch of {bs}")
        batches = max(batches, checks)
        epochs = math.ceil(batches / available)
        per_epoch = math.ceil(batches / epochs)
        val_every = max(1, per_epoch // max(1, math.ceil(checks / epochs)))
        per_epoch = val_every * (per_epoch // val_every)  # the last batch of an epoch is a validation point
        warmup = int(round(base["warmup_fraction"] * per_epoch * epochs))
        return cls(per_epoch, epochs, val_every, warmup, bs)


class StudentLoss(Callback):
    """At every validation point: (training rows, mean BCE of the fixed architectures on the fixed rows,
    the candidate's val/auc and val/logloss); prints a progress line to stderr."""

    def __init__(self, archs: list[Architecture], rows: CTRBatch, batch_size: int, label: str, total_rows: int) -> None:
        self.archs, self.rows, self.batch_size = archs, rows, batch_size
        self.label, self.total_rows, self.start = label, total_rows, time.perf_counter()
        self.points: list[dict[str, float]] = []

    @torch.no_grad()
    def student_loss(self, module: AutoIASSearch) -> float:
        """Mean over the fixed architectures of the BCE (mean over the fixed rows)."""
        x, y = self.rows.features.to(module.device), self.rows.labels.to(module.device)
        losses = [F.binary_cross_entropy_with_logits(module.supernet(x, a), y) for a in self.archs]
        return float(torch.stack(losses).mean())

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        assert isinstance(module, AutoIASSearch)
        metrics, nan = trainer.callback_metrics, float("nan")  # no val/* in the warm-up: no candidate yet
        point = {"rows": int(module.batch_count) * self.batch_size, "student_loss": self.student_loss(module),
                 "val_auc": float(metrics.get("val/auc", nan)), "val_logloss": float(metrics.get("val/logloss", nan))}
        self.points.append(point)
        done = point["rows"] / max(self.total_rows, 1)
        bar = "#" * round(20 * done) + "." * (20 - round(20 * done))
        print(f"  {self.label} [{bar}] {point['rows']:,}/{self.total_rows:,} rows  student loss "
              f"{point['student_loss']:.4f}  val AUC {point['val_auc']:.4f}  {time.perf_counter() - self.start:.0f} s",
              file=sys.stderr, flush=True)


def eval_archs(space: SearchSpace, base: dict[str, Any]) -> list[Architecture]:
    """The fixed uniform architectures of the student loss, drawn from `base["eval_seed"]`."""
    rng = torch.Generator().manual_seed(int(base["eval_seed"]))
    return [Architecture.uniform_random(space, rng) for _ in range(int(base["eval_archs"]))]


def model_settings(study: str, value: Any, base: dict[str, Any]) -> dict[str, Any]:
    """BASE["model"] with the study's overrides for `value`."""
    return {**base["model"], **STUDIES[study][1](value)}


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines and its hints about workers and logging intervals off, for the block only."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(num_workers|log_every_n_steps|does not have many|LeafSpec).*")
            yield
    finally:
        log.setLevel(level)


def train_one(data: Path, schema: Schema, settings: dict[str, Any], seed: int, sizing: Sizing,
              base: dict[str, Any], label: str) -> dict[str, Any]:
    """One search run: its curve (a point per validation), the final candidate and its test AUC."""
    from autoias_pl.cli import build_search

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoias-ablation-") as root, quiet_lightning():
        module, dm, trainer = build_search([CONFIGS / "data/synthetic.yaml", CONFIGS / RECIPE_FILE,
                                            CONFIGS / "trainer/cpu.yaml"], run_overrides(data, settings, seed, sizing, root))
        assert isinstance(module, AutoIASSearch)
        fixed = read_rows(data, "val", int(base["eval_rows"]))
        curve = StudentLoss(eval_archs(module.space, base), fixed, sizing.batch_size, label, sizing.rows)
        trainer.callbacks.append(curve)
        trainer.fit(module, datamodule=dm)
    final = module.candidate()
    test = read_rows(data, "test", schema.rows["test"])
    with torch.no_grad():
        test_auc = auc(module.supernet(test.features, final).numpy(), test.labels.numpy())
    return {"curve": curve.points, "test_auc": test_auc, "final_architecture": final.summary(),
            "archs_scored": module.archs_scored, "seconds": time.perf_counter() - start,
            "hparams": {k: v for k, v in module.hparams.items() if k not in ("field_names", "vocab_sizes")}}


def run_overrides(data: Path, settings: dict[str, Any], seed: int, sizing: Sizing, root: str) -> list[str]:
    """The `autoias fit` overrides of one run: the data and seed, the recipe's values that `settings` changes
    (and nothing else), the plan's length, validation points and warm-up; no logger, no checkpoint files, no
    early stop (every run trains the plan's rows)."""
    changed = [f"--model.init_args.{nested_name(k)}={v if isinstance(v, str) else json.dumps(v)}"
               for k, v in settings.items() if BASE["model"].get(k) != v]
    return [f"--data.data_dir={data}", f"--data.batch_size={sizing.batch_size}", "--data.eval_batch_size=8192",
            f"--data.seed={seed}", f"--seed_everything={seed}", f"--model.init_args.seed={seed}", *changed,
            f"--model.init_args.schedule.warmup_epochs={sizing.warmup_batches / sizing.batches_per_epoch!r}",
            f"--trainer.max_epochs={sizing.epochs}", f"--trainer.limit_train_batches={sizing.batches_per_epoch}",
            f"--trainer.val_check_interval={sizing.val_every}", "--trainer.logger=false",
            f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.num_sanity_val_steps=0",
            "--checkpoint.save_top_k=0", "--checkpoint.save_last=false",
            f"--early_stopping.patience={sizing.checks + 1}"]


# ----- the cost model: sizing and estimates -----
@dataclass(frozen=True)
class Costs:
    """Measured seconds: a student's forward+backward+step on one batch, the teacher's (with its soft-label
    forward), and a forward per row (reward scoring and validation)."""

    student_step: float
    teacher_step: float
    forward_row: float

    def run_seconds(self, settings: dict[str, Any], sizing: Sizing, schema: Schema, base: dict[str, Any]) -> float:
        reward_rows = min(int(settings["reward_rows"]), schema.rows["val"])  # flat keywords (BASE["model"])
        per_batch = self.teacher_step + settings["num_students"] * self.student_step
        scoring = settings["num_reward_archs"] * reward_rows * self.forward_row
        validation = (schema.rows["val"] + base["eval_archs"] * min(base["eval_rows"], schema.rows["val"])) * self.forward_row
        return (RUN_OVERHEAD_S + sizing.batches * per_batch + (sizing.batches - sizing.warmup_batches) * scoring
                + sizing.checks * validation + schema.rows["test"] * self.forward_row)


def calibrate(data: Path, schema: Schema, base: dict[str, Any], repeats: int = 5) -> Costs:
    """Time the pieces of a search step on this data and machine: the median of `repeats` rounds over 4
    fixed architectures (a few seconds; the median, as other processes may share the cores)."""
    module = AutoIASSearch(schema.field_names, schema.vocab_sizes, schema.hash, **recipe_from_flat(**base["model"]))
    opt = torch.optim.Adam(module.supernet.parameters(), lr=1e-2)  # timing only: the rate does not matter
    batch = read_rows(data, "train", int(base["batch_size"]))
    rows = read_rows(data, "val", 8192).features  # (R, n)
    archs = eval_archs(module.space, base)[:4]
    teacher = Architecture.teacher(module.space)

    def step(arch: Architecture) -> None:
        F.binary_cross_entropy_with_logits(module.supernet(batch.features, arch), batch.labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(fn: Callable[[], None]) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    student = timed(lambda: [step(a) for a in archs]) / len(archs)
    teacher_s = timed(lambda: step(teacher))
    with torch.no_grad():
        forward = timed(lambda: [module.supernet(rows, a) for a in archs]) / (len(archs) * rows.shape[0])
    return Costs(student, teacher_s + forward * batch.labels.numel(), forward)


def size_runs(budget_s: float, runs: list[dict[str, Any]], schema: Schema, costs: Costs,
              base: dict[str, Any]) -> Sizing:
    """The largest equal number of batches for which the `runs` (their model settings) fit in `budget_s`
    (at least `base["checks"]` batches, however small the budget)."""
    def total(batches: int) -> float:
        sizing = Sizing.for_batches(batches, schema.rows["train"], base)
        return sum(costs.run_seconds(r, sizing, schema, base) for r in runs)

    low, high = int(base["checks"]), 1 << 24
    while low < high:  # total() grows with the batches
        mid = (low + high + 1) // 2
        low, high = (mid, high) if total(mid) <= budget_s else (low, mid - 1)
    return Sizing.for_batches(low, schema.rows["train"], base)


# ----- the plan and the records -----
def value_name(value: Any) -> str:
    return str(value)


def run_key(settings: dict[str, Any], seed: int, sizing: Sizing, base: dict[str, Any]) -> str:
    """A hash of everything that decides a run's result (model settings, seed, sizing, evaluation)."""
    rest = {k: v for k, v in base.items() if k != "model"}
    text = json.dumps({"settings": settings, "seed": seed, "sizing": sizing.__dict__, "base": rest},
                      sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(out: Path, study: str, value: Any, seed: int) -> Path:
    return out / RECORDS / study / f"{value_name(value)}-seed{seed}.json"


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every finished run under `out/records` (a record that is not valid JSON is a one-line AblationError)."""
    return [read_json(p, AblationError) for p in sorted((out / RECORDS).glob("*/*.json"))]


def load_plan(out: Path, data: Path, schema: Schema) -> dict[str, Any] | None:
    path = out / "plan.json"
    if not path.is_file():
        return None
    plan = read_json(path, AblationError)
    if plan.get("schema_hash") != schema.hash:
        raise AblationError(f"{path}: made for another dataset (schema {plan.get('schema_hash')}, {data} has "
                            f"{schema.hash}); use a new --out")
    return plan


def fmt_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


# ----- tables, figures, report -----
def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std) over seeds; NaN for both when any value is NaN (a validation point inside the warm-up
    scores no candidate; `statistics` raises on NaN instead of propagating it)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _scored(curve: list[dict[str, Any]]) -> list[float]:
    """The candidate val AUCs of a curve's points after the warm-up (those in it are NaN: no candidate)."""
    return [p["val_auc"] for p in curve if not math.isnan(p["val_auc"])]


def summarize(records: list[dict[str, Any]], planted: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per study, per value (in the study's order): mean and std over seeds of the final and curve-mean
    student loss, the final, best and test AUC of the candidate, how many of the `planted` pairs (names
    "AxB") and how many pairs in all the final candidate selects, and the mean curves."""
    out: dict[str, list[dict[str, Any]]] = {}
    for study, (values, _) in STUDIES.items():
        rows = []
        for value in values:
            mine = [r for r in records if r["study"] == study and r["value"] == value]
            if not mine:
                continue
            n = min(len(r["curve"]) for r in mine)
            metrics = {
                "final_student_loss": [r["curve"][n - 1]["student_loss"] for r in mine],
                "mean_student_loss": [statistics.mean(p["student_loss"] for p in r["curve"][:n]) for r in mine],
                "final_val_auc": [r["curve"][n - 1]["val_auc"] for r in mine],
                "best_val_auc": [max(_scored(r["curve"][:n])) for r in mine],
                "mean_val_auc": [statistics.mean(_scored(r["curve"][:n])) for r in mine],
                "test_auc": [r["test_auc"] for r in mine],
                "planted_selected": [float(len(set(r["final_architecture"]["selected_pairs"]) & set(planted)))
                                     for r in mine],
                "pairs_selected": [float(len(r["final_architecture"]["selected_pairs"])) for r in mine],
            }
            row: dict[str, Any] = {"value": value, "seeds": sorted(r["seed"] for r in mine),
                                   "seconds": statistics.mean(r["seconds"] for r in mine)}
            for k, v in metrics.items():
                row[k] = {"mean": mean_std(v)[0], "std": mean_std(v)[1], "per_seed": v}
            row["curve"] = {k: [mean_std([r["curve"][i][k] for r in mine]) for i in range(n)]
                            for k in ("student_loss", "val_auc")}
            row["curve"]["rows"] = [mine[0]["curve"][i]["rows"] for i in range(n)]
            rows.append(row)
        if rows:
            out[study] = rows
    return out


COLUMNS = [("final_student_loss", "student val loss, final", 4), ("mean_student_loss", "student val loss, curve mean", 4),
           ("final_val_auc", "candidate val AUC, final", 4), ("best_val_auc", "candidate val AUC, best", 4),
           ("mean_val_auc", "candidate val AUC, curve mean", 4),
           ("test_auc", "candidate test AUC", 4), ("planted_selected", "planted pairs selected", 1),
           ("pairs_selected", "pairs selected", 1)]


def table(study: str, rows: list[dict[str, Any]]) -> str:
    """The markdown table of one study: a row per value, a `mean ± std` column per metric."""
    head = f"| {SYMBOL[study]} | seeds | " + " | ".join(f"{name} (mean ± std)" for _, name, _ in COLUMNS) + " | s/run |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        cells = " | ".join(f"{r[k]['mean']:.{d}f} ± {r[k]['std']:.{d}f}" for k, _, d in COLUMNS)
        lines.append(f"| {value_name(r['value'])} | {len(r['seeds'])} | {cells} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def plot(study: str, rows: list[dict[str, Any]], path: Path, warmup_rows: int = 0) -> None:
    """Two panels: the student loss and the candidate's val AUC vs training rows, mean +- std over seeds;
    a dotted line where the uniform warm-up ends."""
    from matplotlib.figure import Figure  # no pyplot: no global backend is chosen

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, r in enumerate(rows):
        xs = r["curve"]["rows"]
        for ax, key in zip(axes, ("student_loss", "val_auc"), strict=True):
            mean = [m for m, _ in r["curve"][key]]
            sd = [s for _, s in r["curve"][key]]
            ax.plot(xs, mean, color=f"C{i}", marker=".", label=f"{SYMBOL[study]} = {value_name(r['value'])}")
            ax.fill_between(xs, [m - s for m, s in zip(mean, sd, strict=True)],
                            [m + s for m, s in zip(mean, sd, strict=True)], color=f"C{i}", alpha=0.15)
    axes[0].set(xlabel="training rows", ylabel="supernet val BCE of sampled students")
    axes[1].set(xlabel="training rows", ylabel="searched architecture's val AUC")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if warmup_rows:
            ax.axvline(warmup_rows, color="gray", linestyle=":", linewidth=1)
    axes[0].legend(fontsize=8)
    fig.suptitle(TITLES[study], fontsize=10)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _by(rows: list[dict[str, Any]], value: Any) -> dict[str, Any] | None:
    return next((r for r in rows if r["value"] == value), None)


def _cmp(a: dict[str, Any], b: dict[str, Any], key: str, lower_better: bool) -> str:
    """'better than', 'worse than' or 'within noise of': `a` against `b` on `key`. Runs of one seed share
    the initial weights and the data order, so with the same seeds the comparison is paired: the mean of
    the per-seed differences against their std; otherwise the difference of the means against the
    combined std."""
    if a["seeds"] == b["seeds"] and len(a["seeds"]) > 1:
        d = [x - y for x, y in zip(a[key]["per_seed"], b[key]["per_seed"], strict=True)]
        diff, noise = statistics.mean(d), statistics.stdev(d)
    else:
        diff, noise = a[key]["mean"] - b[key]["mean"], math.hypot(a[key]["std"], b[key]["std"])
    if abs(diff) <= noise:
        return "within noise of"
    return "better than" if (diff < 0) == lower_better else "worse than"


def _m(r: dict[str, Any], key: str) -> str:
    return f"{r[key]['mean']:.4f} ± {r[key]['std']:.4f}"


def verdict(study: str, rows: list[dict[str, Any]]) -> str:
    """The paper's claim for `study` against these numbers (differences within one combined std over seeds
    are called noise)."""
    sym = SYMBOL[study]
    loss = "final_student_loss"
    if study == "beta":
        no_kd, best = _by(rows, 0.0), min(rows, key=lambda r: r[loss]["mean"])
        text = "Paper: KD trains the supernet faster and to a lower loss; a proper weight (0.5) is best. Here: "
        if no_kd is not None and len(rows) > 1:
            kd = min((r for r in rows if r["value"] != 0.0), key=lambda r: r[loss]["mean"])
            text += (f"the best KD setting (beta = {kd['value']}, final student loss {_m(kd, loss)}) is "
                     f"{_cmp(kd, no_kd, loss, True)} no KD ({_m(no_kd, loss)}); over the whole curve "
                     f"{_m(kd, 'mean_student_loss')} against {_m(no_kd, 'mean_student_loss')} "
                     f"({_cmp(kd, no_kd, 'mean_student_loss', True).rsplit(' ', 1)[0]}). ")
        half = _by(rows, 0.5)
        if half is not None:
            text += (f"The lowest final loss is at beta = {best['value']}; beta = 0.5 is "
                     f"{'that one' if half is best else _cmp(half, best, loss, True) + ' it'}. ")
        if half is not None and no_kd is not None:
            fast = max(rows, key=lambda r: r["mean_val_auc"]["mean"])
            text += (f"The searched architecture's val AUC over the curve is highest at beta = {fast['value']} "
                     f"({_m(fast, 'mean_val_auc')}); beta = 0.5 ({_m(half, 'mean_val_auc')}) is "
                     f"{_cmp(half, no_kd, 'mean_val_auc', False)} no KD ({_m(no_kd, 'mean_val_auc')}). ")
    elif study == "students":
        best = min(rows, key=lambda r: r[loss]["mean"])
        text = ("Paper: few students train unstably; more are better, with marginal gains beyond N = 9. Here: the "
                f"lowest final student loss is at N = {best['value']} ({_m(best, loss)}). ")
        first, nine, last = rows[0], _by(rows, 9), rows[-1]
        if first is not last:
            text += (f"N = {last['value']} is {_cmp(last, first, loss, True)} N = {first['value']} "
                     f"({_m(last, loss)} vs {_m(first, loss)}); seed std of the final loss "
                     f"{first[loss]['std']:.4f} at N = {first['value']} vs {last[loss]['std']:.4f} at N = {last['value']}. ")
        if nine is not None and last is not nine:
            text += f"N = {last['value']} is {_cmp(last, nine, loss, True)} N = 9. "
        if first is not last:
            text += (f"Over the whole curve (speed): N = {last['value']} {_m(last, 'mean_student_loss')} is "
                     f"{_cmp(last, first, 'mean_student_loss', True)} N = {first['value']} "
                     f"{_m(first, 'mean_student_loss')}; the candidate's val AUC over the curve "
                     f"{_m(last, 'mean_val_auc')} vs {_m(first, 'mean_val_auc')} "
                     f"({_cmp(last, first, 'mean_val_auc', False).rsplit(' ', 1)[0]}). ")
    elif study == "sampler":
        gen, uni = _by(rows, "generator"), _by(rows, "uniform")
        text = "Paper: generator-guided training has a lower, more stable loss than random search. Here: "
        if gen is not None and uni is not None:
            text += (f"the generator's student loss (on uniformly drawn architectures) {_m(gen, loss)} is "
                     f"{_cmp(gen, uni, loss, True)} random search's {_m(uni, loss)}; its candidate's best val AUC "
                     f"{_m(gen, 'best_val_auc')} is {_cmp(gen, uni, 'best_val_auc', False)} random search's best "
                     f"scored architecture ({_m(uni, 'best_val_auc')}), test AUC {_m(gen, 'test_auc')} vs "
                     f"{_m(uni, 'test_auc')}. ")
    else:
        best = max(rows, key=lambda r: r["best_val_auc"]["mean"])
        text = ("Paper: m = 4 is best; m = 1 gives the generator too little guidance, a large m slows it. Here: "
                f"the best candidate val AUC is at M = {best['value']} ({_m(best, 'best_val_auc')}). ")
        one, four = _by(rows, 1), _by(rows, 4)
        if one is not None and one is not best:
            text += f"M = 1 is {_cmp(one, best, 'best_val_auc', False)} it ({_m(one, 'best_val_auc')}). "
        if four is not None and four is not best:
            text += f"M = 4 is {_cmp(four, best, 'best_val_auc', False)} it ({_m(four, 'best_val_auc')}). "
        fast = max(rows, key=lambda r: r["mean_val_auc"]["mean"])
        text += f"Over the whole curve (speed) the best is M = {fast['value']} ({_m(fast, 'mean_val_auc')})"
        text += (f"; M = 1 is {_cmp(one, fast, 'mean_val_auc', False)} it ({_m(one, 'mean_val_auc')}). "
                 if one is not None and one is not fast else ". ")
    seeds = min(len(r["seeds"]) for r in rows)
    if seeds < 2:
        return text + f"(Automatic reading of 1 seed per {sym}: no noise estimate, every difference counts.)"
    return text + (f"(Automatic reading, {seeds} seeds per {sym}, paired by seed: better or worse means a mean "
                   "per-seed difference beyond the std of those differences, otherwise noise; with few seeds a "
                   "weak test.)")


def write_outputs(out: Path, data: Path, schema: Schema, plan: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """report.md, results.json and one PNG per study with finished runs, from every record under `out`."""
    records = load_records(out)
    planted = ["x".join(q) for q in schema.extra.get("synthetic", {}).get("planted_pairs", [])]
    summary = summarize(records, planted)
    sizing = plan["sizing"]
    lines = [f"# Ablations of paper section 4.4 on `{data.name}`", "",
             f"{schema.rows['train']:,} training rows, {len(schema.field_names)} fields; every run trains "
             f"{sizing['rows']:,} rows ({sizing['epochs']} epoch(s) of {sizing['batches_per_epoch']} batches of "
             f"{sizing['batch_size']}, uniform warm-up of {sizing['warmup_batches']} batches), validated every "
             f"{sizing['val_every']} batches. Base recipe configs/search/cpu.yaml (`autoias_pl.experiments.ablations.BASE`): "
             f"`{json.dumps(plan['base']['model'])}`, supernet Adam lr {plan['base']['supernet_lr']}.", "",
             f"Student val loss: the supernet's mean BCE on the first {plan['base']['eval_rows']:,} validation rows of "
             f"{plan['base']['eval_archs']} fixed uniformly drawn architectures. Candidate: the searched architecture "
             "(the generator's greedy one; random search's best scored one), val AUC on the whole validation split "
             "and test AUC with inherited supernet weights. Mean ± sample std over seeds.", ""]
    for study, rows in summary.items():
        plot(study, rows, out / f"{study}.png", sizing["warmup_batches"] * sizing["batch_size"])
        lines += [f"## {TITLES[study]}", "", f"![{study}]({study}.png)", "", table(study, rows), "",
                  verdict(study, rows), ""]
    trained = [r for r in records if "reused_from" not in r]
    sized = (f"sized for {plan['budget_minutes']:g} minutes" if plan.get("budget_minutes")
             else f"{sizing['rows']:,} rows per run set with --train-rows")
    lines.append(f"{len(records)} runs, {len(trained)} trained (the others have the settings of a trained one), "
                 f"{fmt_time(sum(r['seconds'] for r in trained))} of training in all; the plan was {sized}; "
                 f"the invocation that wrote this report took {fmt_time(wall_s)}. Planted pairs: {', '.join(planted) or 'none'}.")
    commentary = out / "commentary.md"
    if commentary.is_file():
        lines += ["", commentary.read_text().rstrip()]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    results = {"data": str(data), "schema_hash": schema.hash, "plan": plan, "studies": summary}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=list) + "\n")
    return results


# ----- the command -----
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m autoias_pl.experiments.ablations", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared dataset folder (schema.json, train/val/test shards)")
    p.add_argument("--out", required=True, help="output folder (rerunning with it resumes)")
    p.add_argument("--budget-minutes", type=float, default=30.0,
                   help="wall time the runs of this invocation are sized to (ignored when --out has a plan)")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..K-1 per value")
    p.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated subset of {','.join(STUDIES)}")
    p.add_argument("--train-rows", type=int, default=None,
                   help="train this many rows per run instead of sizing from the budget")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--plan-only", action="store_true", help="print the sizing and the estimates, train nothing")
    return p.parse_args(argv)


def _studies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STUDIES]
    if bad or not names:
        raise AblationError(f"--studies: unknown {bad or 'empty list'} (choose from {', '.join(STUDIES)})")
    return names


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return run_main("python -m autoias_pl.experiments.ablations", lambda: _main(args), known=(AblationError,))


def _main(args: argparse.Namespace) -> dict[str, Any]:
    wall = time.perf_counter()
    data, out = Path(args.data), Path(args.out)
    if args.seeds < 1 or args.budget_minutes <= 0 or (args.train_rows is not None and args.train_rows < 1):
        raise AblationError("--seeds, --budget-minutes and --train-rows must be positive")
    studies = _studies(args.studies)
    schema = Schema.load(data)  # a SchemaError naming the folder before anything runs
    for split in ("train", "val", "test"):
        if schema.rows.get(split, 0) < 1:
            raise AblationError(f"{data / 'schema.json'}: split {split!r} has no rows")
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    jobs = [(study, value, seed) for study in studies for seed in seeds for value in STUDIES[study][0]]
    print(f"calibrating on {data} ...", file=sys.stderr, flush=True)
    costs = calibrate(data, schema, BASE)
    print(f"calibration: {costs.student_step * 1e3:.1f} ms a student step, {costs.teacher_step * 1e3:.1f} ms the "
          f"teacher's, {costs.forward_row * 1e6:.2f} us a forward row", file=sys.stderr, flush=True)
    plan = load_plan(out, data, schema)
    if plan is None:
        distinct = {json.dumps([model_settings(s, v, BASE), k], sort_keys=True, default=list): model_settings(s, v, BASE)
                    for s, v, k in jobs}
        if args.train_rows is not None:
            sizing = Sizing.for_batches(max(1, args.train_rows // BASE["batch_size"]), schema.rows["train"], BASE)
        else:
            sizing = size_runs(args.budget_minutes * 60, list(distinct.values()), schema, costs, BASE)
            print(f"sized {len(distinct)} distinct runs to {args.budget_minutes:g} minutes", file=sys.stderr)
        plan = {"schema_hash": schema.hash, "budget_minutes": None if args.train_rows else args.budget_minutes,
                "sizing": {**sizing.__dict__, "rows": sizing.rows}, "base": BASE}
        if not args.plan_only:
            atomic_write_text(out / "plan.json", json.dumps(plan, indent=1, default=list) + "\n")
    else:
        print(f"resuming with {out / 'plan.json'} (its sizing, not --budget-minutes/--train-rows)", file=sys.stderr)
    s = plan["sizing"]
    sizing = Sizing(s["batches_per_epoch"], s["epochs"], s["val_every"], s["warmup_batches"], s["batch_size"])
    base = {**BASE, **{k: v for k, v in plan["base"].items() if k != "model"}}
    print(f"plan: {sizing.rows:,} training rows per run ({sizing.epochs} x {sizing.batches_per_epoch} batches of "
          f"{sizing.batch_size}), {sizing.checks} validation points", file=sys.stderr)

    done = {r["key"]: r for r in load_records(out)}
    todo = [j for j in jobs if not record_path(out, *j).is_file()]
    estimate, seen = {}, set(done)
    for st, v, k in todo:  # a run with the settings of an earlier one is copied: it costs nothing
        key = run_key(model_settings(st, v, base), k, sizing, base)
        estimate[(st, v, k)] = 0.0 if key in seen else costs.run_seconds(model_settings(st, v, base), sizing, schema, base)
        seen.add(key)
    scale = 1.0
    for study in studies:
        mine = [j for j in todo if j[0] == study]
        print(f"study {study}: {len(mine)} of {len(STUDIES[study][0]) * len(seeds)} runs to do, estimated "
              f"{fmt_time(sum(estimate[j] for j in mine))}", file=sys.stderr, flush=True)
    if args.plan_only:
        return {"plan": plan, "estimate_s": sum(estimate[j] for j in todo), "costs": costs.__dict__}
    trained = 0
    for i, (study, value, seed) in enumerate(todo, 1):
        settings = model_settings(study, value, base)
        key = run_key(settings, seed, sizing, base)
        label = f"[{i}/{len(todo)}] {study} {SYMBOL[study]}={value_name(value)} seed {seed}"
        if key in done:
            result = {k: v for k, v in done[key].items() if k not in ("study", "value", "seed", "key", "reused_from")}
            result["reused_from"] = f"{done[key]['study']}={value_name(done[key]['value'])}"
            print(f"{label}: same settings as {result['reused_from']}, reused", file=sys.stderr, flush=True)
        else:
            print(f"{label}: training (est. {fmt_time(estimate[(study, value, seed)] * scale)})", file=sys.stderr, flush=True)
            result = train_one(data, schema, settings, seed, sizing, base, label)
            trained += 1
            if trained == 1:  # rescale the estimates by the first run's measured time
                scale = result["seconds"] / max(estimate[(study, value, seed)], 1e-9)
                for st in studies:
                    left = [j for j in todo[i:] if j[0] == st]
                    print(f"  study {st}: estimated {fmt_time(sum(estimate[j] for j in left) * scale)} left "
                          f"(first run took {result['seconds']:.0f} s, {scale:.2f}x the calibration)", file=sys.stderr)
        record = {"study": study, "value": value, "seed": seed, "key": key, "settings": settings, **result}
        atomic_write_text(record_path(out, study, value, seed), json.dumps(record, indent=1, default=list) + "\n")
        done.setdefault(key, record)
        left = sum(estimate[j] for j in todo[i:]) * scale
        took = "copied" if "reused_from" in result else f"done in {result['seconds']:.0f} s"
        print(f"{label}: {took}; {len(todo) - i} runs left, ~{fmt_time(left)}", file=sys.stderr, flush=True)
    results = write_outputs(out, data, schema, plan, time.perf_counter() - wall)
    results["trained"] = trained
    print(f"wrote {out / 'report.md'}, results.json and {len(results['studies'])} figure(s) in "
          f"{fmt_time(time.perf_counter() - wall)}; {trained} run(s) trained", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
