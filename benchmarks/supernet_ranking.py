"""Does the supernet rank architectures as training does? Inherited-weight val AUC against retrained val AUC.

From a trained search run (its checkpoints/last.ckpt) on a prepared log:

1. architectures across sizes, stratified around a base (the search's best_architecture.json, else the
   generator's greedy one): each decision kind varied while the others stay the base's
   - `mlp_width`: every hidden layer's width set (uniform 100/200/400-like, and mixed shapes);
   - `emb_width`: every field's embedding width and every pair's projection width set;
   - `pairs`: which pairs are selected (none, half of the base's, the base's, more, all, all as product);
   plus `random`: uniform draws of the space and draws of the generator;
2. each scored with the supernet's inherited weights on the whole validation split (val AUC);
3. each retrained from scratch for the same `--epochs` with the retraining module (search/finalize.py's
   `train_briefly`: Adam 1e-3, batch 512, seed 0), its best epoch's val AUC;
4. Kendall tau (tau-b) of the two orders, overall and within each kind, and the question of narrow widths:
   tau between an architecture's MLP units and (inherited rank - retrained rank), rank 1 the best: > 0
   means the supernet ranks wide MLPs worse than training does (weight sharing favours narrow ones).

Prints one JSON object; writes `<out>/supernet_ranking.png` (scatter) and `<out>/supernet_ranking.json`.

    PYTHONPATH=. python benchmarks/supernet_ranking.py --search runs/real/search \
        --data /work/data/ml100k/prepared --epochs 2 --threads 1 --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoias_pl.auc import batched_auc  # noqa: E402
from autoias_pl.data.schema import Schema  # noqa: E402
from autoias_pl.data.stream import read_rows  # noqa: E402
from autoias_pl.io import atomic_write, atomic_write_text  # noqa: E402
from autoias_pl.search.finalize import generator_from_checkpoint, run_files, train_briefly  # noqa: E402
from autoias_pl.space import COMPONENTS, Architecture  # noqa: E402
from autoias_pl.supernet.checkpoint import supernet_from_checkpoint  # noqa: E402

KINDS = ("mlp_width", "emb_width", "pairs", "random")


def replace(arch: Architecture, **indices: list[int]) -> Architecture:
    """`arch` with the given components' candidate indices replaced."""
    rows = {c: list(arch.indices(c)) for c in COMPONENTS} | indices
    return Architecture.from_indices(arch.space, rows)


def with_pairs(arch: Architecture, on: list[int], func: list[int] | None = None) -> Architecture:
    """`arch` with exactly the pairs `on` selected (into layer 0 unless already placed), functions `func`."""
    s, n = arch.space, arch.space.num_fields
    select, insert = list(arch.indices("select")), list(arch.indices("insert"))
    for q in range(s.num_pairs):
        if q in on and not select[n + q]:
            insert[n + q] = 0
        select[n + q] = int(q in on)
    return replace(arch, select=select, insert=insert, func=func if func is not None else list(arch.indices("func")))


def variants(base: Architecture, gen: Any, n_random: int, seed: int) -> list[tuple[str, Architecture]]:
    """(kind, architecture) pairs: the stratified variations of `base` and the random ones (see docstring)."""
    s = base.space
    H, L = len(s.hidden_units), s.num_layers
    shapes = [[h] * L for h in range(H)] + [list(range(H - 1, -1, -1))[:L] + [0] * max(0, L - H),
                                            list(range(H))[:L] + [H - 1] * max(0, L - H),
                                            [H - 1] + [0] * (L - 1)]
    out = [("mlp_width", replace(base, hidden=h)) for h in shapes]
    E, P = len(s.emb_dims), len(s.proj_dims)
    for e, p in [(0, 0), (E // 2, P // 2), (E - 1, P - 1), (0, P - 1), (E - 1, 0), (E // 2, P - 1)]:
        out.append(("emb_width", replace(base, emb=[e] * s.num_fields, proj=[p] * s.num_pairs)))
    n = s.num_fields
    chosen = [q for q in range(s.num_pairs) if base.selected[n + q]]
    g = torch.Generator().manual_seed(seed)
    rest = [q for q in torch.randperm(s.num_pairs, generator=g).tolist() if q not in chosen]
    product = [s.functions.index("product")] * s.num_pairs if "product" in s.functions else None
    for on, func in [([], None), (chosen[: len(chosen) // 2], None), (chosen, None),
                     (chosen + rest[: max(3, len(rest) // 4)], None), (list(range(s.num_pairs)), None),
                     (list(range(s.num_pairs)), product)]:
        out.append(("pairs", with_pairs(base, on, func)))
    for k in range(n_random):
        if k % 2 == 0:
            out.append(("random", Architecture.uniform_random(s, g)))
        else:
            out.append(("random", gen.sample(1, g).architectures[0]))
    return out


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two equally long lists (ties counted as neither concordant nor discordant)."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            a, b = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            if a and b:
                conc, disc = conc + (a == b), disc + (a != b)
            tx, ty = tx + (a == 0 and b != 0), ty + (b == 0 and a != 0)
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


def ranks(values: list[float]) -> list[int]:
    """Rank 1 = the best (largest) value."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0] * len(values)
    for r, i in enumerate(order):
        out[i] = r + 1
    return out


def figure(rows: list[dict[str, Any]], taus: dict[str, float], path: Path) -> None:
    """Left: the two val AUCs; right: the two ranks (1 = best), which the outliers do not squeeze."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    inh = ranks([r["inherited_val_auc"] for r in rows])
    ret = ranks([r["retrained_val_auc"] for r in rows])
    for kind, color in zip(KINDS, ("C0", "C1", "C2", "C7"), strict=True):
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        size = [12 + rows[i]["mlp_units"] / 12 for i in idx]
        label = f"{kind} (tau {taus[kind]:+.2f})"
        left.scatter([rows[i]["inherited_val_auc"] for i in idx], [rows[i]["retrained_val_auc"] for i in idx],
                     color=color, s=size, alpha=0.75, label=label)
        right.scatter([inh[i] for i in idx], [ret[i] for i in idx], color=color, s=size, alpha=0.75, label=label)
    left.set(xlabel="val AUC, inherited supernet weights", ylabel="val AUC, retrained from scratch")
    right.set(xlabel="rank, inherited supernet weights (1 = best)", ylabel="rank, retrained from scratch")
    fig.suptitle(f"supernet vs training ranking, {len(rows)} architectures: Kendall tau {taus['overall']:+.2f} "
                 "(marker size: MLP units)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--search", type=Path, required=True, help="a search run folder (checkpoints/last.ckpt)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=2, help="retraining epochs per architecture (the same for all)")
    p.add_argument("--random", type=int, default=6, help="random architectures (uniform and generator draws)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    p.add_argument("--replot", type=Path, default=None, help="redraw the figure of a written JSON, train nothing")
    args = p.parse_args()
    if args.replot is not None:
        result = json.loads(args.replot.read_text())
        figure(result["rows"], result["kendall_tau"], args.out / "supernet_ranking.png")
        return
    torch.set_num_threads(args.threads)
    ckpt, best_path = run_files(args.search)
    schema = Schema.load(args.data)
    supernet, gen = supernet_from_checkpoint(ckpt).eval(), generator_from_checkpoint(ckpt)
    base = Architecture.load(best_path, schema.hash) if best_path is not None else gen.greedy()
    archs = variants(base, gen, args.random, args.seed)
    val = read_rows(args.data, "val", schema.rows["val"])
    with torch.no_grad():
        inherited = [float(batched_auc(supernet(val.features, a).float().unsqueeze(0), val.labels)[0])
                     for _, a in archs]
    rows, cache = [], {}
    for (kind, a), inh in zip(archs, inherited, strict=True):
        if a.layout not in cache:  # the base recurs in several kinds: trained once
            start = time.perf_counter()
            curve, _ = train_briefly(a, args.data, args.epochs, args.seed, 1e-3, 512)
            cache[a.layout] = (max(curve), time.perf_counter() - start)
        rows.append({"kind": kind, "inherited_val_auc": inh, "retrained_val_auc": cache[a.layout][0],
                     "hidden": list(a.hidden), "mlp_units": sum(a.hidden) if a.layout.first is not None else 0,
                     "emb_dims": sorted(set(a.emb_dims)), "pairs": len(a.summary()["selected_pairs"]),
                     "params": a.num_params(schema.vocab_sizes), "seconds": round(cache[a.layout][1], 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    taus = {"overall": kendall_tau(inherited, [r["retrained_val_auc"] for r in rows])}
    for kind in KINDS:
        pts = [r for r in rows if r["kind"] == kind]
        taus[kind] = kendall_tau([r["inherited_val_auc"] for r in pts], [r["retrained_val_auc"] for r in pts])
    shift = [ri - rr for ri, rr in zip(ranks(inherited), ranks([r["retrained_val_auc"] for r in rows]), strict=True)]
    width = [r for r in rows if r["kind"] == "mlp_width"]
    result = {"search": str(args.search), "data": str(args.data), "epochs": args.epochs, "n": len(rows),
              "kendall_tau": taus,
              "mlp_units_vs_rank_shift_tau": kendall_tau([r["mlp_units"] for r in rows], shift),
              "mlp_width_rows": [{k: r[k] for k in ("hidden", "inherited_val_auc", "retrained_val_auc")}
                                 for r in width],
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    figure(rows, taus, args.out / "supernet_ranking.png")
    atomic_write_text(args.out / "supernet_ranking.json", json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
