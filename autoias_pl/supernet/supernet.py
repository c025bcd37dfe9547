"""The AutoIAS supernet (paper 3.3.1, 4.2.2): every architecture of a SearchSpace with shared weights.

An architecture is data, not module structure: `forward(x, arch)` turns it into index tensors (a `_Plan`,
cached per architecture) and computes only what it selects:

1. embeddings of the fields it uses, at the max width, prefix-masked to d_i;         # (B, u, De)
2. one projection per field in a selected pair, at full width;                       # (B, q, K)
3. per interaction function, its selected pairs only, masked to k_p;                 # (B, m_f, K)
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


@dataclass(frozen=True)
class _PairGroup:
    """The selected pairs of one interaction function."""

    func: str
    left: Tensor  # (m,) positions of field i in the projected fields
    right: Tensor  # (m,) positions of field j
    mask: Tensor  # (m, K) prefix mask at k_p


@dataclass(frozen=True)
class _Plan:
    """Index tensors of one architecture on one device (see `Supernet.plan`)."""

    used: Tensor  # (u,) fields whose embedding is looked up
    emb_mask: Tensor  # (u, De) prefix mask at d_i
    sel_pos: Tensor  # (s,) positions in `used` of the selected fields
    proj_fields: Tensor  # (q,) fields in some selected pair
    proj_pos: Tensor  # (q,) their positions in `used`
    groups: tuple[_PairGroup, ...]
    perm: Tensor  # (S,) concatenation order -> order sorted by insertion target
    ids: tuple[Tensor | None, ...]  # per target (L + 1): vector ids (m_l,); None = all vectors in id order
    bounds: tuple[int, ...]  # (L + 2,) slice bounds of each target in the sorted vectors
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
        n, L = space.num_fields, space.num_layers
        sel = arch.tensor("select", dev).bool()  # (V,)
        ins = arch.tensor("insert", dev)  # (V,)
        d = self.emb_dims[arch.tensor("emb", dev)]  # (n,)
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
        order, groups = [sel_fields], []
        for fi, name in enumerate(space.functions):
            g = sel_pairs[func[sel_pairs] == fi]  # (m,)
            if g.numel():
                ij = self.pair_index[g]  # (m, 2)
                groups.append(_PairGroup(name, ppos[ij[:, 0]], ppos[ij[:, 1]],
                                         prefix_mask(k[g], self.projection.weight.shape[2])))
                order.append(g + n)
        order_t = torch.cat(order)  # (S,) vector ids in concatenation order
        target, perm = torch.sort(ins[order_t], stable=True)  # (S,), (S,)
        vec_ids = order_t[perm]  # (S,) sorted by target
        counts = torch.bincount(target, minlength=L + 1).tolist()
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        all_ids = torch.arange(space.num_vectors, device=dev)
        ids = tuple(
            None if b - a == space.num_vectors and torch.equal(vec_ids[a:b], all_ids) else vec_ids[a:b]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )
        return _Plan(used, prefix_mask(d[used], self.embedding.table.embedding_dim), pos[sel_fields],
                     proj_fields, pos[proj_fields], tuple(groups), perm, ids, tuple(bounds), arch.hidden)

    # ----- forward -----
    def vectors(self, x: Tensor, plan: _Plan) -> Tensor:
        """(B, n) ids -> (B, S, D) the selected vectors, sorted by insertion target, zero beyond their widths."""
        D = self.layers[0].vec_weight.shape[1]
        emb = self.embedding(x, plan.used, plan.emb_mask)  # (B, u, De)
        pieces = [F.pad(emb.index_select(1, plan.sel_pos), (0, D - emb.shape[2]))]  # [(B, s, D)]
        if plan.groups:
            proj = self.projection(emb.index_select(1, plan.proj_pos), plan.proj_fields)  # (B, q, K)
            for g in plan.groups:
                ei = proj.index_select(1, g.left)  # (B, m, K)
                ej = proj.index_select(1, g.right)  # (B, m, K)
                if g.func == "concat":
                    v = self.concat(ei * g.mask, ej * g.mask, g.mask)  # (B, m, K)
                else:
                    v = ELEMENTWISE[g.func](ei, ej) * g.mask  # (B, m, K)
                pieces.append(F.pad(v, (0, D - v.shape[2])))  # (B, m, D)
        return torch.cat(pieces, 1).index_select(1, plan.perm)  # (B, S, D)

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        """x (B, n) int64 ids -> logits (B,) of architecture `arch`."""
        plan = self.plan(arch)
        batch, b = x.shape[0], plan.bounds
        vecs = self.vectors(x, plan)  # (B, S, D)
        o: Tensor | None = None
        for layer, (module, h) in enumerate(zip(self.layers, plan.hidden, strict=True)):
            o = torch.relu(module(o, vecs[:, b[layer] : b[layer + 1]], plan.ids[layer], h, batch))  # (B, h)
        out = self.space.num_layers
        return self.readout(o, vecs[:, b[out] : b[out + 1]], plan.ids[out], 1, batch).squeeze(1)  # (B,)
