"""What a search keeps of what it found (search/record.py) and the candidate's post-processing
(search/refine.py's `post_process`), on tensors: no Lightning, no training."""

from __future__ import annotations

import json
import math

import torch

from autoias_pl.search.record import SearchRecord
from autoias_pl.search.refine import option_of, post_process, prune_vectors, refine_pairs
from autoias_pl.space import Architecture, SearchSpace

SPACE = SearchSpace(tuple(f"F{i}" for i in range(4)), emb_dims=(2, 4), proj_dims=(2, 4), num_layers=2,
                    hidden_units=(4, 8))


def archs(k: int, seed: int = 0) -> list[Architecture]:
    g = torch.Generator().manual_seed(seed)
    return [Architecture.uniform_random(SPACE, g) for _ in range(k)]


def test_scored_counts_every_architecture_and_keeps_the_best_objective_seen() -> None:
    record, a = SearchRecord(), archs(6)
    record.scored(a[:3], torch.tensor([0.2, 0.7, 0.5], dtype=torch.float64))
    assert record.archs_scored == 3 and record.best_scored == (0.7, a[1])
    record.scored(a[3:], torch.tensor([0.6, 0.1, 0.69], dtype=torch.float64))  # none beats 0.7
    assert record.archs_scored == 6 and record.best_scored == (0.7, a[1])
    record.scored(a[3:4], torch.tensor([0.9], dtype=torch.float64))
    assert record.archs_scored == 7 and record.best_scored == (0.9, a[3])


def test_validated_keeps_a_strictly_better_score_with_its_provenance() -> None:
    record, (a, b, c) = SearchRecord(), archs(3, seed=1)
    assert record.best_score == -math.inf and record.best_architecture is None
    assert record.validated(a, 0.70, {"epoch": 1})
    assert not record.validated(b, 0.70, {"epoch": 2})  # a tie keeps the earlier one
    assert record.best_architecture.choices == a.choices and record.best_architecture.provenance == {"epoch": 1}
    assert record.validated(c, 0.71, {"epoch": 3})
    assert (record.best_score, record.best_architecture.choices) == (0.71, c.choices)


def test_state_round_trips_through_json_as_a_checkpoint_holds_it() -> None:
    record, (a, b) = SearchRecord(), archs(2, seed=2)
    record.scored([a, b], torch.tensor([0.3, 0.4], dtype=torch.float64))
    record.validated(a, 0.65, {"epoch": 4, "val_auc": 0.65})
    back = SearchRecord.from_state(json.loads(json.dumps(record.state())))
    assert (back.best_score, back.archs_scored, back.best_scored[0]) == (0.65, 2, 0.4)
    assert back.best_scored[1].choices == b.choices and back.best_architecture.choices == a.choices
    assert back.best_architecture.provenance == {"epoch": 4, "val_auc": 0.65}
    empty = SearchRecord.from_state({})  # a checkpoint without the entry
    assert (empty.best_score, empty.best_architecture, empty.best_scored, empty.archs_scored) == (-math.inf, None, None, 0)


def test_post_process_is_refine_then_prune_and_logs_each_step() -> None:
    """The same architecture as refine_pairs then prune_vectors by hand, with their provenance as the logs;
    sweeps 0 and tolerance 0 leave the architecture as it is and log nothing."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(1 + len(SPACE.functions), (SPACE.num_pairs,), generator=g).tolist()
    worth = torch.linspace(-1e-3, 1e-2, SPACE.num_vectors, dtype=torch.float64)  # (V,): a few worthless

    def score(batch: list[Architecture]) -> torch.Tensor:
        hits = [sum(option_of(a, q) == t for q, t in enumerate(target)) for a in batch]
        return torch.tensor(hits, dtype=torch.float64) + torch.stack(
            [(torch.tensor(a.selected, dtype=torch.float64) * worth).sum() for a in batch])

    start = archs(1, seed=4)[0]
    got, logs = post_process(start, score, sweeps=1, tolerance=1e-3, seed=7)
    by_hand = prune_vectors(refine_pairs(start, score, 1, seed=7), score, 1e-3)
    assert got.choices == by_hand.choices
    refined = refine_pairs(start, score, 1, seed=7).provenance
    assert logs == {"search/refine_gain": refined["refined_to"] - refined["refined_from"],
                    "search/refine_changes": float(refined["changes"]),
                    "search/prune_loss": by_hand.provenance["pruned_from"] - by_hand.provenance["pruned_to"],
                    "search/pruned": float(by_hand.provenance["pruned"])}
    assert logs["search/pruned"] > 0 and logs["search/refine_changes"] > 0
    same, none = post_process(start, score, sweeps=0, tolerance=0.0)
    assert same.choices == start.choices and none == {}
