"""Top-k final selection: the search proposes k architectures, training from scratch picks one.

    python -m autoias_pl.search.finalize --search RUN_DIR --data DIR [--k 4] [--widen]
        [--epochs 2 | --recipe configs/retrain.yaml configs/trainer/cpu.yaml] [--out FILE]

The supernet ranks architectures with inherited weights, and that ranking is noisy among close candidates
(benchmarks/supernet_ranking.py measures it). So instead of trusting the search's one pick, `finalize`
takes the candidates

1. the search's `best_architecture.json` (its validated, pruned pick), when the run folder has one;
2. the generator's most likely distinct models (`ArchitectureGenerator.top_k`: greedy + sample-and-dedupe
   by log P(a)) from the run's checkpoint,

keeps the first k distinct standalone models (with `--widen` each followed by the same structure at the
widest embedding, projection and MLP widths: the supernet's width ranking carries no signal on MovieLens,
Kendall tau -0.2 to -0.4, and under-rates wide projections; docs/search.md), trains each from scratch and
chooses the one with the best val AUC. How each is trained:

- `--epochs N` (default 2): the retraining module (`AutoIASRetrain`, Adam at `--lr`, the same seed, data
  order and N epochs for all; `--finetune` starts each from the supernet's weights); the budget is k x N
  passes over the training split, no early exit. Cheap, and on MovieLens too short to separate candidates.
- `--recipe CONFIG ...`: as `autoias fit -c CONFIG ...` retrains (configs/retrain.yaml: early stopping and
  best.ckpt on val AUC, lr cut on plateau), each to its own stop, in a subprocess; the candidate's score is
  its best.ckpt's val AUC (`fit_summary.json`), its runs kept in `<out stem>.runs/`. A retraining per
  candidate: the choice is the one the user's retraining will see.

Written atomically: the chosen architecture JSON (`--out`, default `<run>/final_architecture.json`,
retrainable like any searched one) and `<out stem>.report.json` (every candidate's val AUC, epochs,
log-prob, parameters and seconds; `budget_epochs`: the epochs trained in all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.schema import Schema
from autoias_pl.io import atomic_write_text
from autoias_pl.retrain import FIT_SUMMARY_FILE, AutoIASRetrain
from autoias_pl.search.config import GeneratorConfig
from autoias_pl.search.generator import ArchitectureGenerator
from autoias_pl.search.module import BEST_ARCH_FILE
from autoias_pl.space import COMPONENTS, Architecture
from autoias_pl.supernet.checkpoint import read_search_checkpoint, space_of

FINAL_ARCH_FILE = "final_architecture.json"
GENERATOR_PREFIX = "generator."


def generator_from_checkpoint(path: str | Path) -> ArchitectureGenerator:
    """The trained generator of the search checkpoint at `path` (on CPU), without the search module."""
    h, weights = read_search_checkpoint(path, GENERATOR_PREFIX)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        cfg = GeneratorConfig(**(h.get("generator") or {}))  # the recipe's generator section, as the search built it
        gen = ArchitectureGenerator(space_of(h, str(path)), cfg.embed_dim, cfg.hidden_dim, cfg.init_select_prob,
                                    pair_decision=cfg.pair_decision)
    gen.load_state_dict(weights)
    return gen


def run_files(search: Path) -> tuple[Path, Path | None]:
    """(checkpoint, best_architecture.json or None) of a search run folder (or a checkpoint file)."""
    if search.is_file():
        best = search.parent.parent / BEST_ARCH_FILE
        return search, best if best.is_file() else None
    ckpt = search / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{search}: no checkpoints/last.ckpt (a search run folder or a checkpoint file)")
    best = search / BEST_ARCH_FILE
    return ckpt, best if best.is_file() else None


def widest(arch: Architecture) -> Architecture:
    """`arch` with every embedding, projection and hidden layer at the space's widest candidate (its fields,
    pairs, functions and insertions kept): on MovieLens the supernet ranked width-16 pair projections last
    where 6 epochs of training ranked them first (docs/search.md, "Real data")."""
    s = arch.space
    rows = {c: list(arch.indices(c)) for c in COMPONENTS} | {
        "emb": [len(s.emb_dims) - 1] * s.num_fields, "proj": [len(s.proj_dims) - 1] * s.num_pairs,
        "hidden": [len(s.hidden_units) - 1] * s.num_layers}
    return Architecture(s, Architecture.from_indices(s, rows).choices, {"widened": True})


def candidates(gen: ArchitectureGenerator, k: int, best: Architecture | None, seed: int = 0,
               samples: int = 256, widen: bool = False) -> list[Architecture]:
    """The search's pick (if any) then the generator's top models: k distinct standalone models at most; with
    `widen` each followed by itself at the widest widths (when that is another model): 2k at most."""
    proposed = ([] if best is None else [best]) + gen.top_k(k, torch.Generator().manual_seed(seed), samples)
    models: dict[Any, Architecture] = {}
    for a in proposed:
        models.setdefault(a.layout, a)
    chosen = list(models.values())[:k]
    if not widen:
        return chosen
    out: dict[Any, Architecture] = {}
    for a in chosen:
        out.setdefault(a.layout, a)
        wide = widest(a)
        out.setdefault(wide.layout, wide)
    return list(out.values())


class _ValAUC(Callback):
    """val/auc after every training epoch's validation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/auc"]))


@dataclass
class Trained:
    """One candidate after its brief training."""

    architecture: Architecture
    source: str  # "search" (best_architecture.json), "widened" (a candidate at the widest widths) or "generator"
    val_auc: list[float] = field(default_factory=list)  # per epoch (with a recipe: best.ckpt's alone)
    seconds: float = 0.0
    epochs: int = 0  # trained

    @property
    def best_val_auc(self) -> float:
        return max(self.val_auc) if self.val_auc else float("nan")


def train_briefly(arch: Architecture, data: Path, epochs: int, seed: int, lr: float, batch_size: int,
                  init_from: Path | None = None) -> tuple[list[float], float]:
    """Train `arch` from scratch (or from the supernet at `init_from`) for exactly `epochs` epochs:
    (val AUC per epoch, seconds)."""
    schema = Schema.load(data)
    seed_everything(seed, verbose=False)
    module = AutoIASRetrain(schema.field_names, schema.vocab_sizes, schema.hash,
                            optimizer=partial(torch.optim.Adam, lr=lr), architecture_json=arch.to_json_dict(),
                            init_from_search=None if init_from is None else str(init_from))
    dm = CTRDataModule(str(data), batch_size=batch_size, eval_batch_size=8192, seed=seed)
    curve = _ValAUC()
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=[curve])
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return curve.values, time.perf_counter() - start


def train_by_recipe(arch: Architecture, data: Path, vocab_sizes: Sequence[int], recipe: Sequence[Path], seed: int,
                    batch_size: int | None, folder: Path, name: str,
                    overrides: Sequence[str] = ()) -> tuple[float, int, float]:
    """Train `arch` from scratch exactly as `autoias fit -c RECIPE ...` retrains a searched architecture (its
    optimizer, lr schedule, early stopping and best.ckpt on val AUC), in a subprocess (the CLI is a command
    that no module imports), into `folder/name`: (best.ckpt's val AUC, epochs trained, seconds). `vocab_sizes`:
    the data's (for the architecture file's summary); `batch_size` None: the recipe's. The subprocess runs at this
    process's torch thread count (OMP_NUM_THREADS), so `--threads` (finalize's, the demo's) reaches it."""
    folder.mkdir(parents=True, exist_ok=True)
    arch_file = folder / f"{name}.json"
    atomic_write_text(arch_file, json.dumps(arch.to_json_dict(vocab_sizes), indent=1) + "\n")
    cmd = [sys.executable, "-m", "autoias_pl.cli", "fit", *(f"--config={c}" for c in recipe),
           f"--model.init_args.architecture={arch_file}", f"--data.data_dir={data}",
           *([] if batch_size is None else [f"--data.batch_size={batch_size}"]),
           f"--data.seed={seed}", f"--seed_everything={seed}", f"--trainer.logger.init_args.save_dir={folder}",
           "--trainer.logger.init_args.name=", f"--trainer.logger.init_args.version={name}",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *overrides]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"finalize: training candidate {name} failed (exit {done.returncode}): {last}")
    summary = json.loads((folder / name / FIT_SUMMARY_FILE).read_text())
    if summary.get("checkpoint_monitor") != "val/auc" or summary.get("best_score") is None:
        raise ValueError(f"{' '.join(map(str, recipe))}: finalize chooses on val/auc; the recipe's checkpoint "
                         f"monitors {summary.get('checkpoint_monitor')!r}")
    return float(summary["best_score"]), int(summary["epochs"]), seconds


def finalize(search: Path, data: Path, k: int = 4, epochs: int = 2, seed: int = 0, lr: float = 1e-3,
             batch_size: int | None = 512, finetune: bool = False, out: Path | None = None,
             samples: int = 256, widen: bool = False, recipe: Sequence[Path] = (),
             recipe_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Choose among the top-k candidates of the search run `search` on val AUC (see the module docstring);
    writes the chosen architecture and the report, returns the report. With `recipe` (config files) each
    candidate is trained by that retraining recipe to its own stop (`epochs`, `lr`, `finetune` unused)."""
    if k < 1 or epochs < 1:
        raise ValueError(f"need k >= 1 and epochs >= 1, got k={k}, epochs={epochs}")
    if recipe and finetune:
        raise ValueError("finalize: --finetune trains briefly from the supernet; it does not go with --recipe")
    ckpt, best_path = run_files(search)
    schema = Schema.load(data)
    gen = generator_from_checkpoint(ckpt)
    best = None if best_path is None else Architecture.load(best_path, schema_hash=schema.hash)
    out = out or (ckpt.parent.parent / FINAL_ARCH_FILE if search.is_file() else search / FINAL_ARCH_FILE)
    trained = []
    for i, arch in enumerate(candidates(gen, k, best, seed, samples, widen)):
        source = "widened" if arch.provenance.get("widened") else "generator"
        t = Trained(arch, "search" if best is not None and arch.layout == best.layout else source)
        if recipe:
            runs = out.parent / f"{out.stem}.runs"
            score, t.epochs, t.seconds = train_by_recipe(arch, data, schema.vocab_sizes, recipe, seed, batch_size,
                                                         runs, f"candidate{i}", recipe_overrides)
            t.val_auc = [score]
        else:
            t.val_auc, t.seconds = train_briefly(arch, data, epochs, seed, lr, batch_size or 512,
                                                 ckpt if finetune else None)
            t.epochs = len(t.val_auc)
        trained.append(t)
    chosen = max(range(len(trained)), key=lambda i: trained[i].best_val_auc)
    win = trained[chosen]
    how = {"recipe": [str(c) for c in recipe]} if recipe else {"epochs": epochs, "finetune": finetune}
    final = Architecture(win.architecture.space, win.architecture.choices,
                         {"finalize": {"val_auc": win.best_val_auc, "source": win.source, "k": len(trained), **how}})
    atomic_write_text(out, json.dumps(final.to_json_dict(schema.vocab_sizes), indent=1) + "\n")
    report = {"search": str(search), "checkpoint": str(ckpt), "k": k, **how, "widen": widen,
              "budget_epochs": sum(t.epochs for t in trained), "chosen": chosen, "out": str(out),
              "seconds": round(sum(t.seconds for t in trained), 1),
              "candidates": [{"source": t.source, "log_prob": t.architecture.provenance.get("log_prob"),
                              "val_auc": t.val_auc, "best_val_auc": t.best_val_auc, "epochs": t.epochs,
                              "params": t.architecture.num_params(schema.vocab_sizes),
                              "hidden": list(t.architecture.hidden), "seconds": round(t.seconds, 1),
                              **t.architecture.summary()} for t in trained]}
    atomic_write_text(out.with_suffix(".report.json"), json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m autoias_pl.search.finalize", description=__doc__.split("\n\n")[0])
    p.add_argument("--search", type=Path, required=True, help="a search run folder (or its checkpoint file)")
    p.add_argument("--data", type=Path, required=True, help="the prepared dataset the search ran on")
    p.add_argument("--k", type=int, default=4, help="candidates trained (default 4)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per candidate (default 2)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=256, help="generator draws the top k are taken from")
    p.add_argument("--finetune", action="store_true", help="start each candidate from the supernet's weights")
    p.add_argument("--widen", action="store_true",
                   help="also every candidate with every width (embedding, projection, MLP) at the widest")
    p.add_argument("--recipe", type=Path, nargs="+", default=[], metavar="CONFIG",
                   help="train each candidate to its own stop by this retraining recipe (config files in order, "
                        "e.g. configs/retrain.yaml configs/trainer/cpu.yaml) instead of --epochs")
    p.add_argument("--recipe-override", action="append", default=[], metavar="--KEY=VALUE",
                   help="an `autoias fit` override for every candidate's training (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None, help=f"default <run>/{FINAL_ARCH_FILE}")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = finalize(args.search, args.data, args.k, args.epochs, args.seed, args.lr, args.batch_size,
                      args.finetune, args.out, args.samples, args.widen, args.recipe, args.recipe_override)
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}
                     | {"best_val_auc": [c["best_val_auc"] for c in report["candidates"]]}))


if __name__ == "__main__":
    main()
