"""The standalone CTR model of one architecture, at its true sizes (paper 3.2; no supernet code).

It is built from `arch.layout` (`ArchitectureLayout`, autoias_pl/layout.py: the groups, widths and input
order that `Architecture.num_params` and the supernet's plan read too), so its parameter count equals
`Architecture.num_params` exactly. To stay loop-free over fields and pairs:
- fields are grouped by embedding width: one concatenated table per distinct d (<= |emb_dims| lookups);
- fields in a selected pair are projected per (d_i, K_i) group, K_i = widest selected pair of field i;
  a pair of width k reads the column prefix [:k] of its fields' projections;
- pairs are grouped by (function, k) (<= |functions| x |proj_dims| groups), the shared concat map is Kc x Kc;
- inside every group the vectors are sorted by insertion target, so a layer reads contiguous slices;
- product pairs read out at "out" (FM / DeepFM's second order part) are never materialised: their read-out
  sum_p sum_c w_pc ê_i[c] ê_j[c] is, per column c, a bilinear form ê[:, :, c]^T M_c ê[:, :, c] with M_c (q, q)
  holding w_pc at (i, j); one bmm (k, B, q) @ (k, q, q) computes all of them (`_bilinear`), where the
  (B, m, k) route would move three (B, m, k) tensors through memory (gathers, product, read-out) each way.
MLP layers before the first one that receives a vector would compute a constant: they do not exist here
(`extract_model` folds that constant into the next bias).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.references import Table
from autoias_pl.space import Architecture

_ELEMENTWISE = {"product": torch.mul, "plus": torch.add, "max": torch.maximum}  # eq. 6, concat below
PAIR_READOUT_INIT = 1.0  # the initial read-out weight of every entry of a pair vector at "out" (FM's sum)


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

    bilinear_density = 16.0  # a read-out chunk of c product pairs over q fields is bilinear iff q^2 <= this * c

    def __init__(self, arch: Architecture, vocab_sizes: Sequence[int], batch_norm: bool = False) -> None:
        super().__init__()
        self.architecture, self.vocab_sizes = arch, tuple(int(v) for v in vocab_sizes)
        self.layout = lay = arch.layout  # the shared ArchitectureLayout (autoias_pl/layout.py)
        L = arch.space.num_layers
        self.tables = nn.ModuleList()
        where: dict[int, tuple[int, int]] = {}  # field -> (emb group, position)
        for g, (w, fields) in enumerate(lay.emb_groups):
            self.tables.append(Table(sum(self.vocab_sizes[i] for i in fields), w))  # nn.Embedding, CPU-fast backward
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
        self._plan_bilinear(pos)
        self.mlp = nn.ModuleList(_linear(fan_in, h) for fan_in, h in lay.mlp)
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) if batch_norm else nn.Identity() for _, h in lay.mlp)
        self.readout = _linear(lay.readout_fan_in, 1)
        self.reset_parameters()

    def _plan_bilinear(self, pos: dict[int, dict[int, int]]) -> None:
        """Which read-out chunks of product pairs `_bilinear` computes (`bilinear`), the pairs of each group
        that are materialised (`materialised`) and the read-out columns of the rest (`readout_dense_cols`).

        A chunk of c pairs over the q fields of width >= k costs k q^2 multiply-adds in the bmm against
        ~3 k c memory-bound element passes each way when materialised: bilinear when q^2 <= 16 c
        (`bilinear_density`: dense selections); sparse ones stay materialised. The materialised pairs of a
        group are its head [:m - c] (a group is sorted by target, "out" last): the bilinear tail is never
        computed as vectors."""
        lay, L, pairs = self.layout, self.layout.num_layers, self.architecture.space.pairs
        n_emb = len(lay.emb_groups)
        self.bilinear: list[tuple[int, int, int, int, int]] = []  # (slice at "out", group, k, col start, end)
        self.materialised = [len(ps) for _, _, ps in lay.pair_groups]  # per pair group: pairs computed
        dense_cols: list[int] = []
        col = lay.hidden[L - 1] if lay.first is not None else 0  # o_{L-1} comes first
        dense_cols += range(col)
        for s, (vg, a, b) in enumerate(self.slices[L]):
            width, g = lay.vector_groups[vg][0], vg - n_emb
            q = len(pos[width]) if g >= 0 else 0
            if g >= 0 and lay.pair_groups[g][0] == "product" and q * q <= self.bilinear_density * (b - a):
                chunk = lay.pair_groups[g][2][a:b]
                perm = [b - a] * (q * q)  # (q q,) row of w for (i, j), b - a: a zero row
                for r, p in enumerate(chunk):
                    perm[pos[width][pairs[p][0]] * q + pos[width][pairs[p][1]]] = r
                self._buffer(f"bilinear{s}_perm", perm)
                self.bilinear.append((s, g, width, col, col + (b - a) * width))
                self.materialised[g] = a
                for side in ("left", "right"):  # the materialised head only
                    self._buffer(f"pair{g}_{side}", getattr(self, f"pair{g}_{side}")[:a].tolist())
            else:
                dense_cols += range(col, col + (b - a) * width)
            col += (b - a) * width
        self._buffer("readout_dense_cols", dense_cols)

    def _buffer(self, name: str, values: list[int]) -> None:
        self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh init for retraining from scratch (docs/supernet.md, "Initialisation"): embeddings N(0, 0.01),
        projections the identity prefix (ê_i = e_i at the start), the read-out weights of the pair vectors at
        "out" 1 (`PAIR_READOUT_INIT`: a product pair starts as FM's <ê_i, ê_j>), the rest like nn.Linear."""
        for table in self.tables:
            nn.init.normal_(table.weight, 0.0, 0.01)
        for w in self.projections:  # (m, d, K)
            w.copy_(torch.eye(w.shape[1], w.shape[2]).expand_as(w))
        self.readout.weight[0, list(self.layout.readout_pair_columns)] = PAIR_READOUT_INIT
        if self.layout.concat_width:
            bound = (2 * self.layout.concat_width) ** -0.5
            for p in (self.concat_a, self.concat_b, self.concat_c):
                nn.init.uniform_(p, -bound, bound)

    def vectors(self, x: Tensor) -> tuple[list[Tensor], dict[int, Tensor]]:
        """(B, n) ids -> per vector group (emb groups, then pair groups) its materialised vectors (B, m_g, w_g)
        (of a pair group its head `materialised[g]`), and per width k of a bilinear chunk the projected
        fields a width-k pair reads, column-major (k, B, q_k)."""
        embs = [table(x.index_select(1, getattr(self, f"emb{g}_fields")) + getattr(self, f"emb{g}_offsets"))
                for g, table in enumerate(self.tables)]  # [(B, m_g, d_g)]
        groups, columns = list(embs), {}
        if not self.layout.pair_groups:
            return groups, columns
        proj = self._project(embs)  # [(m, B, K)] per proj group, field-major
        for _, _, k, _, _ in self.bilinear:  # (k, B, q_k), fields in the order of `prefixes` below (one per k)
            columns[k] = torch.cat([proj[q].permute(2, 1, 0)[:k] for q in self.prefix_groups[k]], 2).contiguous()
        prefixes: dict[int, Tensor] = {}  # k -> (B, q_k, k): the [:k] prefixes of the fields a width-k pair reads
        for g, (func, k, _) in enumerate(self.layout.pair_groups):
            if not self.materialised[g]:  # read out by `_bilinear` only
                groups.append(embs[0].new_empty(x.shape[0], 0, k))
                continue
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
        return groups, columns

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
        groups, columns = self.vectors(x)
        o: Tensor | None = None
        for layer, norm, t in zip(self.mlp, self.norms, self.layout.mlp_layers, strict=True):
            o = torch.relu(norm(layer(torch.cat(self._inputs(groups, o, t), 1))))  # (B, h_t)
        return self._readout(groups, columns, o, x.shape[0])

    def _readout(self, groups: list[Tensor], columns: dict[int, Tensor], o: Tensor | None, batch: int) -> Tensor:
        """The logit: the linear read-out of [o_{L-1}, the vectors at "out"], bilinear chunks by `_bilinear`."""
        if not self.bilinear:
            parts = self._inputs(groups, o, self.layout.num_layers)
            if not parts:
                return self.readout.bias.expand(batch)  # (B,)
            return self.readout(torch.cat(parts, 1)).squeeze(1)  # (B,)
        skip = {s for s, *_ in self.bilinear}
        parts = [] if o is None else [o]
        parts += [groups[g][:, a:b].flatten(1) for s, (g, a, b) in enumerate(self.slices[-1]) if s not in skip]
        weight = self.readout.weight  # (1, fan_in)
        if parts:
            out = nn.functional.linear(torch.cat(parts, 1), weight.index_select(1, self.readout_dense_cols),
                                       self.readout.bias).squeeze(1)  # (B,)
        else:
            out = self.readout.bias.expand(batch)  # (B,)
        for s, _, k, start, end in self.bilinear:
            out = out + _bilinear(columns[k], weight[0, start:end].view(-1, k), getattr(self, f"bilinear{s}_perm"))
        return out


def _bilinear(t: Tensor, w: Tensor, perm: Tensor) -> Tensor:
    """sum_c sum_p w[p, c] t[c, :, i_p] t[c, :, j_p]: the read-out of the product pairs p = (i_p, j_p) of one
    chunk. t (k, B, q) projected fields column-major, w (c, k) the read-out weights of the chunk's pairs, perm
    (q q,) the row of w at (i, j) (c where no pair) -> (B,)."""
    k, _, q = t.shape
    m = torch.cat([w, w.new_zeros(1, k)]).index_select(0, perm)  # (q q, k)
    m = m.t().reshape(k, q, q)  # (k, q, q): m[c, i, j] = w of pair (i, j) at column c
    return (torch.bmm(t, m.to(t.dtype)) * t).sum((0, 2))  # (B,)
