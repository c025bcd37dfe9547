"""Does the supernet separate the planted pairs? Paired per-pair AUC deltas on a supernet trained with
uniform students only (no generator), on planted synthetic data.

Trains the search's supernet (AutoIASSearch with proposer "uniform" and a warm-up as long as the run: teacher + N
uniform students per batch) for --epochs, then scores on 8192 validation rows, with inherited weights:
- clean context: every field at the widest embedding into layer 0, no pair; then that + one pair with one
  function, for every pair and function (P x F architectures);
- random contexts: --contexts uniform architectures, each with one pair set to off or to each function.
The delta of a pair and function is AUC(with it) - AUC(without the pair) on the same rows. Prints one JSON
object: per function the ranking AUC of the deltas for the planted pairs, the planted pairs' deltas and the
largest delta of any other pair; also the AUC of the clean context and of the true architecture (clean +
the planted pairs with product).

    python benchmarks/supernet_signal.py --epochs 8                        # per-function blocks (default)
    python benchmarks/supernet_signal.py --epochs 8 --shared-blocks        # one block per pair (before)
    python benchmarks/supernet_signal.py --epochs 3 --functions product    # the product-only space
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoias_pl.auc import auc, batched_auc  # noqa: E402
from autoias_pl.data.memory import MemoryDataModule  # noqa: E402
from autoias_pl.data.schema import Schema  # noqa: E402
from autoias_pl.data.stream import read_rows  # noqa: E402
from autoias_pl.data.synth import synthesize  # noqa: E402
from autoias_pl.experiments.ablations import SPACE  # noqa: E402
from autoias_pl.search import AutoIASSearch  # noqa: E402
from autoias_pl.search.refine import with_pair  # noqa: E402
from autoias_pl.space import COMPONENTS, Architecture  # noqa: E402


def planted_data(cache: Path, rows: int) -> Path:
    """10 fields, 3 rank-1 planted pairs, vocabularies 50..500 (written once under `cache`)."""
    path = cache / f"planted-{rows}-50-500"
    if not (path / "schema.json").exists():
        synthesize(path, rows, 10, planted_pairs=3, seed=0, rank=1, vocab_range=(50, 500), overwrite=True)
    return path


def summary(deltas: np.ndarray, planted: np.ndarray, functions: tuple[str, ...]) -> dict[str, Any]:
    """deltas (P, F) -> per function: ranking AUC for the planted pairs, their deltas, the others' max."""
    return {f: {"ranking_auc": round(auc(deltas[:, k], planted.astype(float)), 3),
                "planted": [round(float(v), 4) for v in deltas[planted, k]],
                "others_max": round(float(deltas[~planted, k].max()), 4)} for k, f in enumerate(functions)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--functions", nargs="+", default=list(SPACE["functions"]))
    p.add_argument("--shared-blocks", action="store_true", help="function_blocks=False (one block per pair)")
    p.add_argument("--contexts", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("runs/bench_cache"))
    a = p.parse_args()
    torch.set_num_threads(1)
    data = planted_data(a.cache, a.rows)
    schema = Schema.load(data)
    train, val = read_rows(data, "train", schema.rows["train"]), read_rows(data, "val", schema.rows["val"])
    space = dict(SPACE, functions=tuple(a.functions))
    m = AutoIASSearch.from_flat(schema.field_names, schema.vocab_sizes, schema.hash, seed=a.seed, sampler="uniform",
                                warmup_epochs=a.epochs + 1.0,  # the whole run
                                supernet_optimizer=partial(torch.optim.Adam, lr=a.lr), init_std=0.1,
                                teacher_functions="uniform", function_blocks=not a.shared_blocks, **space)
    start = time.perf_counter()
    Trainer(accelerator="cpu", max_epochs=a.epochs, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            default_root_dir=str(a.cache / "supernet_signal")).fit(
        m, datamodule=MemoryDataModule(train, val, 512, a.seed, eval_batch_size=8192))
    seconds = time.perf_counter() - start
    net, sp = m.supernet.eval(), m.space
    n, pairs, funcs = sp.num_fields, sp.num_pairs, len(sp.functions)
    names, planted_names = schema.field_names, {tuple(q) for q in schema.extra["synthetic"]["planted_pairs"]}
    planted = np.array([(names[i], names[j]) in planted_names for i, j in sp.pairs])
    x, y = val.features[:8192], val.labels[:8192]

    @torch.no_grad()
    def score(archs: list[Architecture]) -> np.ndarray:
        return batched_auc(torch.stack([net(x, q) for q in archs]).float(), y).numpy()

    teacher = Architecture.teacher(sp)
    choices = [list(c) for c in teacher.choices]
    choices[COMPONENTS.index("select")][n:] = [0] * pairs
    clean = Architecture(sp, tuple(tuple(c) for c in choices))
    s = score([clean] + [with_pair(clean, q, o) for q in range(pairs) for o in range(1, funcs + 1)])
    clean_deltas = s[1:].reshape(pairs, funcs) - s[0]  # (P, F)
    true = clean
    if "product" in sp.functions:
        for q in np.nonzero(planted)[0]:
            true = with_pair(true, int(q), sp.functions.index("product") + 1)
    rng, random_deltas = torch.Generator().manual_seed(123), np.zeros((pairs, funcs))
    for _ in range(a.contexts):
        ctx = Architecture.uniform_random(sp, rng)
        r = score([with_pair(ctx, q, o) for q in range(pairs) for o in range(funcs + 1)]).reshape(pairs, funcs + 1)
        random_deltas += (r[:, 1:] - r[:, :1]) / a.contexts
    print(json.dumps({"rows": a.rows, "epochs": a.epochs, "functions": sp.functions,
                      "function_blocks": not a.shared_blocks, "train_seconds": round(seconds, 1),
                      "auc_clean_context": round(float(s[0]), 4), "auc_true_architecture": round(float(score([true])[0]), 4),
                      "clean_context": summary(clean_deltas, planted, sp.functions),
                      "random_contexts": summary(random_deltas, planted, sp.functions)}))


if __name__ == "__main__":
    main()
