"""TensorBoard views of the search, drawn once per validation epoch by rank 0 (matplotlib `Figure`s, no pyplot: the
backend of a notebook or script is left alone).

- `search/pair_selection`: n x n heat map of P(select) of every pair (diagonal: of the field itself);
- `search/embedding_dims`: per field, the generator's distribution over embedding dimensions;
- `search/insertion`: per insertion target, the expected number of selected vectors inserted there;
- `search/architecture` (text): the greedy architecture as markdown tables.
All probabilities are the generator's conditionals along its greedy path (`ArchitectureGenerator.probs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from autoias_pl.search.generator import ArchitectureGenerator
from autoias_pl.space import OUT, Architecture, SearchSpace


def selection_matrix(space: SearchSpace, select_probs: torch.Tensor) -> np.ndarray:
    """select_probs (V,) P(select=1) per vector -> (n, n) symmetric matrix, fields on the diagonal."""
    p = select_probs.detach().cpu().double().numpy()  # (V,)
    n = space.num_fields
    m = np.zeros((n, n))
    np.fill_diagonal(m, p[:n])
    for k, (i, j) in enumerate(space.pairs):
        m[i, j] = m[j, i] = p[n + k]
    return m


def pair_selection_figure(space: SearchSpace, select_probs: torch.Tensor) -> Figure:
    n = space.num_fields
    size = min(3.0 + 0.25 * n, 14.0)
    fig = Figure(figsize=(size, size * 0.85))  # no pyplot: the caller's backend stays as it is
    ax = fig.subplots()
    im = ax.imshow(selection_matrix(space, select_probs), vmin=0.0, vmax=1.0, cmap="viridis")
    ticks = range(n)
    ax.set_xticks(ticks, space.field_names, rotation=90, fontsize=max(4, 10 - n // 8))
    ax.set_yticks(ticks, space.field_names, fontsize=max(4, 10 - n // 8))
    ax.set_title("P(select) per pair (diagonal: field)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def embedding_dims_figure(space: SearchSpace, emb_probs: torch.Tensor) -> Figure:
    """emb_probs (n, C): stacked bars of each field's distribution over `space.emb_dims`."""
    p = emb_probs.detach().cpu().numpy()  # (n, C)
    n = space.num_fields
    fig = Figure(figsize=(min(3.0 + 0.25 * n, 14.0), 3.5))  # no pyplot: the caller's backend stays as it is
    ax = fig.subplots()
    bottom = np.zeros(n)
    for c, dim in enumerate(space.emb_dims):
        ax.bar(range(n), p[:, c], bottom=bottom, label=str(dim))
        bottom += p[:, c]
    ax.set_xticks(range(n), space.field_names, rotation=90, fontsize=max(4, 10 - n // 8))
    ax.set_ylabel("P(embedding dim)")
    ax.legend(title="dim", fontsize=7, loc="upper right", ncol=len(space.emb_dims))
    fig.tight_layout()
    return fig


def insertion_figure(space: SearchSpace, select_probs: torch.Tensor, insert_probs: torch.Tensor) -> Figure:
    """Expected number of selected vectors per insertion target: sum_v P(select_v) P(insert_v = t)."""
    expected = (select_probs.detach().unsqueeze(1) * insert_probs.detach()).sum(0).cpu().numpy()  # (T,)
    labels = [str(t) if t != OUT else "out" for t in space.candidates("insert")]
    fig = Figure(figsize=(4.0, 3.0))  # no pyplot: the caller's backend stays as it is
    ax = fig.subplots()
    ax.bar(labels, expected)
    ax.set_xlabel("insertion target (MLP layer / out)")
    ax.set_ylabel("expected selected vectors")
    fig.tight_layout()
    return fig


def architecture_markdown(arch: Architecture, vocab_sizes: Sequence[int], title: str = "") -> str:
    """The architecture as markdown: a summary line, a fields table and a selected-pairs table."""
    space, n = arch.space, arch.space.num_fields
    target = ["out" if t == space.output_layer else str(t) for t in arch.insert_layers]
    lines = [f"**{title}**  " if title else "",
             f"hidden units {list(arch.hidden)}, params {arch.num_params(vocab_sizes):,}, "
             f"MACs/sample {arch.num_macs():,}", "",
             "| field | selected | emb dim | insert |", "|---|---|---|---|"]
    for i, name in enumerate(space.field_names):
        lines.append(f"| {name} | {int(arch.selected[i])} | {arch.emb_dims[i]} | {target[i]} |")
    lines += ["", "| selected pair | proj dim | function | insert |", "|---|---|---|---|"]
    for k in range(space.num_pairs):
        if arch.selected[n + k]:
            lines.append(f"| {space.vector_names[n + k]} | {arch.proj_dims[k]} | {arch.funcs[k]} | {target[n + k]} |")
    return "\n".join(lines)


@torch.no_grad()
def log_search_views(experiment: Any, generator: ArchitectureGenerator, arch: Architecture,
                     vocab_sizes: Sequence[int], step: int, title: str = "") -> None:
    """Add the three figures and the architecture text to a TensorBoard SummaryWriter."""
    space = generator.space
    select = generator.selection_probs()  # (V,)
    figures = {
        "search/pair_selection": pair_selection_figure(space, select),
        "search/embedding_dims": embedding_dims_figure(space, generator.probs("emb")),
        "search/insertion": insertion_figure(space, select, generator.probs("insert")),
    }
    for tag, fig in figures.items():
        experiment.add_figure(tag, fig, global_step=step, close=True)
    experiment.add_text("search/architecture", architecture_markdown(arch, vocab_sizes, title), global_step=step)
