"""The structure of one architecture's model, computed once: the one layout every consumer reads.

`ArchitectureLayout.of(arch)` (cached as `Architecture.layout`) says which tensors the standalone model of
an architecture has and in which order its vectors enter each layer. It is the single source of:

- `Architecture.num_params` / `num_macs` / `used_fields` / `summary` (space.py): the costs;
- `CTRModel` (ctr_model.py): its tables, projections, concat map, pair groups and MLP shapes;
- the supernet's index plan (`Supernet.plan`, supernet/supernet.py): its pieces, counts and routing;
- `extract_model` (supernet/extract.py): which supernet weight prefixes go where.

The layout (pure Python, no tensors):

- embeddings: the used fields (selected, or in a selected pair) grouped by width d, one group per distinct
  d, ascending; inside a group the selected fields sorted by (insertion target, id), then the pair-only ones
  by id (`emb_groups`; `emb_selected` counts the selected prefix);
- projections: every field in a selected pair is projected once, d_i x K_i with K_i the widest of its selected
  pairs (a pair of width k reads the column prefix [:k]), grouped per (d, K) ascending, fields by id
  (`proj_groups`);
- pairs: the selected pairs grouped per (function, k), ascending by (index in `space.functions`, k); inside a
  group sorted by (target, id) (`pair_groups`); one shared concat map at Kc, the widest selected concat pair
  (`concat_width`, 0 without one);
- vector groups: the selected prefix of every embedding group, then every pair group, each of one width,
  sorted by target, so each target reads one contiguous chunk per group (`vector_groups`, `counts`);
- MLP: hidden layers before the first one that receives a vector (`first`) compute a constant and do not
  exist in the model; target t's inputs are [o_{t-1}, the vectors `inputs[t]` in vector-group order]; target
  L (= num_layers, "out") is the linear read-out into the logit (`mlp`, `readout_fan_in`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # space.py imports this module; no runtime import back
    from autoias_pl.space import Architecture


@dataclass(frozen=True)
class ArchitectureLayout:
    """The structure of one architecture's standalone model (see the module docstring)."""

    num_fields: int  # n
    num_layers: int  # L; insertion target L is the read-out ("out")
    widths: tuple[int, ...]  # (V,) width of every vector: d_i for field i, k_p for pair n + p
    used: tuple[int, ...]  # fields whose embedding is computed, ascending
    emb_groups: tuple[tuple[int, tuple[int, ...]], ...]  # (d, fields): selected by (target, id), pair-only
    emb_selected: tuple[int, ...]  # per emb group: how many of its fields (a prefix) are selected
    proj_fields: tuple[int, ...]  # fields in some selected pair, ascending
    proj_width: tuple[int, ...]  # (n,) K_i: the widest selected pair of field i, 0 if in none
    proj_groups: tuple[tuple[int, int, tuple[int, ...]], ...]  # (d, K, fields by id), ascending (d, K)
    pair_groups: tuple[tuple[str, int, tuple[int, ...]], ...]  # (function, k, pair indices by (target, id))
    concat_width: int  # Kc, 0 without a selected concat pair
    vector_groups: tuple[tuple[int, tuple[int, ...]], ...]  # (width, selected vector ids by (target, id)):
    #   one per emb group (its selected prefix, maybe empty), then one per pair group (ids n + p)
    counts: tuple[tuple[int, ...], ...]  # per vector group: how many of its vectors go to each target 0..L
    inputs: tuple[tuple[int, ...], ...]  # per target 0..L: vector ids in input order (after o_{t-1})
    first: int | None  # first hidden layer that receives a vector; None: no hidden layer exists
    hidden: tuple[int, ...]  # (L,) hidden widths h_t
    mlp: tuple[tuple[int, int], ...]  # per existing hidden layer t = first..L-1: (fan_in, h_t)
    readout_fan_in: int  # h_{L-1} (if a hidden layer exists) + the widths read out at "out"

    @classmethod
    def of(cls, arch: Architecture) -> ArchitectureLayout:
        """The layout of `arch` (prefer the cached `arch.layout`). One pass over the P pairs, no tensors."""
        space = arch.space
        n, L, pairs, functions = space.num_fields, space.num_layers, space.pairs, space.functions
        sel, target = arch.indices("select"), arch.insert_layers
        d, k, func = arch.emb_dims, arch.proj_dims, arch.indices("func")
        kmax = [0] * n
        by_key: dict[tuple[int, int], list[int]] = {}  # (function index, k) -> selected pairs by id
        for p, s in enumerate(sel[n:]):
            if s:
                i, j = pairs[p]
                kk = k[p]
                if kk > kmax[i]:
                    kmax[i] = kk
                if kk > kmax[j]:
                    kmax[j] = kk
                by_key.setdefault((func[p], kk), []).append(p)
        pair_groups = tuple((functions[f], kk, tuple(sorted(by_key[f, kk], key=lambda p: target[n + p])))
                            for f, kk in sorted(by_key))
        concat_width = max((kk for f, kk, _ in pair_groups if f == "concat"), default=0)

        used = tuple(i for i in range(n) if sel[i] or kmax[i])
        by_width: dict[int, tuple[list[int], list[int]]] = {}  # d -> (selected fields, pair-only fields)
        for i in used:
            by_width.setdefault(d[i], ([], []))[0 if sel[i] else 1].append(i)
        emb_groups, emb_selected = [], []
        for w in sorted(by_width):
            chosen, pair_only = by_width[w]
            emb_groups.append((w, tuple(sorted(chosen, key=target.__getitem__)) + tuple(pair_only)))
            emb_selected.append(len(chosen))

        proj_fields = tuple(i for i in range(n) if kmax[i])
        by_proj: dict[tuple[int, int], list[int]] = {}
        for i in proj_fields:
            by_proj.setdefault((d[i], kmax[i]), []).append(i)
        proj_groups = tuple((dw, kk, tuple(by_proj[dw, kk])) for dw, kk in sorted(by_proj))

        vector_groups = [(w, fields[:s]) for (w, fields), s in zip(emb_groups, emb_selected, strict=True)]
        vector_groups += [(kk, tuple(n + p for p in ps)) for _, kk, ps in pair_groups]
        inputs: list[list[int]] = [[] for _ in range(L + 1)]
        counts = []
        for _, vs in vector_groups:
            c = [0] * (L + 1)
            for v in vs:
                c[target[v]] += 1
                inputs[target[v]].append(v)
            counts.append(tuple(c))

        widths = d + k
        fan_in = [sum(widths[v] for v in vs) for vs in inputs]  # (L + 1,) vector widths per target
        first = next((t for t in range(L) if inputs[t]), None)
        hidden, mlp = arch.hidden, []
        if first is not None:
            for t in range(first, L):
                mlp.append(((hidden[t - 1] if t > first else 0) + fan_in[t], hidden[t]))
        readout_fan_in = (hidden[L - 1] if first is not None else 0) + fan_in[L]
        return cls(n, L, widths, used, tuple(emb_groups), tuple(emb_selected), proj_fields, tuple(kmax),
                   proj_groups, pair_groups, concat_width, tuple(vector_groups), tuple(counts),
                   tuple(tuple(vs) for vs in inputs), first, hidden, tuple(mlp), readout_fan_in)

    # ----- views -----
    @property
    def selected_vectors(self) -> tuple[int, ...]:
        """Ids of the selected vectors, ascending (fields first, then pairs n + p)."""
        return tuple(sorted(v for vs in self.inputs for v in vs))

    @property
    def mlp_layers(self) -> range:
        """The hidden layers the model has: first..L-1 (none if no hidden layer receives a vector)."""
        return range(self.first if self.first is not None else self.num_layers, self.num_layers)

    @property
    def readout_pair_columns(self) -> tuple[int, ...]:
        """Columns of the read-out's input [o_{L-1}, the vectors at "out"] that hold pair vectors, ascending."""
        col, out = (self.hidden[self.num_layers - 1] if self.first is not None else 0), []
        for v in self.inputs[self.num_layers]:
            if v >= self.num_fields:
                out += range(col, col + self.widths[v])
            col += self.widths[v]
        return tuple(out)

    def slices(self, target: int) -> tuple[tuple[int, int, int], ...]:
        """(vector group, start, end) of the chunks `target` reads, in input order."""
        out = []
        for g, c in enumerate(self.counts):
            if c[target]:
                start = sum(c[:target])
                out.append((g, start, start + c[target]))
        return tuple(out)

    # ----- costs (of the standalone model, exactly) -----
    def num_params(self, vocab_sizes: Sequence[int]) -> int:
        """Embeddings (vocab_i x d_i per used field) + projections (d_i x K_i) + the concat map
        (2 Kc^2 + Kc) + MLP weights and biases + the read-out (fan-in + 1)."""
        w = self.widths
        total = sum(vocab_sizes[i] * w[i] for i in self.used)
        total += sum(dw * kk * len(fields) for dw, kk, fields in self.proj_groups)
        kc = self.concat_width
        total += 2 * kc * kc + kc
        total += sum(fan_in * h + h for fan_in, h in self.mlp)
        return total + self.readout_fan_in + 1

    def num_macs(self) -> int:
        """Multiply-adds per sample (lookups, plus and max counted as free)."""
        macs = sum(dw * kk * len(fields) for dw, kk, fields in self.proj_groups)
        for func, kk, ps in self.pair_groups:
            macs += len(ps) * (2 * kk * kk if func == "concat" else kk if func == "product" else 0)
        return macs + sum(fan_in * h for fan_in, h in self.mlp) + self.readout_fan_in
