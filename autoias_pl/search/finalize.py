"""Top-k final selection: the search proposes k architectures, brief training from scratch picks one.

    python -m autoias_pl.search.finalize --search RUN_DIR --data DIR [--k 4] [--epochs 2] [--out FILE]

The supernet ranks architectures with inherited weights, and that ranking is noisy among close candidates
(benchmarks/supernet_ranking.py measures it). So instead of trusting the search's one pick, `finalize`
takes the candidates

1. the search's `best_architecture.json` (its validated, pruned pick), when the run folder has one, and with
   `--widen` the same at the widest embedding, projection and MLP widths (weight sharing ranked wide pair
   projections too low on MovieLens: benchmarks/supernet_ranking.py);
2. the generator's most likely distinct models (`ArchitectureGenerator.top_k`: greedy + sample-and-dedupe
   by log P(a)) from the run's checkpoint,

keeps the first k distinct standalone models, trains each from scratch with the retraining module
(`AutoIASRetrain`, Adam at `--lr`, the same seed, data order and `--epochs` for all; `--finetune` starts each
from the supernet's weights instead), and chooses the one with the best val AUC (its best epoch). The budget
is stated and respected: k x epochs passes over the training split (`budget_epochs` in the report), no early
exit. Written atomically: the chosen architecture JSON (`--out`, default `<run>/final_architecture.json`,
retrainable like any searched one) and `<out stem>.report.json` (every candidate's val AUC per epoch,
log-prob, parameters and seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.schema import Schema
from autoias_pl.io import atomic_write_text
from autoias_pl.retrain import AutoIASRetrain
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
    """The search's pick (if any; with `widen` also the pick at the widest widths) then the generator's top
    models: k distinct standalone models at most."""
    picks = [] if best is None else [best, widest(best)] if widen else [best]
    proposed = picks + gen.top_k(k, torch.Generator().manual_seed(seed), samples)
    models: dict[Any, Architecture] = {}
    for a in proposed:
        models.setdefault(a.layout, a)
    return list(models.values())[:k]


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
    source: str  # "search" (best_architecture.json), "widened" (it at the widest widths) or "generator"
    val_auc: list[float] = field(default_factory=list)  # per epoch
    seconds: float = 0.0

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


def finalize(search: Path, data: Path, k: int = 4, epochs: int = 2, seed: int = 0, lr: float = 1e-3,
             batch_size: int = 512, finetune: bool = False, out: Path | None = None,
             samples: int = 256, widen: bool = False) -> dict[str, Any]:
    """Choose among the top-k candidates of the search run `search` on val AUC (see the module docstring);
    writes the chosen architecture and the report, returns the report."""
    if k < 1 or epochs < 1:
        raise ValueError(f"need k >= 1 and epochs >= 1, got k={k}, epochs={epochs}")
    ckpt, best_path = run_files(search)
    schema = Schema.load(data)
    gen = generator_from_checkpoint(ckpt)
    best = None if best_path is None else Architecture.load(best_path, schema_hash=schema.hash)
    trained = []
    for arch in candidates(gen, k, best, seed, samples, widen):
        source = "widened" if arch.provenance.get("widened") else "generator"
        t = Trained(arch, "search" if best is not None and arch.layout == best.layout else source)
        t.val_auc, t.seconds = train_briefly(arch, data, epochs, seed, lr, batch_size, ckpt if finetune else None)
        trained.append(t)
    chosen = max(range(len(trained)), key=lambda i: trained[i].best_val_auc)
    win = trained[chosen]
    out = out or (ckpt.parent.parent / FINAL_ARCH_FILE if search.is_file() else search / FINAL_ARCH_FILE)
    final = Architecture(win.architecture.space, win.architecture.choices,
                         {"finalize": {"val_auc": win.best_val_auc, "source": win.source, "k": len(trained),
                                       "epochs": epochs, "finetune": finetune}})
    atomic_write_text(out, json.dumps(final.to_json_dict(schema.vocab_sizes), indent=1) + "\n")
    report = {"search": str(search), "checkpoint": str(ckpt), "k": k, "epochs": epochs, "finetune": finetune,
              "widen": widen,
              "budget_epochs": len(trained) * epochs, "chosen": chosen, "out": str(out),
              "seconds": round(sum(t.seconds for t in trained), 1),
              "candidates": [{"source": t.source, "log_prob": t.architecture.provenance.get("log_prob"),
                              "val_auc": t.val_auc, "best_val_auc": t.best_val_auc,
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
                   help="also the search's pick with every width (embedding, projection, MLP) at the widest")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None, help=f"default <run>/{FINAL_ARCH_FILE}")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = finalize(args.search, args.data, args.k, args.epochs, args.seed, args.lr, args.batch_size,
                      args.finetune, args.out, args.samples, args.widen)
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}
                     | {"best_val_auc": [c["best_val_auc"] for c in report["candidates"]]}))


if __name__ == "__main__":
    main()
