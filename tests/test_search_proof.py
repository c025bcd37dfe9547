"""The search finds planted interactions: synthetic data with 3 low-rank planted pairs among 45.

Checks, in order: (0) the data tests something: the teacher alone closes most of the gap between the
first-order-only AUC and the Bayes AUC; then a search with a CPU-sized space must
(a) rank the planted pairs above the others in the generator's P(select) (ranking AUC >= 0.8, mean over the
    last validation epochs),
(b) select them in best_architecture.json while leaving most other pairs out,
(c) give a greedy architecture whose val/auc beats the first epoch's, and the first one after the warm-up
    (the warm-up epoch validates the untrained generator's greedy path, at AUC ~0.5).
A larger run, either preset:  python -m tests.test_search_proof --rows 200000 --epochs 12 --preset robust
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping

from autoias_pl.auc import auc as np_auc
from autoias_pl.auc import batched_auc
from autoias_pl.data import synth
from autoias_pl.data.batch import CTRBatch
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.data.synth import synthesize
from autoias_pl.search import AutoIASSearch
from autoias_pl.space import Architecture, SearchSpace
from autoias_pl.supernet.supernet import Supernet
from tests.ddp_worker import MemoryDataModule

# CPU-sized space. Product is the only interaction function: with all four, a selection bit carries a cross
# only when its (random) function is product, which dilutes the signal 4x (see docs/search.md).
SPACE = {"emb_dims": (4, 8, 16), "proj_dims": (4, 8, 16), "functions": ("product",), "num_layers": 2,
         "hidden_units": (16, 32, 64)}
VOCAB_RANGE = (10, 30)  # small vocabularies: the planted crosses are learnable from ~10^5 rows (see below)
SYNTH = {"fields": 10, "planted_pairs": 3, "seed": 0, "rank": 1}
LR, INIT_STD = 1e-2, 0.1
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"reward_rows": 0, "baseline": "ema", "reward_scaling": False, "entropy_weight": 0.0,
              "warmup_batches": 0, "cost_weight": 0.0},
    "robust": {"reward_rows": 8192, "baseline": "leave_one_out", "reward_scaling": True, "entropy_weight": 0.01,
               "warmup_batches": -1, "cost_weight": 0.05},  # -1: one epoch of warm-up
}
LAST_EPOCHS = 3


def make_data(out: Path, rows: int) -> Schema:
    return synthesize(out, rows, vocab_range=VOCAB_RANGE, **SYNTH)


def val_ceilings(schema: Schema, val: CTRBatch) -> tuple[float, float]:
    """(first-order-only AUC, Bayes AUC) of the true model on the validation rows."""
    model = synth.SynthModel.from_schema(schema)
    x, y = val.features.numpy(), val.labels.numpy()
    return np_auc(model.first_order_logit(x), y), np_auc(model.probability(x), y)


def load(data_dir: Path) -> tuple[Schema, CTRBatch, CTRBatch]:
    schema = Schema.load(data_dir)
    return schema, read_rows(data_dir, "train", schema.rows["train"]), read_rows(data_dir, "val", schema.rows["val"])


def planted_mask(space: SearchSpace, schema: Schema) -> torch.Tensor:
    """(P,) True for the planted pairs."""
    planted = {tuple(p) for p in schema.extra["synthetic"]["planted_pairs"]}
    names = space.field_names
    return torch.tensor([(names[i], names[j]) in planted for i, j in space.pairs])


def ranking_auc(pair_probs: torch.Tensor, planted: torch.Tensor) -> float:
    """AUC of P(select) (P,) separating planted pairs from the others."""
    return np_auc(pair_probs.double().numpy(), planted.numpy())


def teacher_auc(schema: Schema, train: CTRBatch, val: CTRBatch, epochs: int = 2, batch: int = 1024) -> float:
    """Val AUC of the teacher architecture trained alone (no students, no generator)."""
    space = SearchSpace(tuple(schema.field_names), **SPACE)
    g = torch.Generator().manual_seed(0)
    net = Supernet(space, schema.vocab_sizes, INIT_STD)
    teacher, opt = Architecture.teacher(space), torch.optim.Adam(net.parameters(), lr=LR)
    for _ in range(epochs):
        order = torch.randperm(train.labels.numel(), generator=g)
        for b in range(train.labels.numel() // batch):
            idx = order[b * batch:(b + 1) * batch]
            loss = F.binary_cross_entropy_with_logits(net(train.features[idx], teacher), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return np_auc(net(val.features, teacher).numpy(), val.labels.numpy())


class PlantedTracker(Callback):
    """After each epoch (validation included): ranking AUC of the greedy-path P(select) of pairs, and val/auc."""

    def __init__(self, planted: torch.Tensor) -> None:
        self.planted, self.history = planted, []

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:  # after validation
        n = module.space.num_fields
        with torch.no_grad():
            probs = module.generator.probs("select")[n:, 1]  # (P,)
        self.history.append({"epoch": trainer.current_epoch, "ranking_auc": ranking_auc(probs, self.planted),
                             "val_auc": float(trainer.callback_metrics["val/auc"]),
                             "selected_pairs": int(module._val_arch.selected[n:].count(True)),
                             "planted_p": probs[self.planted].tolist(),
                             "other_p_mean": float(probs[~self.planted].mean())})
        h = self.history[-1]
        print(f"[proof] epoch {h['epoch']} ranking_auc {h['ranking_auc']:.3f} val_auc {h['val_auc']:.5f} "
              f"greedy pairs {h['selected_pairs']} planted p {[round(p, 2) for p in h['planted_p']]} "
              f"others {h['other_p_mean']:.3f}", file=sys.stderr, flush=True)


@torch.no_grad()
def oracle(model: AutoIASSearch, rows: CTRBatch, planted: torch.Tensor, archs: int = 300) -> dict[str, Any]:
    """Which selection bits carry signal in the supernet: val AUC of `archs` uniform random architectures
    (inherited weights) regressed on their selection bits by least squares; ranking AUC of the pair
    coefficients for the planted pairs, and the coefficients themselves."""
    g = torch.Generator().manual_seed(12345)
    sample = [Architecture.uniform_random(model.space, g) for _ in range(archs)]
    scores = torch.stack([model.supernet(rows.features, a) for a in sample])  # (K, R)
    aucs = batched_auc(scores, rows.labels)  # (K,)
    bits = torch.tensor([a.selected for a in sample], dtype=torch.float64)  # (K, V)
    design = torch.cat([torch.ones(archs, 1, dtype=torch.float64), bits], 1)  # (K, 1 + V)
    coef = torch.linalg.lstsq(design, aucs.unsqueeze(1)).solution.squeeze(1)  # (1 + V,)
    resid = aucs - design @ coef
    n = model.space.num_fields
    pair_coef = coef[1 + n:]  # (P,)
    return {"oracle_ranking_auc": ranking_auc(pair_coef, planted), "oracle_resid_std": float(resid.std()),
            "oracle_auc_mean": float(aucs.mean()), "oracle_field_coef": [round(float(c), 4) for c in coef[1:1 + n]],
            "oracle_planted_coef": [round(float(c), 4) for c in pair_coef[planted]],
            "oracle_other_coef_mean": float(pair_coef[~planted].mean()),
            "oracle_other_coef_std": float(pair_coef[~planted].std())}


def run_search(data_dir: Path, out: Path, preset: str, epochs: int, batch_size: int = 1024,
               seed: int = 0, patience: int = 100, lr: float = LR, oracle_archs: int = 0,
               **overrides: Any) -> dict[str, Any]:
    schema, train, val = load(data_dir)
    options = dict(PRESETS[preset], init_std=INIT_STD, **overrides)
    if options["warmup_batches"] < 0:
        options["warmup_batches"] = train.labels.numel() // batch_size
    model = AutoIASSearch(schema.field_names, schema.vocab_sizes, schema.hash, seed=seed,
                          supernet_optimizer=partial(torch.optim.Adam, lr=lr), **SPACE, **options)
    tracker = PlantedTracker(planted_mask(model.space, schema))
    dm = MemoryDataModule(train, val, batch_size, seed, reward_stream=options["reward_rows"] == 0,
                          reward_batch_size=2048, eval_batch_size=8192)
    trainer = Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      default_root_dir=str(out), callbacks=[tracker, EarlyStopping("val/auc", patience=patience,
                                                                                   mode="max")])
    start = time.time()
    trainer.fit(model, datamodule=dm)
    best = json.loads((out / "best_architecture.json").read_text())
    planted = {"x".join(p) for p in schema.extra["synthetic"]["planted_pairs"]}
    chosen = set(best["summary"]["selected_pairs"])
    hist = tracker.history
    extra = oracle(model, CTRBatch(val.features[:8192], val.labels[:8192]), tracker.planted, oracle_archs) \
        if oracle_archs else {}
    return extra | {
        "preset": preset, "options": options, "seconds": round(time.time() - start, 1), "epochs": len(hist),
        "ranking_auc_last": sum(h["ranking_auc"] for h in hist[-LAST_EPOCHS:]) / min(LAST_EPOCHS, len(hist)),
        "ranking_auc_per_epoch": [round(h["ranking_auc"], 3) for h in hist],
        "val_auc_per_epoch": [round(h["val_auc"], 5) for h in hist],
        "val_auc_first": hist[0]["val_auc"], "val_auc_best": best["provenance"]["val_auc"],
        # the first epoch validated after the generator started learning (warm-up epochs: a random greedy path)
        "val_auc_after_warmup": hist[min(options["warmup_batches"] // (train.labels.numel() // batch_size),
                                         len(hist) - 1)]["val_auc"],
        "best_epoch": best["provenance"]["epoch"], "planted": sorted(planted),
        "best_selected_pairs": sorted(chosen), "planted_selected": len(planted & chosen),
        "other_selected": len(chosen - planted), "other_pairs": model.space.num_pairs - len(planted),
        "planted_p_last": [round(p, 3) for p in hist[-1]["planted_p"]], "other_p_mean_last": hist[-1]["other_p_mean"],
        "bayes_auc_test": schema.extra["synthetic"]["bayes_auc_test"],
        "first_order_auc_test": schema.extra["synthetic"]["first_order_auc_test"],
    }


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads for this test only; the previous count comes back even when the test fails."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("two_threads")
def test_search_finds_planted_pairs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data(data, 60_000)
    schema, train, val = load(data)
    first, bayes = val_ceilings(schema, val)
    teacher = teacher_auc(schema, train, val)
    gap_closed = (teacher - first) / (bayes - first)
    assert gap_closed > 0.6, f"teacher {teacher:.4f} closes only {gap_closed:.0%} of {first:.4f}..{bayes:.4f}"
    r = run_search(data, tmp_path / "run", "robust", epochs=4, batch_size=512)
    assert r["ranking_auc_last"] >= 0.8, r
    assert r["planted_selected"] == 3 and r["other_selected"] <= r["other_pairs"] // 3, r
    assert r["val_auc_best"] > r["val_auc_first"], r
    assert r["val_auc_best"] > r["val_auc_after_warmup"], r  # the search itself improves the architecture


def main() -> None:
    global SPACE  # --functions rebinds the space for this process (run_search and teacher_auc read it)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="robust")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/proof"))
    parser.add_argument("--set", nargs="*", default=[], help="overrides KEY=JSON, e.g. cost_weight=0.05")
    parser.add_argument("--teacher", action="store_true", help="also report the teacher-only val AUC")
    parser.add_argument("--functions", nargs="+", default=list(SPACE["functions"]),
                        help="interaction functions of the space (default: product only, as in the test)")
    args = parser.parse_args()
    SPACE = dict(SPACE, functions=tuple(args.functions))
    torch.set_num_threads(args.threads)
    data = args.out / f"synth{args.rows}"
    if not data.exists():
        make_data(data, args.rows)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    report: dict[str, Any] = {}
    if args.teacher:
        schema, train, val = load(data)
        report["teacher_val_auc"] = teacher_auc(schema, train, val)
        report["first_order_val_auc"], report["bayes_val_auc"] = val_ceilings(schema, val)
    run = args.out / f"{args.preset}-{int(time.time())}"
    report.update(run_search(data, run, args.preset, args.epochs, args.batch_size, args.seed, **overrides))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
