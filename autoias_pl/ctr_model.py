"""The standalone CTR model of one architecture, at its true sizes (paper 3.2; no supernet code).

It is built from `arch.layout` (`ArchitectureLayout`, autoias_pl/layout.py: the groups, widths and input
order that `Architecture.num_params` and the supernet's plan read too), so its parameter count equals
`Architecture.num_params` exactly. To stay loop-free over fields and pairs:
- fields are grouped by embedding width: one concatenated table per distinct d (<= |emb_dims| lookups);
- fields in a selected pair are projected per (d_i, K_i) group, K_i = widest selected pair of field i;
  a pair of width k reads the column prefix [:k] of its fields' projections;
- pairs are grouped by (function, k) (<= |functions| x |proj_dims| groups), the shared concat map is Kc x Kc;
- inside every group the vectors are sorted by insertion target, so a layer reads contiguous slices.
MLP layers before the first one that receives a vector would compute a constant: they do not exist here
(`export` folds that constant into the next bias).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.space import Architecture

_ELEMENTWISE = {"product": torch.mul, "plus": torch.add, "max": torch.maximum}  # eq. 6, concat below


def _linear(fan_in: int, width: int) -> nn.Linear:
    """nn.Linear(fan_in, width); with fan_in 0 (a read-out of nothing) just a zero bias, without init warnings."""
    if fan_in:
        return nn.Linear(fan_in, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layer = nn.Linear(0, width)
    nn.init.zeros_(layer.bias)
    return layer


class CTRModel(nn.Module):
    """The model of `architecture` over fields with `vocab_sizes`: (B, n) int64 ids -> logits (B,).

    `batch_norm`: BatchNorm1d after each MLP layer's Linear, before its ReLU (`norms`; a retraining option,
    not counted by `Architecture.num_params`)."""

    def __init__(self, arch: Architecture, vocab_sizes: Sequence[int], batch_norm: bool = False) -> None:
        super().__init__()
        self.architecture, self.vocab_sizes = arch, tuple(int(v) for v in vocab_sizes)
        self.layout = lay = arch.layout  # the shared ArchitectureLayout (autoias_pl/layout.py)
        L = arch.space.num_layers
        self.tables = nn.ModuleList()
        where: dict[int, tuple[int, int]] = {}  # field -> (emb group, position)
        for g, (w, fields) in enumerate(lay.emb_groups):
            self.tables.append(nn.Embedding(sum(self.vocab_sizes[i] for i in fields), w))
            local = torch.tensor([0, *(self.vocab_sizes[i] for i in fields[:-1])]).cumsum(0)  # (m,)
            self._buffer(f"emb{g}_fields", list(fields))
            self.register_buffer(f"emb{g}_offsets", local, persistent=False)
            where.update({i: (g, r) for r, i in enumerate(fields)})
        self.projections = nn.ParameterList()
        for g, (w, k, fields) in enumerate(lay.proj_groups):
            self.projections.append(nn.Parameter(torch.empty(len(fields), w, k)))  # (m, d, K)
            self._buffer(f"proj{g}_src", [where[i][1] for i in fields])
        self.proj_emb_group = [where[fields[0]][0] for _, _, fields in lay.proj_groups]
        # per pair width k: the proj groups with K >= k (all fields a width-k pair can read), and positions in them
        self.prefix_groups: dict[int, tuple[int, ...]] = {}
        pos: dict[int, dict[int, int]] = {}
        for k in sorted({k for _, k, _ in lay.pair_groups}):
            self.prefix_groups[k] = tuple(g for g, (_, kg, _) in enumerate(lay.proj_groups) if kg >= k)
            order = [i for g in self.prefix_groups[k] for i in lay.proj_groups[g][2]]
            pos[k] = {i: r for r, i in enumerate(order)}
        pairs = self.architecture.space.pairs
        for g, (_, k, ps) in enumerate(lay.pair_groups):
            self._buffer(f"pair{g}_left", [pos[k][pairs[p][0]] for p in ps])
            self._buffer(f"pair{g}_right", [pos[k][pairs[p][1]] for p in ps])
        kc = lay.concat_width  # no concat pair: no (empty) parameters, which plain DDP would call unused
        for name, shape in (("concat_a", (kc, kc)), ("concat_b", (kc, kc)), ("concat_c", (kc,))):
            self.register_parameter(name, nn.Parameter(torch.empty(shape)) if kc else None)  # (Kc, Kc), (Kc,)
        self.slices = tuple(lay.slices(t) for t in range(L + 1))  # per target: (vector group, start, end)
        self.mlp = nn.ModuleList(_linear(fan_in, h) for fan_in, h in lay.mlp)
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) if batch_norm else nn.Identity() for _, h in lay.mlp)
        self.readout = _linear(lay.readout_fan_in, 1)
        self.reset_parameters()

    def _buffer(self, name: str, values: list[int]) -> None:
        self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    def reset_parameters(self) -> None:
        """Fresh init for retraining from scratch: embeddings N(0, 0.01), the rest like nn.Linear."""
        for table in self.tables:
            nn.init.normal_(table.weight, 0.0, 0.01)
        for w in self.projections:
            nn.init.uniform_(w, -(w.shape[1] ** -0.5), w.shape[1] ** -0.5)
        if self.layout.concat_width:
            bound = (2 * self.layout.concat_width) ** -0.5
            for p in (self.concat_a, self.concat_b, self.concat_c):
                nn.init.uniform_(p, -bound, bound)

    def vectors(self, x: Tensor) -> list[Tensor]:
        """(B, n) ids -> per vector group (emb groups, then pair groups) its vectors (B, m_g, w_g)."""
        embs = [table(x.index_select(1, getattr(self, f"emb{g}_fields")) + getattr(self, f"emb{g}_offsets"))
                for g, table in enumerate(self.tables)]  # [(B, m_g, d_g)]
        groups = list(embs)
        if self.layout.pair_groups:
            proj = self._project(embs)  # [(m, B, K)] per proj group, field-major
            prefixes: dict[int, Tensor] = {}  # k -> (B, q_k, k): the [:k] prefixes of the fields a width-k pair reads
            for g, (func, k, _) in enumerate(self.layout.pair_groups):
                left, right = getattr(self, f"pair{g}_left"), getattr(self, f"pair{g}_right")  # (m,), (m,)
                if k not in prefixes:
                    prefixes[k] = torch.cat([proj[q].transpose(0, 1)[:, :, :k] for q in self.prefix_groups[k]], 1)
                pk = prefixes[k]  # (B, q_k, k)
                ei, ej = pk.index_select(1, left), pk.index_select(1, right)  # (B, m, k) each, contiguous
                if func == "concat":  # ê_i @ A[:k, :k] + c[:k] + ê_j @ B[:k, :k], on the pair's gathered rows only
                    v = torch.addmm(self.concat_c[:k], ei.view(-1, k), self.concat_a[:k, :k])  # (B m, k)
                    # in-place addmm_ is not autocast: align to v's dtype (bf16 under autocast; no-op in fp32)
                    v = v.addmm_(ej.view(-1, k).to(v.dtype), self.concat_b[:k, :k].to(v.dtype)).view(ei.shape)
                else:
                    v = _ELEMENTWISE[func](ei, ej)  # (B, m, k)
                groups.append(v)  # (B, m, k)
        return groups

    def _project(self, embs: list[Tensor]) -> list[Tensor]:
        """Projections of the fields in selected pairs, per (d, K) group, field-major: [(m, B, K)]."""
        out = []
        for g, (w, src) in enumerate(zip(self.projections, self.proj_emb_group, strict=True)):
            e = embs[src].index_select(1, getattr(self, f"proj{g}_src"))  # (B, m, d)
            out.append(torch.bmm(e.transpose(0, 1), w))  # (m, B, d) @ (m, d, K) -> (m, B, K)
        return out

    def _inputs(self, groups: list[Tensor], o: Tensor | None, target: int) -> list[Tensor]:
        parts = [] if o is None else [o]
        return parts + [groups[g][:, a:b].flatten(1) for g, a, b in self.slices[target]]  # [(B, w)]

    def forward(self, x: Tensor) -> Tensor:
        """x (B, n) int64 ids -> logits (B,)."""
        groups = self.vectors(x)
        o: Tensor | None = None
        L = self.architecture.space.num_layers
        for layer, norm, t in zip(self.mlp, self.norms, self.layout.mlp_layers, strict=True):
            o = torch.relu(norm(layer(torch.cat(self._inputs(groups, o, t), 1))))  # (B, h_t)
        parts = self._inputs(groups, o, L)
        if not parts:
            return self.readout.bias.expand(x.shape[0])  # (B,)
        return self.readout(torch.cat(parts, 1)).squeeze(1)  # (B,)
