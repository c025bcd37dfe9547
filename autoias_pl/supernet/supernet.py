"""The AutoIAS supernet (paper 3.3.1, 4.2.2): every architecture of a SearchSpace with shared weights.

An architecture is data, not module structure: `forward(x, arch)` turns its layout (`arch.layout`, the
`ArchitectureLayout` of autoias_pl/layout.py that the standalone model and the costs read too) into index
tensors (a `_Plan`, cached per architecture) and computes only what it selects:

1. embeddings of the fields it uses, at the max width, prefix-masked to d_i;         # (B, u, De)
2. one projection per field in a selected pair, at full width;                       # (B, q, K)
3. per (interaction function, k), its selected pairs only, at the true width k;      # (B, m, k)
4. the selected vectors grouped by (insertion target, true width w); layer l multiplies each of its width
   groups with the block prefixes W_l[ids, :w, :h_l] (no padding to the max width); hidden widths are
   real slices; target L ("out") is a linear read-out into the logit.
With `function_blocks`, a pair's (D, H) block in every layer is one per (pair, interaction function): a
product vector and a plus vector of the same pair are read by different weights (see `block_rows`).
Unselected vectors are never computed, which is exactly "contribute zero".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autoias_pl.ctr_model import PAIR_READOUT_INIT
from autoias_pl.interactions import ELEMENTWISE
from autoias_pl.space import Architecture, SearchSpace
from autoias_pl.supernet.elastic import (
    ElasticConcat,
    ElasticEmbedding,
    ElasticLayer,
    ElasticProjection,
    prefix_gather,
    prefix_mask,
)

_PLAN_CACHE = 256


@dataclass(frozen=True)
class _PairGroup:
    """The selected pairs of one (interaction function, projection width k)."""

    func: str
    width: int  # k
    left: Tensor  # (m,) positions of field i among the projected fields
    right: Tensor  # (m,) positions of field j


@dataclass(frozen=True)
class _Plan:
    """Index tensors of one architecture on one device (see `Supernet.plan`).

    Vectors come in pieces of one width each: the selected fields per embedding width d, then one piece
    per (function, k) pair group (the layout's non-empty `vector_groups`, in the standalone model's order).
    Inside a piece they are sorted by insertion target, so `split(counts)` hands each target its chunk
    (its backward is a cat: no zero-filled gradient buffers, unlike a permutation gather); a target
    concatenates the chunks of one width into one group.
    """

    used: Tensor  # (u,) fields whose embedding is looked up
    emb_mask: Tensor  # (u, De) prefix mask at d_i
    field_pos: tuple[Tensor, ...]  # per field piece: positions in `used` of its fields, by (target, id)
    field_widths: tuple[int, ...]  # the width d of each field piece
    proj_fields: Tensor  # (q,) fields in some selected pair
    proj_pos: Tensor  # (q,) their positions in `used`
    groups: tuple[_PairGroup, ...]
    counts: tuple[tuple[int, ...], ...]  # per piece: vectors per target (L + 1)
    route: tuple[tuple[tuple[int, ...], ...], ...]  # per target, per width group: its pieces, in order
    ids: tuple[tuple[Tensor | None, ...], ...]  # per target, per width group: vector ids (m,); None = all V
    hidden: tuple[int, ...]  # (L,) hidden widths


class Supernet(nn.Module):
    """All architectures of `space` over fields with `vocab_sizes`; `forward(x, arch)` -> logits (B,).

    Parameters (max sizes): one embedding table (sum vocab x De); projections (n, De, K); the shared concat
    map; per MLP layer a (V, D, H) block per candidate vector plus (H, H) and a bias; the read-out (V, D, 1)
    + (H, 1) + bias. D = space.max_dim, V = n + P. `sparse` gives the table sparse gradients (SparseAdam).
    `share_insert_blocks` uses one (V, D, H) block for every hidden layer (L times fewer MLP parameters;
    the standalone model is the same either way). `function_blocks` gives each pair one block per
    interaction function ((n + P * F, D, H) per layer): the MLP weights that read a pair's vector are then
    trained only on vectors of that function (a product and a sum have different scales and meanings; one
    block shared by the four functions learns to read the linear ones and the product's crosses are lost).
    The standalone model is the same either way (it has one function per pair). On by default, as in the
    search (search/config.py's SupernetConfig); False is the first implementation (one block per pair).
    """

    def __init__(
        self,
        space: SearchSpace,
        vocab_sizes: Sequence[int],
        init_std: float = 0.01,
        sparse: bool = False,
        share_insert_blocks: bool = False,
        function_blocks: bool = True,
    ) -> None:
        super().__init__()
        if len(vocab_sizes) != space.num_fields:
            raise ValueError(f"{len(vocab_sizes)} vocab sizes for {space.num_fields} fields of the space")
        self.space, self.vocab_sizes = space, tuple(int(v) for v in vocab_sizes)
        n, p, v = space.num_fields, space.num_pairs, space.num_vectors
        de, k, d, h = space.emb_dims[-1], space.proj_dims[-1], space.max_dim, space.hidden_units[-1]
        self.embedding = ElasticEmbedding(self.vocab_sizes, de, init_std, sparse)
        self.projection = ElasticProjection(n, de, k)
        self.concat = ElasticConcat(k)
        teacher_in = n * de + p * k  # the teacher's vector fan-in (everything at layer 0)
        self.function_blocks = bool(function_blocks)
        self.num_block_rows = n + p * len(space.functions) if function_blocks else v
        layers = [ElasticLayer(self.num_block_rows, d, 0 if i == 0 else h, h, teacher_in, teacher_in if i == 0 else h)
                  for i in range(space.num_layers)]
        if share_insert_blocks:
            for layer in layers[1:]:
                layer.vec_weight = layers[0].vec_weight
        self.layers = nn.ModuleList(layers)
        self.readout = ElasticLayer(self.num_block_rows, d, h, 1, teacher_in, h)
        with torch.no_grad():  # every architecture starts as its standalone model does (CTRModel.reset_parameters)
            self.projection.weight.copy_(torch.eye(de, k).expand_as(self.projection.weight))  # W_i[:d, :k] = I
            self.readout.vec_weight[n:] = PAIR_READOUT_INIT  # the pair rows (of every function)
        self.register_buffer("emb_dims", torch.tensor(space.emb_dims), persistent=False)  # also: the plans' device
        self._plans: OrderedDict[tuple[Architecture, torch.device], _Plan] = OrderedDict()

    # ----- architecture -> index tensors -----
    def block_rows(self, arch: Architecture) -> list[int]:
        """Per vector of `arch` (V,) the row of its (D, H) block in every layer's `vec_weight`: the vector id,
        or with `function_blocks` n + f * P + p for pair p with function index f."""
        n, p = self.space.num_fields, self.space.num_pairs
        if not self.function_blocks:
            return list(range(n + p))
        funcs = arch.indices("func")
        return list(range(n)) + [n + f * p + q for q, f in enumerate(funcs)]


    def plan(self, arch: Architecture) -> _Plan:
        """Index tensors of `arch` on this module's device (cached, LRU of 256)."""
        if arch.space != self.space:
            raise ValueError("architecture is from a different search space than this supernet")
        key = (arch, self.emb_dims.device)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._build_plan(arch)
        self._plans[key] = plan
        if len(self._plans) > _PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

    def _build_plan(self, arch: Architecture) -> _Plan:
        """The plan of `arch`, read off its `ArchitectureLayout` (autoias_pl/layout.py): the field pieces are
        the selected prefixes of its embedding groups, the pair pieces its pair groups, in the same order as
        the standalone model's. Python over the vectors once, then one host tensor moved to the device."""
        lay, pairs, n = arch.layout, self.space.pairs, self.space.num_fields
        pos = {f: r for r, f in enumerate(lay.used)}  # field -> position in used
        ppos = {f: r for r, f in enumerate(lay.proj_fields)}  # field -> position among the projected fields
        pieces, widths, counts = [], [], []
        for (w, vs), c in zip(lay.vector_groups, lay.counts, strict=True):
            if vs:
                pieces.append(vs)
                widths.append(w)
                counts.append(c)
        num_field_pieces = sum(1 for s in lay.emb_selected if s)
        route, ids = self._route(pieces, widths, counts, self.block_rows(arch))
        # every index list, in one host tensor -> one copy to the device, then split into views
        lists: list[Sequence[int]] = [lay.used, [lay.widths[i] for i in lay.used],  # used, d[used]
                                      lay.proj_fields, [pos[i] for i in lay.proj_fields]]
        lists += [[pos[i] for i in vs] for vs in pieces[:num_field_pieces]]
        for vs in pieces[num_field_pieces:]:
            lists += [[ppos[pairs[v - n][0]] for v in vs], [ppos[pairs[v - n][1]] for v in vs]]
        lists += [v for per_target in ids for v in per_target if v is not None]
        flat = [i for values in lists for i in values]
        host = torch.tensor(flat, dtype=torch.long)  # (sum of lengths,)
        views = iter(host.to(self.emb_dims.device).split([len(v) for v in lists]))
        used, used_widths, proj_fields, proj_pos = next(views), next(views), next(views), next(views)
        field_pos = tuple(next(views) for _ in range(num_field_pieces))
        groups = tuple(_PairGroup(func, k, next(views), next(views)) for func, k, _ in lay.pair_groups)
        device_ids = tuple(tuple(None if v is None else next(views) for v in group) for group in ids)
        mask = prefix_mask(used_widths, self.embedding.table.embedding_dim)  # (u, De)
        return _Plan(used, mask, field_pos, tuple(widths[:num_field_pieces]), proj_fields, proj_pos,
                     groups, tuple(counts), route, device_ids, lay.hidden)

    def _route(self, pieces: list[tuple[int, ...]], widths: list[int], counts: list[tuple[int, ...]],
               rows: list[int]) -> tuple[tuple[tuple[tuple[int, ...], ...], ...], tuple[tuple[list[int] | None, ...], ...]]:
        """Pieces (vector ids sorted by target, one width each) with their counts per target, and each
        vector's block row -> per target and width group the pieces that contribute (in order) and the
        group's block rows in input order (None: every block row, in order)."""
        targets, num_rows = self.space.num_layers + 1, self.num_block_rows
        starts = [[0] * targets for _ in counts]  # per piece: where each target's chunk begins
        for s, c in zip(starts, counts, strict=True):
            for t in range(1, targets):
                s[t] = s[t - 1] + c[t - 1]
        route, ids = [], []
        for t in range(targets):
            by_width: dict[int, list[int]] = {}
            for i, w in enumerate(widths):
                if counts[i][t]:
                    by_width.setdefault(w, []).append(i)
            route.append(tuple(tuple(by_width[w]) for w in sorted(by_width)))
            group_ids: list[list[int] | None] = []
            for members in route[-1]:
                v = [rows[u] for i in members for u in pieces[i][starts[i][t] : starts[i][t] + counts[i][t]]]
                group_ids.append(None if len(v) == num_rows and v == list(range(num_rows)) else v)
            ids.append(tuple(group_ids))
        return tuple(route), tuple(ids)

    # ----- forward -----
    def vectors(self, x: Tensor, plan: _Plan) -> list[list[Tensor]]:
        """(B, n) ids -> per target (L + 1), per width group w, its selected vectors (B, m, w) at the true
        width (ids: `plan.ids`)."""
        emb = self.embedding(x, plan.used, plan.emb_mask)  # (B, u, De)
        rows, widths = list(plan.field_pos), list(plan.field_widths)
        if plan.groups:
            rows.append(plan.proj_pos)
            widths.append(emb.shape[2])
        parts = prefix_gather(emb, rows, widths)  # [(B, s_d, d)] per field piece (+ (B, q, De))
        pieces = list(parts[: len(plan.field_pos)])
        if plan.groups:
            proj = self.projection(parts[-1], plan.proj_fields)  # (B, q, K)
            pieces += self.interactions(proj, plan.groups)  # [(B, m, k)]
        chunks = [p.split(c, 1) for p, c in zip(pieces, plan.counts, strict=True)]  # [[(B, m_pt, w)]]
        out = []
        for t, groups in enumerate(plan.route):
            out.append([chunks[members[0]][t] if len(members) == 1 else torch.cat([chunks[i][t] for i in members], 1)
                        for members in groups])  # [(B, m, w)]
        return out

    def interactions(self, proj: Tensor, groups: tuple[_PairGroup, ...]) -> list[Tensor]:
        """Projected fields (B, q, K) -> per group its pair vectors (B, m, k), at the true width k.

        Concat is computed per field before the pair gather: ê_i @ A[:k, :k] is (B, q, k) once per width,
        then each pair adds two rows, instead of a (2k x k) matmul per pair.
        """
        concat_widths = sorted({g.width for g in groups if g.func == "concat"})
        rows: list[Tensor | None] = [None] * len(concat_widths)  # (B, q, k) per concat width
        widths = list(concat_widths)
        for g in groups:
            if g.func != "concat":
                rows += [g.left, g.right]  # (B, m, k) twice
                widths += [g.width, g.width]
        parts = iter(prefix_gather(proj, rows, widths))  # one (B, q, K) gradient buffer for all reads
        per_field = {k: self.concat.per_field(next(parts)) for k in concat_widths}  # (B, q, k) x 2
        out = []
        for g in groups:
            if g.func == "concat":
                pa, pb = per_field[g.width]
                v = pa.index_select(1, g.left) + pb.index_select(1, g.right)  # (B, m, k)
            else:
                v = ELEMENTWISE[g.func](next(parts), next(parts))  # (B, m, k)
            out.append(v)
        return out

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        """x (B, n) int64 ids -> logits (B,) of architecture `arch`."""
        plan = self.plan(arch)
        batch = x.shape[0]
        vecs = self.vectors(x, plan)  # per target [(B, m, w)]
        o: Tensor | None = None
        for t, (module, h) in enumerate(zip(self.layers, plan.hidden, strict=True)):
            o = torch.relu(module(o, vecs[t], plan.ids[t], h, batch))  # (B, h)
        out = self.space.num_layers
        return self.readout(o, vecs[out], plan.ids[out], 1, batch).squeeze(1)  # (B,)
