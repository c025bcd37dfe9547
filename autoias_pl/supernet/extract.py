"""Extract one architecture of a trained supernet as a standalone `CTRModel` with its weights copied.

Reads the architecture's layout (`arch.layout`, autoias_pl/layout.py; the model's `model.layout` is the
same object) and copies the prefix weights the supernet uses for `arch` (embedding rows of the used fields
at [:d_i], projections W_i[:d_i, :K_i], the concat map at Kc, MLP blocks at the true widths), so that
`extract_model(net, a)(x) == net(x, a)`. Hidden layers before the first one that receives a vector compute a
constant from their biases; it is folded into the next existing layer's bias (or the output bias).
"""

from __future__ import annotations

import torch
from torch import Tensor

from autoias_pl.ctr_model import CTRModel
from autoias_pl.layout import ArchitectureLayout
from autoias_pl.space import Architecture
from autoias_pl.supernet.elastic import ElasticLayer
from autoias_pl.supernet.supernet import Supernet


def _dense(layer: ElasticLayer, lay: ArchitectureLayout, vecs: tuple[int, ...], rows: list[int], prev: int,
           width: int) -> Tensor:
    """(width, prev + sum of vector widths) weight of a standalone nn.Linear: [hidden rows, vector blocks]
    (`rows`: each vector's block row, `Supernet.block_rows`)."""
    widths = lay.widths
    blocks = [layer.hid_weight[:prev, :width]] + [layer.vec_weight[rows[v], : widths[v], :width] for v in vecs]
    return torch.cat(blocks, 0).t()  # (width, in)


def _constant(net: Supernet, lay: ArchitectureLayout, upto: int) -> Tensor | None:
    """Output o_{upto-1} of the hidden layers 0..upto-1 when none receives a vector: (h,) or None if upto=0."""
    o: Tensor | None = None
    for layer, h in zip(net.layers[:upto], lay.hidden[:upto], strict=False):
        b = layer.bias[:h]  # (h,)
        o = torch.relu(b if o is None else b + o @ layer.hid_weight[: o.shape[0], :h])  # (h,)
    return o


@torch.no_grad()
def extract_model(supernet: Supernet, arch: Architecture) -> CTRModel:
    """The standalone model of `arch` with the supernet's weights, on the supernet's device and dtype."""
    param = supernet.embedding.table.weight
    model = CTRModel(arch, supernet.vocab_sizes).to(device=param.device, dtype=param.dtype)
    lay, L = model.layout, arch.space.num_layers  # model.layout is arch.layout
    starts = supernet.embedding.offsets.tolist()
    for table, (d, fields) in zip(model.tables, lay.emb_groups, strict=True):
        table.weight.copy_(torch.cat([param[starts[i] : starts[i] + supernet.vocab_sizes[i], :d] for i in fields]))
    for w, (d, k, fields) in zip(model.projections, lay.proj_groups, strict=True):
        w.copy_(supernet.projection.weight[list(fields), :d, :k])  # (m, d, K)
    kc = lay.concat_width
    if kc:
        model.concat_a.copy_(supernet.concat.a[:kc, :kc])
        model.concat_b.copy_(supernet.concat.b[:kc, :kc])
        model.concat_c.copy_(supernet.concat.c[:kc])
    h, first, rows = lay.hidden, lay.first, supernet.block_rows(arch)
    const = _constant(supernet, lay, lay.mlp_layers.start)  # (h_{first-1},) or None
    for linear, t in zip(model.mlp, lay.mlp_layers, strict=True):
        src = supernet.layers[t]
        prev = h[t - 1] if t > first else 0
        linear.weight.copy_(_dense(src, lay, lay.inputs[t], rows, prev, h[t]))
        bias = src.bias[: h[t]]  # (h_t,)
        if t == first and const is not None:
            bias = bias + const @ src.hid_weight[: const.shape[0], : h[t]]  # (h_t,)
        linear.bias.copy_(bias)
    prev = h[L - 1] if first is not None else 0
    model.readout.weight.copy_(_dense(supernet.readout, lay, lay.inputs[L], rows, prev, 1))
    bias = supernet.readout.bias
    if first is None and const is not None:
        bias = bias + const @ supernet.readout.hid_weight[: const.shape[0], :1]
    model.readout.bias.copy_(bias)
    return model
