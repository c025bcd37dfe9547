"""The generator against uniform random search at equal budget (paper 4.4.3), on planted synthetic data,
with the whole-space recipe of `configs/search/cpu.yaml` (the one `make demo` runs).

The recipe is loaded and launched as `autoias fit` does (`autoias_pl.cli.build_search`; `--set` overrides it
as on the command line). Per seed, the uniform warm-up of the recipe (uniform students, no generator step:
the same for both methods; whole epochs) is trained once and checkpointed; both methods then resume from it for the same remaining epochs:
the same supernet steps, the same number of architectures scored per batch (M, on the same fixed reward
rows), validated at the same points. The generator's candidate is its greedy architecture (5 of its 9
students are the generator's); random search's is the best architecture it has scored (all 9 students
uniform). Both candidates are pruned the same way (`prune_tolerance`). Prints one JSON object and writes
`<out>/search_vs_random.md` (table: best val AUC, the test AUC of that architecture with inherited supernet
weights and, with --retrain, retrained from scratch as the demo retrains; mean +- std over seeds) and
`<out>/search_vs_random.png` (best-so-far val AUC vs architectures scored).

    python benchmarks/search_vs_random.py --seeds 0 1 2 --retrain --out docs/figures
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoias_pl.auc import auc  # noqa: E402
from autoias_pl.data.schema import Schema  # noqa: E402
from autoias_pl.data.stream import read_rows  # noqa: E402
from autoias_pl.data.synth import synthesize  # noqa: E402
from autoias_pl.io import atomic_write, atomic_write_text  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG = CONFIGS / "search" / "cpu.yaml"
METHODS = (("generator", "generator (REINFORCE)", "C0"), ("uniform", "random search", "C1"))


def build(args: argparse.Namespace, data: Path, seed: int, root: Path, *overrides: str) -> tuple[Any, Any, Trainer]:
    """The recipe `args.config` (+ `args.overrides`) on `data`, launched as `autoias fit` launches it
    (`autoias_pl.cli.build_search`): no logger, no checkpoint files, no early stop (equal budgets)."""
    from autoias_pl.cli import build_search

    common = [f"--data.data_dir={data}", "--data.eval_batch_size=8192", f"--data.seed={seed}",
              f"--seed_everything={seed}", f"--model.init_args.seed={seed}", "--trainer.logger=false",
              f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--trainer.num_sanity_val_steps=0",
              "--checkpoint.save_top_k=0", "--checkpoint.save_last=false", "--early_stopping.patience=1000000"]
    return build_search([CONFIGS / "data" / "synthetic.yaml", args.config, CONFIGS / "trainer" / "cpu.yaml"],
                        [*common, *(f"--{o.lstrip('-')}" for o in args.overrides), *overrides])


class Curve(Callback):
    """(architectures scored, candidate's val AUC) at every validation after warm-up."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking and module.archs_scored:
            self.points.append((module.archs_scored, float(trainer.callback_metrics["val/auc"])))


def run_seed(data: Path, seed: int, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """The shared warm-up of `seed` (the recipe's whole warm-up epochs, trained once), then both methods from
    its checkpoint for the recipe's remaining epochs; one result per method."""
    schema = Schema.load(data)
    test = read_rows(data, "test", schema.rows["test"])
    root = out / "runs" / f"seed{seed}"
    model, dm, trainer = build(args, data, seed, root / "warmup", "--trainer.limit_val_batches=0")
    warm_epochs, epochs = model.schedule.warmup_epochs, trainer.max_epochs
    if warm_epochs != int(warm_epochs) or not 0 < warm_epochs < epochs:
        raise ValueError(f"{args.config}: the shared warm-up needs whole warm-up epochs (0 < {warm_epochs} "
                         f"< max_epochs {epochs})")
    warm = root / "warmup.ckpt"
    start = time.perf_counter()
    if not warm.is_file():  # validation is skipped: in the warm-up it would score the teacher only
        trainer.fit_loop.max_epochs = int(warm_epochs)
        trainer.fit(model, datamodule=dm)
        atomic_write(warm, lambda tmp: trainer.save_checkpoint(str(tmp)))
    warm_seconds = time.perf_counter() - start
    batches = schema.rows["train"] // dm.batch_size
    planted = {"x".join(q) for q in schema.extra["synthetic"]["planted_pairs"]}
    results = []
    for sampler, _, _ in METHODS:
        start = time.perf_counter()
        m, dm, trainer = build(args, data, seed, root / sampler, f"--model.init_args.generator.proposer={sampler}",
                               f"--trainer.val_check_interval={max(1, batches // args.checks)}")
        curve = Curve()
        trainer.callbacks.append(curve)
        trainer.fit(m, datamodule=dm, ckpt_path=str(warm))
        best = m.best_architecture  # written by the module to m.best_architecture_path (root/<sampler>/)
        trainer.save_checkpoint(str(root / f"{sampler}-final.ckpt"))  # for offline study of the trained supernet
        with torch.no_grad():
            test_auc = auc(m.supernet(test.features, best).numpy(), test.labels.numpy())
        pairs = best.summary()["selected_pairs"]
        r = {"sampler": sampler, "seed": seed, "best_val_auc": best.provenance["val_auc"], "test_auc": test_auc,
             "archs_scored": m.archs_scored, "curve": curve.points, "selected_pairs": pairs,
             "planted_selected": len(planted & set(pairs)), "params": best.num_params(schema.vocab_sizes),
             "seconds": round(time.perf_counter() - start + warm_seconds / len(METHODS), 1)}
        if args.retrain:
            r |= retrain(data, m.best_architecture_path, root / f"retrain-{sampler}", seed)
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}), file=sys.stderr, flush=True)
        results.append(r)
    return results


def retrain(data: Path, arch: Path, out: Path, seed: int) -> dict[str, Any]:
    """Retrain `arch` from scratch and test it, as `make demo` retrains its searched architecture."""
    from autoias_pl.experiments.demo import retrain as demo_retrain

    args = argparse.Namespace(seed=seed, lr=0.01, max_epochs=10, no_progress_bar=True)
    with contextlib.redirect_stdout(sys.stderr):  # the CLI's echo and tables: stdout stays one JSON object
        res = demo_retrain(args, data, out, "autoias", str(arch))
    return {"retrained_test_auc": res.test_auc, "retrained_test_logloss": res.test_logloss}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def report(runs: list[dict[str, Any]], out: Path, planted: list[str]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")  # a script: its own backend
    import matplotlib.pyplot as plt

    retrained = all("retrained_test_auc" in r for r in runs)
    head = "| method | best val AUC | test AUC (inherited weights) |" + (" test AUC (retrained) |" if retrained else "")
    rows, summary = [head + " planted selected / pairs selected, per seed | params |",
                     "|---" * (5 + retrained) + "|"], {}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for sampler, label, color in METHODS:
        mine = [r for r in runs if r["sampler"] == sampler]
        found = [f"{r['planted_selected']}/{len(r['selected_pairs'])}" for r in mine]
        cells = [mean_std([r["best_val_auc"] for r in mine]), mean_std([r["test_auc"] for r in mine])]
        if retrained:
            cells.append(mean_std([r["retrained_test_auc"] for r in mine]))
        cells += [f"{', '.join(found)} (of {len(planted)} planted)", ", ".join(str(r["params"]) for r in mine)]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        summary[sampler] = {k: [r[k] for r in mine] for k in ("best_val_auc", "test_auc", "retrained_test_auc")
                            if retrained or k != "retrained_test_auc"}
        for k, r in enumerate(mine):
            xs = [x for x, _ in r["curve"]]
            ys = [max(y for _, y in r["curve"][: i + 1]) for i in range(len(xs))]
            ax.plot(xs, ys, color=color, alpha=0.8, label=label if k == 0 else None)
    ax.set_xlabel("architectures scored")
    ax.set_ylabel("best-so-far val AUC of the candidate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "search_vs_random.png", dpi=120)
    atomic_write_text(out / "search_vs_random.md", "\n".join(rows) + "\n")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--vocab", type=int, nargs=2, default=(50, 500))
    p.add_argument("--config", type=Path, default=CONFIG, help="the search recipe (model/data/trainer of a config)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="overrides of the recipe, as `autoias fit` takes them: --set model.init_args.reward.rows=4096")
    p.add_argument("--checks", type=int, default=4, help="validations per epoch after the warm-up")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--retrain", action="store_true", help="also retrain each best architecture and test it")
    p.add_argument("--work", type=Path, default=Path("runs/search_vs_random"), help="runs and checkpoints")
    p.add_argument("--out", type=Path, default=Path("runs/search_vs_random"), help="table and figure")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = Path(f"runs/data/synth-{args.rows}-{args.vocab[0]}-{args.vocab[1]}")
    if not data.exists():
        synthesize(data, args.rows, fields=10, planted_pairs=3, seed=0, rank=1, vocab_range=tuple(args.vocab))
    planted = ["x".join(q) for q in Schema.load(data).extra["synthetic"]["planted_pairs"]]
    runs = [r for seed in args.seeds for r in run_seed(data, seed, args, args.work)]
    print(json.dumps({"rows": args.rows, "vocab": args.vocab, "config": str(args.config), "planted": planted,
                      "summary": report(runs, args.out, planted), "runs": runs}))


if __name__ == "__main__":
    main()
