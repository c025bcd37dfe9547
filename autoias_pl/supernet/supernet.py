"""The AutoIAS supernet (paper 3.3.1, 4.2.2): every architecture of a SearchSpace with shared weights.

An architecture is data, not module structure: `forward(x, arch)` turns it into index tensors (a `_Plan`,
cached per architecture) and computes only what it selects:

1. embeddings of the fields it uses, at the max width, prefix-masked to d_i;         # (B, u, De)
2. one projection per field in a selected pair, at full width;                       # (B, q, K)
3. per (interaction function, k), its selected pairs only, at the true width k;      # (B, m, k)
4. the selected vectors sorted by insertion target; layer l reads its own vectors and their weight blocks;
   hidden widths are real slices; target L ("out") is a linear read-out into the logit.
Unselected vectors are never computed, which is exactly "contribute zero".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoias_pl.space import Architecture, SearchSpace
from autoias_pl.supernet.elastic import (
    ElasticConcat,
    ElasticEmbedding,
    ElasticLayer,
    ElasticProjection,
    prefix_mask,
)
from autoias_pl.supernet.interactions import ELEMENTWISE

_PLAN_CACHE = 256


def _pad(t: Tensor, size: int) -> Tensor:
    """(B, m, w) -> (B, m, size), zero-padded on the last dim (no copy when w == size)."""
    return t if t.shape[2] == size else F.pad(t, (0, size - t.shape[2]))


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

    Vectors come in pieces: the selected fields, then one piece per (function, k) pair group. Inside a
    piece they are sorted by insertion target, so `split(counts)` hands each target its chunk (its
    backward is a cat: no zero-filled gradient buffers, unlike a permutation gather).
    """

    used: Tensor  # (u,) fields whose embedding is looked up
    emb_mask: Tensor  # (u, De) prefix mask at d_i
    sel_pos: Tensor  # (s,) positions in `used` of the selected fields, sorted by target
    proj_fields: Tensor  # (q,) fields in some selected pair
    proj_pos: Tensor  # (q,) their positions in `used`
    groups: tuple[_PairGroup, ...]
    counts: tuple[tuple[int, ...], ...]  # per piece: vectors per target (L + 1)
    ids: tuple[Tensor | None, ...]  # per target: vector ids (m_l,) in input order; None = all, in id order
    hidden: tuple[int, ...]  # (L,) hidden widths


class Supernet(nn.Module):
    """All architectures of `space` over fields with `vocab_sizes`; `forward(x, arch)` -> logits (B,).

    Parameters (max sizes): one embedding table (sum vocab x De); projections (n, De, K); the shared concat
    map; per MLP layer a (V, D, H) block per candidate vector plus (H, H) and a bias; the read-out (V, D, 1)
    + (H, 1) + bias. D = space.max_dim, V = n + P. `sparse` gives the table sparse gradients (SparseAdam).
    `share_insert_blocks` uses one (V, D, H) block for every hidden layer (L times fewer MLP parameters;
    the standalone model is the same either way).
    """

    def __init__(
        self,
        space: SearchSpace,
        vocab_sizes: Sequence[int],
        init_std: float = 0.01,
        sparse: bool = False,
        share_insert_blocks: bool = False,
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
        layers = [ElasticLayer(v, d, 0 if i == 0 else h, h, teacher_in, teacher_in if i == 0 else h)
                  for i in range(space.num_layers)]
        if share_insert_blocks:
            for layer in layers[1:]:
                layer.vec_weight = layers[0].vec_weight
        self.layers = nn.ModuleList(layers)
        self.readout = ElasticLayer(v, d, h, 1, teacher_in, h)
        self.register_buffer("emb_dims", torch.tensor(space.emb_dims), persistent=False)
        self.register_buffer("proj_dims", torch.tensor(space.proj_dims), persistent=False)
        self.register_buffer("pair_index", space.pair_index.clone(), persistent=False)
        self._plans: OrderedDict[tuple[Architecture, torch.device], _Plan] = OrderedDict()

    # ----- architecture -> index tensors -----
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
        space, dev = self.space, self.emb_dims.device
        n = space.num_fields
        sel = arch.tensor("select", dev).bool()  # (V,)
        ins = arch.tensor("insert", dev)  # (V,)
        k = self.proj_dims[arch.tensor("proj", dev)]  # (P,)
        func = arch.tensor("func", dev)  # (P,)
        sel_pairs = sel[n:].nonzero().squeeze(1)  # (Sp,)
        in_pair = torch.zeros(n, dtype=torch.bool, device=dev)
        in_pair[self.pair_index[sel_pairs].flatten()] = True  # (n,)
        used = (sel[:n] | in_pair).nonzero().squeeze(1)  # (u,)
        pos = torch.full((n,), -1, dtype=torch.long, device=dev)
        pos[used] = torch.arange(used.numel(), device=dev)  # (n,) field -> position in used
        proj_fields = in_pair.nonzero().squeeze(1)  # (q,)
        ppos = torch.full((n,), -1, dtype=torch.long, device=dev)
        ppos[proj_fields] = torch.arange(proj_fields.numel(), device=dev)  # (n,) field -> projected position
        sel_fields = sel[:n].nonzero().squeeze(1)  # (s,)
        sel_fields = sel_fields[torch.sort(ins[sel_fields], stable=True).indices]  # (s,) by (target, id)
        pieces, groups = [sel_fields], []
        for fi, name in enumerate(space.functions):
            for kk in space.proj_dims:
                g = sel_pairs[(func[sel_pairs] == fi) & (k[sel_pairs] == kk)]  # (m,)
                if g.numel():
                    g = g[torch.sort(ins[n + g], stable=True).indices]  # (m,) by (target, id)
                    ij = self.pair_index[g]  # (m, 2)
                    groups.append(_PairGroup(name, kk, ppos[ij[:, 0]], ppos[ij[:, 1]]))
                    pieces.append(g + n)
        counts, ids = self._route(pieces, ins)
        d = self.emb_dims[arch.tensor("emb", dev)][used]  # (u,)
        return _Plan(used, prefix_mask(d, self.embedding.table.embedding_dim), pos[sel_fields], proj_fields,
                     pos[proj_fields], tuple(groups), counts, ids, arch.hidden)

    def _route(self, pieces: list[Tensor], ins: Tensor) -> tuple[tuple[tuple[int, ...], ...], tuple[Tensor | None, ...]]:
        """Per piece (vector ids (m_p,)) its count per target; per target the vector ids in input order."""
        targets = self.space.num_layers + 1
        counts = tuple(tuple(torch.bincount(ins[p], minlength=targets).tolist()) for p in pieces)
        chunks = [p.split(c) for p, c in zip(pieces, counts, strict=True)]
        all_ids = torch.arange(self.space.num_vectors, device=ins.device)  # (V,)
        ids = []
        for t in range(targets):
            v = torch.cat([ch[t] for ch in chunks])  # (m_t,)
            ids.append(None if v.numel() == all_ids.numel() and torch.equal(v, all_ids) else v)
        return counts, tuple(ids)

    # ----- forward -----
    def vectors(self, x: Tensor, plan: _Plan) -> list[Tensor]:
        """(B, n) ids -> per target (L + 1) its selected vectors (B, m_t, D), zero beyond their widths."""
        D = self.layers[0].vec_weight.shape[1]
        emb = self.embedding(x, plan.used, plan.emb_mask)  # (B, u, De)
        pieces = [_pad(emb.index_select(1, plan.sel_pos), D)]  # [(B, s, D)]
        if plan.groups:
            proj = self.projection(emb.index_select(1, plan.proj_pos), plan.proj_fields)  # (B, q, K)
            pieces += [_pad(v, D) for v in self.interactions(proj, plan.groups)]  # [(B, m, D)]
        chunks = [p.split(c, 1) for p, c in zip(pieces, plan.counts, strict=True)]  # [[(B, m_pt, D)]]
        out = []
        for t in range(self.space.num_layers + 1):
            parts = [ch[t] for ch in chunks if ch[t].shape[1]]
            out.append(parts[0] if len(parts) == 1 else torch.cat(parts, 1) if parts else pieces[0][:, :0])
        return out  # [(B, m_t, D)]

    def interactions(self, proj: Tensor, groups: tuple[_PairGroup, ...]) -> list[Tensor]:
        """Projected fields (B, q, K) -> per group its pair vectors (B, m, k), at the true width k.

        Concat is computed per field before the pair gather: ê_i @ A[:k, :k] is (B, q, k) once per width,
        then each pair adds two rows, instead of a (2k x k) matmul per pair.
        """
        out, per_field = [], {}
        for g in groups:
            pk = proj[:, :, : g.width]  # (B, q, k) view
            if g.func == "concat":
                if g.width not in per_field:
                    per_field[g.width] = self.concat.per_field(pk)  # (B, q, k), (B, q, k)
                pa, pb = per_field[g.width]
                v = pa.index_select(1, g.left) + pb.index_select(1, g.right)  # (B, m, k)
            else:
                v = ELEMENTWISE[g.func](pk.index_select(1, g.left), pk.index_select(1, g.right))  # (B, m, k)
            out.append(v)
        return out

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        """x (B, n) int64 ids -> logits (B,) of architecture `arch`."""
        plan = self.plan(arch)
        batch = x.shape[0]
        vecs = self.vectors(x, plan)  # [(B, m_t, D)]
        o: Tensor | None = None
        for t, (module, h) in enumerate(zip(self.layers, plan.hidden, strict=True)):
            o = torch.relu(module(o, vecs[t], plan.ids[t], h, batch))  # (B, h)
        out = self.space.num_layers
        return self.readout(o, vecs[out], plan.ids[out], 1, batch).squeeze(1)  # (B,)
