"""Why the in-space fm / deepfm lost to the published ones: variants of their init and parts, trained alike.

    OMP_NUM_THREADS=1 python benchmarks/init_study.py --data DIR deepfm deepfm+oldinit ref:deepfm ref:deepfm+nofo \
        --seeds 0 1 [--out study.jsonl]

A variant is a model (an in-space baseline of autoias_pl/baselines.py at dim 16, 3 x 400, or a `ref:` model)
and `+`-joined changes, applied in order:
  oldinit    the former init: projections U(+-1/sqrt(d)), the read-out nn.Linear's U(+-1/sqrt(fan_in))
  ones       the read-out weights of the pair vectors at "out" set to 1 (today's init does it already)
  idproj     projections frozen at the identity prefix (pairs of raw embeddings)
  fo         plus per-id first-order weights (references.FirstOrder, without its second bias)
  nofo       a reference without its first-order weights (a bias instead)
  embstdS    embeddings redrawn N(0, S)
Each (variant, seed) trains by a plain loop with the retraining recipe (configs/retrain.yaml): Adam 1e-3, batch
512 (`--batch-size`), a full shuffle per epoch, val AUC per epoch, lr x 0.1 after two validations without gain,
early stopping after 5, the best-val weights; then test AUC, raw and Platt-calibrated (on val) logloss. One JSON
line per run on stdout and appended to `--out`; then the means per variant. Figures: docs/supernet.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.auc import auc
from autoias_pl.baselines import baseline
from autoias_pl.calibration import fit_platt
from autoias_pl.ctr_model import CTRModel
from autoias_pl.data.schema import Schema
from autoias_pl.data.stream import read_rows
from autoias_pl.references import FirstOrder, is_reference, reference
from autoias_pl.retrain import baseline_space


class WithFirstOrder(nn.Module):
    """model(x) + per-id first-order weights (FirstOrder's own bias frozen at 0: the model has one)."""

    def __init__(self, model: nn.Module, vocab: Sequence[int]) -> None:
        super().__init__()
        self.model, self.linear = model, FirstOrder(vocab)
        self.linear.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) + self.linear(x)  # (B,)


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], dtype=torch.float32)  # (B,)


class WithoutFirstOrder(nn.Module):
    """A reference whose FirstOrder (`linear` or `wide`) is replaced by one bias."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        setattr(model, "linear" if hasattr(model, "linear") else "wide", Zero())
        self.model, self.bias = model, nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) + self.bias  # (B,)


@torch.no_grad()
def change(m: nn.Module, what: str, vocab: Sequence[int]) -> nn.Module:
    """`m` with one change of the module docstring applied."""
    if what == "fo":
        return WithFirstOrder(m, vocab)
    if what == "nofo":
        return WithoutFirstOrder(m)
    if not isinstance(m, CTRModel):
        raise SystemExit(f"{what!r} applies to in-space models only")
    if what == "oldinit":
        for w in m.projections:
            nn.init.uniform_(w, -(w.shape[1] ** -0.5), w.shape[1] ** -0.5)
        bound = m.readout.weight.shape[1] ** -0.5
        nn.init.uniform_(m.readout.weight, -bound, bound)
    elif what == "ones":
        m.readout.weight[0, list(m.layout.readout_pair_columns)] = 1.0
    elif what == "idproj":
        for w in m.projections:
            w.copy_(torch.eye(w.shape[1], w.shape[2]).expand_as(w))
            w.requires_grad_(False)
    elif what.startswith("embstd"):
        for table in m.tables:
            nn.init.normal_(table.weight, 0.0, float(what[6:]))
    else:
        raise SystemExit(f"unknown change {what!r}")
    return m


def build(variant: str, schema: Schema) -> nn.Module:
    name, *changes = variant.split("+")
    vocab = list(schema.vocab_sizes)
    if is_reference(name):
        model: nn.Module = reference(name, vocab, 16, 400, 3)
    else:
        space = baseline_space(schema.field_names, schema.hash, 16, 400, 3)
        model = CTRModel(baseline(name, space, dim=16, hidden=400), vocab)
    for what in changes:
        model = change(model, what, vocab)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    return torch.cat([model(x[s : s + 4096]) for s in range(0, len(x), 4096)])  # (R,)


def run(variant: str, seed: int, data: dict[str, tuple[Tensor, Tensor]], schema: Schema, batch: int) -> dict:
    torch.manual_seed(seed)
    model = build(variant, schema)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=1)
    (x, y), (xv, yv), (xt, yt) = data["train"], data["val"], data["test"]
    g, best, state, bad, epochs, start = torch.Generator().manual_seed(seed), -1.0, {}, 0, 0, time.time()
    while epochs < 50 and bad < 5:
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs += 1
        val = auc(predict(model, xv).numpy(), yv.numpy())
        plateau.step(val)
        best, bad, state = (val, 0, {k: t.clone() for k, t in model.state_dict().items()}) if val > best \
            else (best, bad + 1, state)
    model.load_state_dict(state)
    zv, zt = predict(model, xv).double(), predict(model, xt).double()
    a, b = fit_platt(zv, yv)
    bce = nn.functional.binary_cross_entropy_with_logits
    return {"variant": variant, "seed": seed, "val_auc": best, "test_auc": auc(zt.numpy(), yt.numpy()),
            "test_logloss": float(bce(zt, yt.double())), "test_logloss_cal": float(bce(a * zt + b, yt.double())),
            "epochs": epochs, "params": sum(p.numel() for p in params), "seconds": round(time.time() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--data", required=True, help="a prepared dataset folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", default=None, help="append the JSON lines here too")
    args = p.parse_args()
    torch.set_num_threads(1)
    schema = Schema.load(args.data)
    data = {}
    for split in ("train", "val", "test"):
        rows = read_rows(args.data, split, schema.rows[split])
        data[split] = (rows.features, rows.labels.float())
    results: dict[str, list[dict]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            r = run(variant, seed, data, schema, args.batch_size)
            results.setdefault(variant, []).append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    for variant, rs in results.items():
        mean = {k: statistics.mean(r[k] for r in rs) for k in ("test_auc", "test_logloss", "test_logloss_cal")}
        print(f"{variant}: test AUC {mean['test_auc']:.4f}, logloss {mean['test_logloss']:.4f}, "
              f"calibrated {mean['test_logloss_cal']:.4f} ({len(rs)} seeds)")


if __name__ == "__main__":
    main()
