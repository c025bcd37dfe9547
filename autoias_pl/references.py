"""Reference CTR models as published: plain `nn.Module`s to compare the searched architectures with.

These are NOT architectures of the search space (those in-space analogues are `autoias_pl/baselines.py`:
`lr`, `fm`, `deepfm`, ... retrained as `CTRModel`s, with projected pairs and one target per vector). Here
each model follows its paper: FM's second order is the sum-square identity over raw embeddings, DeepFM's FM
part and deep part share one embedding, IPNN feeds inner products, DCN-V2 has its full-rank cross network,
FinalMLP its two gated streams and bilinear fusion. A table row "ref:deepfm" is the published DeepFM.

Every model maps (B, n) int64 ids to logits (B,), looks up ONE concatenated table (per-field offsets) and
has no Python loop over fields or pairs in `forward`. Names are `ref:<model>` (`REFERENCES`); `reference()`
builds one from the retraining sizes `dim` (embedding width), `hidden` (MLP width) and `layers` (MLP depth).
Each model's `num_macs()` counts multiply-adds per sample (dense layers and interactions; lookups free).
Core module: no Lightning, no `autoias_pl.data`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoias_pl.space import ArchitectureError

PREFIX = "ref:"
REFERENCES: tuple[str, ...] = tuple(PREFIX + m for m in (
    "lr", "fm", "dnn", "deepfm", "wide_deep", "ipnn", "dcnv2", "finalmlp"))


class _IndexAddLookup(torch.autograd.Function):
    """weight[ids] whose backward scatters with index_add_: on CPU 5-15x faster than embedding_dense_backward
    (which sorts the ids), the same sums."""

    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return nn.functional.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (ids,) = ctx.saved_tensors
        d = grad.shape[-1]
        out = grad.new_zeros(ctx.rows, d)
        return out.index_add_(0, ids.reshape(-1), grad.reshape(-1, d)), None


class Table(nn.Embedding):
    """nn.Embedding (same parameters, state_dict and hooks) that trains on CPU through `_IndexAddLookup`;
    elsewhere (CUDA: its atomics would make index_add_ non-deterministic) the usual kernel."""

    def forward(self, ids: Tensor) -> Tensor:
        if self.weight.device.type == "cpu" and self.weight.requires_grad and torch.is_grad_enabled():
            return _IndexAddLookup.apply(self.weight, ids)
        return super().forward(ids)


class FieldEmbedding(nn.Module):
    """One concatenated table over all fields: ids (B, n) -> (B, n, dim), field i offset by sum(vocab[:i])."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int, std: float = 1e-2) -> None:
        super().__init__()
        offsets = torch.tensor([0, *vocab_sizes[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = Table(int(sum(vocab_sizes)), dim)
        nn.init.normal_(self.table.weight, std=std)

    def forward(self, x: Tensor) -> Tensor:
        return self.table(x + self.offsets)


class FirstOrder(nn.Module):
    """The linear terms: a global bias plus one weight per id, summed over fields -> (B,)."""

    def __init__(self, vocab_sizes: Sequence[int]) -> None:
        super().__init__()
        self.weights = FieldEmbedding(vocab_sizes, 1, std=1e-4)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.weights(x).sum(dim=(1, 2)) + self.bias


class ReLUDropout(nn.ReLU):
    """ReLU then dropout (rate `p`, off in eval): one module in the ReLU's place, so a model trained with
    dropout has the same state_dict keys as one without (a serving bundle rebuilds it without)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.dropout(torch.relu(x), self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


Hidden = int | Sequence[int]  # one width for `layers` layers, or the widths themselves (e.g. (256, 128))


def widths(hidden: Hidden, layers: int) -> list[int]:
    """The MLP's hidden widths: `layers` x `hidden`, or `hidden` itself when it is a sequence."""
    return [int(hidden)] * layers if isinstance(hidden, int) else [int(h) for h in hidden]


def mlp(fan_in: int, hidden: Hidden, layers: int, output: bool = True, dropout: float = 0.0,
        output_bias: bool = True, batch_norm: bool = False) -> nn.Sequential:
    """Per hidden width (`widths(hidden, layers)`) Linear(., width), [BatchNorm1d if `batch_norm`], ReLU +
    Dropout(`dropout`); then Linear(last, 1) if `output` (without a bias if not `output_bias`: a model whose
    linear part already has the global bias)."""
    mods: list[nn.Module] = []
    for width in widths(hidden, layers):
        mods += [nn.Linear(fan_in, width), *([nn.BatchNorm1d(width)] if batch_norm else []),
                 ReLUDropout(dropout) if dropout else nn.ReLU()]
        fan_in = width
    if output:
        mods.append(nn.Linear(fan_in, 1, bias=output_bias))
    return nn.Sequential(*mods)


def fm_second_order(e: Tensor) -> Tensor:
    """sum_{i<j} <e_i, e_j> of (B, n, k) embeddings by the sum-square identity, O(n k): -> (B,)."""
    return 0.5 * (e.sum(1).square() - e.square().sum(1)).sum(1)


def _linear_macs(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


class _Reference(nn.Module):
    """Common parts: the number of fields, the embedding width, a default `num_macs` (dense layers)."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.num_fields, self.dim = len(vocab_sizes), dim

    def num_macs(self) -> int:
        return _linear_macs(self)


class LR(_Reference):
    """Logistic regression: bias + one weight per id (e.g. McMahan et al. 2013). No hyperparameters."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: int = 400, layers: int = 3) -> None:
        super().__init__(vocab_sizes, dim)
        self.linear = FirstOrder(vocab_sizes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def num_macs(self) -> int:
        return self.num_fields


class FM(_Reference):
    """Factorization Machine (Rendle, ICDM 2010): bias + linear terms + sum_{i<j} <v_i, v_j>, computed with
    the sum-square identity in O(n k). `dim` is the factor size k; no MLP (`hidden`, `layers` unused)."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: int = 400, layers: int = 3) -> None:
        super().__init__(vocab_sizes, dim)
        self.linear = FirstOrder(vocab_sizes)
        self.embedding = FieldEmbedding(vocab_sizes, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + fm_second_order(self.embedding(x))

    def num_macs(self) -> int:
        return self.num_fields + 2 * self.num_fields * self.dim


class DNN(_Reference):
    """Plain DNN (the "deep" part of Cheng et al. 2016 / Guo et al. 2017): the concatenated embeddings into
    `layers` ReLU layers of `hidden` units and a linear read-out."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        self.deep = mlp(len(vocab_sizes) * dim, hidden, layers, dropout=dropout, batch_norm=batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.deep(self.embedding(x).flatten(1)).squeeze(1)


class DeepFM(_Reference):
    """DeepFM (Guo et al., IJCAI 2017): y = sigmoid(y_FM + y_DNN), where the FM part (bias, linear terms and
    sum_{i<j} <e_i, e_j>) and the DNN part read ONE shared embedding e. The paper's Criteo setting is
    k = 10, 3 layers of 400 ReLU units (here `dim`, `hidden`, `layers`; defaults 16, 400, 3)."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        self.linear = FirstOrder(vocab_sizes)  # holds the one global bias
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        self.deep = mlp(len(vocab_sizes) * dim, hidden, layers, dropout=dropout, output_bias=False,
                        batch_norm=batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x)  # (B, n, k), shared by both parts
        return self.linear(x) + fm_second_order(e) + self.deep(e.flatten(1)).squeeze(1)

    def num_macs(self) -> int:
        return self.num_fields + 2 * self.num_fields * self.dim + _linear_macs(self.deep)


class WideDeep(_Reference):
    """Wide & Deep (Cheng et al., DLRS 2016): a wide linear model over the raw ids (the first-order terms;
    the paper's hand-made cross-product features are not built) plus a DNN over the embeddings, trained
    jointly with their logits summed. The paper used 3 ReLU layers (1024, 512, 256) and 32-d embeddings;
    here `layers` layers of `hidden` at `dim`."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        self.wide = FirstOrder(vocab_sizes)  # holds the one global bias
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        self.deep = mlp(len(vocab_sizes) * dim, hidden, layers, dropout=dropout, output_bias=False,
                        batch_norm=batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.wide(x) + self.deep(self.embedding(x).flatten(1)).squeeze(1)

    def num_macs(self) -> int:
        return self.num_fields + _linear_macs(self.deep)


class IPNN(_Reference):
    """IPNN (Qu et al., ICDM 2016, "Product-based Neural Networks"): the product layer's linear signals
    (the embeddings) and the inner products <e_i, e_j> of all n(n-1)/2 pairs enter the first hidden layer
    (concatenated: the same affine map as the paper's l_z + l_p + b_1, without its low-rank factorisation
    of the inner-product weights), then `layers` ReLU layers of `hidden` (paper: 3 layers) and a read-out."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        n = len(vocab_sizes)
        rows, cols = torch.triu_indices(n, n, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        self.deep = mlp(n * dim + n * (n - 1) // 2, hidden, layers, dropout=dropout, batch_norm=batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x)  # (B, n, k)
        inner = (e[:, self.rows] * e[:, self.cols]).sum(-1)  # (B, n(n-1)/2)
        return self.deep(torch.cat([e.flatten(1), inner], 1)).squeeze(1)

    def num_macs(self) -> int:
        return self.rows.numel() * self.dim + _linear_macs(self.deep)


class CrossLayer(nn.Module):
    """One DCN-V2 cross layer: x_{l+1} = x_0 * (W x_l + b) + x_l, W full-rank (D x D)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return x0 * self.linear(x) + x


class DCNv2(_Reference):
    """DCN-V2 (Wang et al., WWW 2021), the stacked structure: embeddings x_0 (D = n k) -> `cross_layers`
    full-rank cross layers (default: `layers`; the paper tunes 1-4) -> `layers` ReLU layers of `hidden`
    -> a linear read-out. No mixture of low-rank experts (the paper's DCN-Mix)."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
                 cross_layers: int | None = None, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        width = len(vocab_sizes) * dim
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        depth = len(widths(hidden, layers))
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(depth if cross_layers is None else cross_layers))
        self.deep = mlp(width, hidden, layers, dropout=dropout, batch_norm=batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        x0 = h = self.embedding(x).flatten(1)
        for layer in self.cross:  # over layers, not fields
            h = layer(x0, h)
        return self.deep(h).squeeze(1)

    def num_macs(self) -> int:
        return _linear_macs(self) + len(self.cross) * self.num_fields * self.dim


class FinalMLP(_Reference):
    """FinalMLP (Mao et al., AAAI 2023, "An Enhanced Two-Stream MLP Model for CTR Prediction"), as in its
    reference implementation (FuxiCTR): two MLP streams over the flat embeddings, each input gated by its own
    stream-specific feature selection g = 2 * sigmoid(MLP(b)) with a learned context vector b (the paper's
    default without context fields; gate MLP of one hidden layer of `hidden`), and multi-head bilinear fusion
    of the two stream outputs o1, o2: y = w1.o1 + w2.o2 + sum_h o1_h^T W_h o2_h + b. Both streams here are
    `layers` layers of `hidden` (the paper tunes their widths separately); `heads` must divide `hidden`."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int = 16, hidden: int = 400, layers: int = 3,
                 heads: int = 1, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__(vocab_sizes, dim)
        if not isinstance(hidden, int):
            raise ArchitectureError(f"ref:finalmlp: one hidden width (its gates and fusion use it), got {hidden}")
        if hidden % heads:
            raise ArchitectureError(f"ref:finalmlp: heads={heads} must divide hidden={hidden}")
        width = len(vocab_sizes) * dim
        self.heads = heads
        self.embedding = FieldEmbedding(vocab_sizes, dim)
        self.contexts = nn.Parameter(torch.zeros(2, dim))  # one learned context per stream
        self.gates = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, width),
                                                 nn.Sigmoid()) for _ in range(2))
        self.streams = nn.ModuleList(mlp(width, hidden, layers, output=False, dropout=dropout, batch_norm=batch_norm)
                                     for _ in range(2))
        self.w1, self.w2 = nn.Linear(hidden, 1), nn.Linear(hidden, 1, bias=False)
        h = hidden // heads
        self.w12 = nn.Parameter(torch.empty(heads, h, h))
        nn.init.xavier_normal_(self.w12)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x).flatten(1)  # (B, D)
        o1, o2 = (stream(e * 2 * gate(ctx)) for stream, gate, ctx in zip(self.streams, self.gates, self.contexts,
                                                                              strict=True))
        b = o1.shape[0]
        h1, h2 = o1.view(b, self.heads, -1), o2.view(b, self.heads, -1)  # (B, H, h)
        bilinear = torch.einsum("bhi,hij,bhj->b", h1, self.w12, h2)
        return (self.w1(o1) + self.w2(o2)).squeeze(1) + bilinear

    def num_macs(self) -> int:  # the gates depend on no input: computed once per batch, not counted
        return sum(_linear_macs(s) for s in self.streams) + 2 * self.w1.in_features + self.w12.numel() \
            + self.num_fields * self.dim * 2


_CLASSES: dict[str, type[_Reference]] = {
    "ref:lr": LR, "ref:fm": FM, "ref:dnn": DNN, "ref:deepfm": DeepFM, "ref:wide_deep": WideDeep,
    "ref:ipnn": IPNN, "ref:dcnv2": DCNv2, "ref:finalmlp": FinalMLP,
}


def reference_args(name: str) -> tuple[str, ...]:
    """The keyword arguments reference model `name` takes beyond the sizes (e.g. ("dropout",)); () if unknown."""
    import inspect

    if name not in _CLASSES:
        return ()
    params = inspect.signature(_CLASSES[name].__init__).parameters
    return tuple(p for p in params if p not in ("self", "vocab_sizes", "dim", "hidden", "layers"))


def is_reference(name: str) -> bool:
    """Whether `name` asks for a reference model (the `ref:` prefix), known or not."""
    return name.startswith(PREFIX)


def reference(name: str, vocab_sizes: Sequence[int], dim: int = 16, hidden: Hidden = 400, layers: int = 3,
              **kwargs: object) -> nn.Module:
    """The reference model `name` (e.g. "ref:deepfm") over fields of `vocab_sizes`; ArchitectureError if
    unknown or the sizes are not positive (`layers` may be 0). `hidden` may list the MLP's widths, e.g.
    (256, 128) (then `layers` is unused; not for ref:finalmlp)."""
    if name not in _CLASSES:
        raise ArchitectureError(f"unknown reference model {name!r}; references are {REFERENCES}")
    if dim < 1 or min(widths(hidden, 1), default=1) < 1 or layers < 0 or not vocab_sizes:
        raise ArchitectureError(f"{name}: need dim, hidden >= 1, layers >= 0 and fields, got {dim}, {hidden}, "
                                f"{layers}, {len(vocab_sizes)} fields")
    return _CLASSES[name](vocab_sizes, dim=dim, hidden=hidden, layers=layers, **kwargs)
