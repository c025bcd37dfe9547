"""The generator against uniform random search at equal budget (paper 4.4.3), on planted synthetic data.

Both runs train the same supernet recipe for the same batches, score the same number of architectures per
batch (M, on the same fixed reward rows) and are validated at the same points. The generator's candidate is
its greedy architecture; random search's is the best architecture it has scored. Prints one JSON object and
writes `<out>/search_vs_random.md` (table: best val AUC and the test AUC of that architecture with inherited
supernet weights, mean +- std over seeds) and `<out>/search_vs_random.png` (best-so-far val AUC vs
architectures scored).

    python benchmarks/search_vs_random.py --rows 100000 --epochs 5 --seeds 0 1 2 --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoias_pl.ablations import RECIPE, SPACE  # noqa: E402  (the recipe lives in one place)
from autoias_pl.auc import auc  # noqa: E402
from autoias_pl.data.schema import Schema  # noqa: E402
from autoias_pl.data.stream import read_rows  # noqa: E402
from autoias_pl.data.synth import synthesize  # noqa: E402
from autoias_pl.search import AutoIASSearch  # noqa: E402
from tests.ddp_worker import MemoryDataModule  # noqa: E402


class Curve(Callback):
    """(architectures scored, candidate's val AUC) at every validation after warm-up."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking and module.archs_scored:
            self.points.append((module.archs_scored, float(trainer.callback_metrics["val/auc"])))


def run(data: Path, sampler: str, seed: int, epochs: int, batch_size: int, checks: int) -> dict[str, Any]:
    schema = Schema.load(data)
    train, val = read_rows(data, "train", schema.rows["train"]), read_rows(data, "val", schema.rows["val"])
    test = read_rows(data, "test", schema.rows["test"])
    batches = train.labels.numel() // batch_size
    module = AutoIASSearch(schema.field_names, schema.vocab_sizes, schema.hash, seed=seed, sampler=sampler,
                           warmup_batches=batches, supernet_optimizer=partial(torch.optim.Adam, lr=1e-2),
                           **SPACE, **RECIPE)
    curve = Curve()
    dm = MemoryDataModule(train, val, batch_size, seed, reward_stream=False, eval_batch_size=8192)
    trainer = Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      val_check_interval=max(1, batches // checks), callbacks=[curve],
                      default_root_dir=f"/tmp/search_vs_random/{sampler}-{seed}-{time.time_ns()}")
    trainer.fit(module, datamodule=dm)
    best = module.best_architecture
    with torch.no_grad():
        test_auc = auc(module.supernet(test.features, best).numpy(), test.labels.numpy())
    return {"sampler": sampler, "seed": seed, "best_val_auc": best.provenance["val_auc"], "test_auc": test_auc,
            "archs_scored": module.archs_scored, "curve": curve.points,
            "selected_pairs": best.summary()["selected_pairs"]}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def report(runs: list[dict[str, Any]], out: Path, planted: list[str]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")  # a script: its own backend
    import matplotlib.pyplot as plt

    rows, summary = ["| method | best val AUC | test AUC (inherited weights) | planted pairs selected / pairs selected |",
                     "|---|---|---|---|"], {}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for sampler, label, color in (("generator", "generator (REINFORCE)", "C0"), ("uniform", "random search", "C1")):
        mine = [r for r in runs if r["sampler"] == sampler]
        found = [f"{len(set(r['selected_pairs']) & set(planted))}/{len(r['selected_pairs'])}" for r in mine]
        rows.append(f"| {label} | {mean_std([r['best_val_auc'] for r in mine])} | "
                    f"{mean_std([r['test_auc'] for r in mine])} | {', '.join(found)} (of {len(planted)} planted) |")
        summary[sampler] = {"best_val_auc": [r["best_val_auc"] for r in mine], "test_auc": [r["test_auc"] for r in mine]}
        for k, r in enumerate(mine):
            xs = [x for x, _ in r["curve"]]
            ys = [max(y for _, y in r["curve"][: i + 1]) for i in range(len(xs))]
            ax.plot(xs, ys, color=color, alpha=0.8, label=label if k == 0 else None)
    ax.set_xlabel("architectures scored")
    ax.set_ylabel("best-so-far val AUC of the candidate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "search_vs_random.png", dpi=120)
    (out / "search_vs_random.md").write_text("\n".join(rows) + "\n")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--vocab", type=int, nargs=2, default=(50, 500))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--checks", type=int, default=2, help="validations per epoch")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/search_vs_random"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = Path(f"runs/data/synth-{args.rows}-{args.vocab[0]}-{args.vocab[1]}")
    if not data.exists():
        synthesize(data, args.rows, fields=10, planted_pairs=3, seed=0, rank=1, vocab_range=tuple(args.vocab))
    planted = ["x".join(q) for q in Schema.load(data).extra["synthetic"]["planted_pairs"]]
    runs = [run(data, s, seed, args.epochs, args.batch_size, args.checks)
            for seed in args.seeds for s in ("generator", "uniform")]
    print(json.dumps({"rows": args.rows, "vocab": args.vocab, "epochs": args.epochs, "planted": planted,
                      "summary": report(runs, args.out, planted), "runs": runs}))


if __name__ == "__main__":
    main()
