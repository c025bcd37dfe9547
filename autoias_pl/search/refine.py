"""A second searcher on the trained supernet: coordinate ascent over the pairs' decisions, scored by paired
forward passes on the fixed reward rows (no gradients, no generator).

Starting from an architecture (the generator's greedy one, or random search's best), each sweep visits the
pairs in a seeded random order and gives each pair the option among {off} + functions whose architecture
scores best, the other decisions held. Two architectures that differ in one pair are scored on the SAME
rows, so their difference is far less noisy than two independent rewards (the REINFORCE estimate compares
M architectures that differ everywhere). A change is kept only if it gains more than `min_gain`.
Cost: sweeps x P x |functions| forward passes over the reward rows.

`prune_vectors` then drops what the supernet says is worth nothing: it first adds the unselected fields
that gain on their own (a pair may be carrying a left-out field's first-order signal), then does backward
elimination of selected vectors (fields and pairs) whose removal costs at most `tolerance` of the
objective, measured on the same rows against that architecture (so the losses cannot add up beyond it). Without a cost term the
reward is indifferent to a pair with no effect, so the generator leaves such pairs on; pruning gives the
smallest architecture that scores within `tolerance` of the one found. Cost: about 2 x |selected| passes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from autoias_pl.auc import batched_auc
from autoias_pl.space import COMPONENTS, Architecture
from autoias_pl.supernet.supernet import Supernet

Objective = Callable[[list[Architecture], Tensor], Tensor]  # (archs, AUC (M,)) -> objective (M,)
Scorer = Callable[[list[Architecture]], Tensor]  # archs -> objective (M,) float64 on the same rows


def with_pair(arch: Architecture, pair: int, option: int) -> Architecture:
    """`arch` with pair `pair` off (option 0) or selected with function index option - 1."""
    n, c_sel, c_func = arch.space.num_fields, COMPONENTS.index("select"), COMPONENTS.index("func")
    choices = [list(c) for c in arch.choices]
    choices[c_sel][n + pair] = int(option > 0)
    if option > 0:
        choices[c_func][pair] = option - 1
    return Architecture(arch.space, tuple(tuple(c) for c in choices))


def option_of(arch: Architecture, pair: int) -> int:
    """0 if pair `pair` is off, else its function index + 1."""
    n = arch.space.num_fields
    return arch.indices("func")[pair] + 1 if arch.selected[n + pair] else 0


def with_vector(arch: Architecture, vector: int, on: bool) -> Architecture:
    """`arch` with vector `vector` (a field < n, else pair vector - n) selected or not."""
    c_sel = COMPONENTS.index("select")
    choices = [list(c) for c in arch.choices]
    choices[c_sel][vector] = int(on)
    return Architecture(arch.space, tuple(tuple(c) for c in choices))


def prune_vectors(arch: Architecture, score: Scorer, tolerance: float) -> Architecture:
    """The smallest architecture found by backward elimination whose objective stays within `tolerance` of
    `arch`'s, after adding the left-out fields that gain (see the module docstring). Single removals are
    scored once (|selected| passes) and tried in order of least loss, each kept if the pruned architecture
    still scores >= start - tolerance. Returns it with provenance {"pruned_from", "pruned_to": objectives
    of `arch` and of the result, "pruned": vectors removed, "added_fields": fields added}."""
    start = float(score([arch])[0])
    if tolerance <= 0:
        return Architecture(arch.space, arch.choices, {"pruned_from": start, "pruned_to": start, "pruned": 0,
                                                       "added_fields": 0})
    # first the fields the architecture leaves out but that gain on their own (a pair that carries a field's
    # first-order signal for it is then redundant and can go)
    n, added, begin = arch.space.num_fields, 0, start
    missing = [v for v in range(n) if not arch.selected[v]]
    if missing:
        gains = score([with_vector(arch, v, True) for v in missing]) - start  # (|missing|,)
        for i in torch.argsort(gains, descending=True, stable=True).tolist():
            if float(gains[i]) <= 0:
                break
            trial = with_vector(arch, missing[i], True)
            got = float(score([trial])[0])
            if got > start:
                arch, start, added = trial, got, added + 1
    selected = [v for v, s in enumerate(arch.selected) if s]
    if not selected:
        return Architecture(arch.space, arch.choices, {"pruned_from": begin, "pruned_to": start, "pruned": 0,
                                                       "added_fields": added})
    single = score([with_vector(arch, v, False) for v in selected])  # (|S|,)
    current, value, pruned = arch, start, 0
    for i in torch.argsort(single, descending=True, stable=True).tolist():
        if float(single[i]) < start - tolerance:
            break  # sorted: every later single removal costs more than the tolerance on its own
        trial = with_vector(current, selected[i], False)
        got = float(score([trial])[0])
        if got >= start - tolerance:
            current, value, pruned = trial, got, pruned + 1
    return Architecture(arch.space, current.choices, {"pruned_from": begin, "pruned_to": value, "pruned": pruned,
                                                      "added_fields": added})


def scorer(supernet: Supernet, features: Tensor, labels: Tensor, objective: Objective) -> Scorer:
    """A Scorer on fixed rows (one process): archs -> objective (M,) float64; features (R, n), labels (R,)."""

    @torch.no_grad()
    def score(archs: list[Architecture]) -> Tensor:
        logits = torch.stack([supernet(features, a) for a in archs])  # (M, R)
        return objective(archs, batched_auc(logits.float().cpu(), labels.cpu()))

    return score


def refine_pairs(arch: Architecture, score: Scorer, sweeps: int = 1, min_gain: float = 1e-4,
                 seed: int = 0) -> Architecture:
    """Coordinate ascent over the pair options of `arch` (see the module docstring); returns the result with
    provenance {"refined_from": its objective before, "refined_to": after, "changes": pairs changed}."""
    space, options = arch.space, 1 + len(arch.space.functions)
    best = float(score([arch])[0])
    start, changes = best, 0
    g = torch.Generator().manual_seed(seed)
    for _ in range(sweeps):
        for pair in torch.randperm(space.num_pairs, generator=g).tolist():
            current = option_of(arch, pair)
            others = [o for o in range(options) if o != current]
            tries = [with_pair(arch, pair, o) for o in others]
            values = score(tries)  # (options - 1,)
            top = int(values.argmax())
            if float(values[top]) > best + min_gain:
                arch, best, changes = tries[top], float(values[top]), changes + 1
    return Architecture(space, arch.choices, {"refined_from": start, "refined_to": best, "changes": changes})


def post_process(arch: Architecture, score: Scorer, sweeps: int, tolerance: float, seed: int = 0
                 ) -> tuple[Architecture, dict[str, float]]:
    """What a validation scores of a candidate: `arch` refined over its pairs (`sweeps` of `refine_pairs`,
    seeded by `seed`), then pruned (`prune_vectors` with `tolerance`), each skipped at 0; with what to log
    (search/refine_gain, search/refine_changes, search/prune_loss, search/pruned)."""
    logs: dict[str, float] = {}
    if sweeps:
        arch = refine_pairs(arch, score, sweeps, seed=seed)
        p = arch.provenance
        logs |= {"search/refine_gain": p["refined_to"] - p["refined_from"], "search/refine_changes": float(p["changes"])}
    if tolerance:
        arch = prune_vectors(arch, score, tolerance)
        p = arch.provenance
        logs |= {"search/prune_loss": p["pruned_from"] - p["pruned_to"], "search/pruned": float(p["pruned"])}
    return arch, logs
