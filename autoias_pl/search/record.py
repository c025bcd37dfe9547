"""What a search has found so far, free of Lightning: the best validated architecture (by val/score), the best
scored one (by the reward objective on the reward rows) and how many were scored. The module keeps one
`SearchRecord` and checkpoints its `state()` under the key `autoias_search`; `from_state` reads it back (a
checkpoint without the key gives an empty record)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from autoias_pl.space import Architecture


@dataclass
class SearchRecord:
    """best_score: the best val/score seen (-inf before any); best_architecture: the architecture that scored
    it, its provenance saying when; best_scored: (objective, architecture) of the best architecture scored
    by the reward; archs_scored: architectures scored by the reward so far."""

    best_score: float = -math.inf
    best_architecture: Architecture | None = None
    best_scored: tuple[float, Architecture] | None = None
    archs_scored: int = 0

    def scored(self, archs: list[Architecture], rewards: Tensor) -> None:
        """Count `archs` (M) and keep the best of their objectives `rewards` (M,) if it beats `best_scored`."""
        self.archs_scored += len(archs)
        top = int(rewards.argmax())
        if self.best_scored is None or float(rewards[top]) > self.best_scored[0]:
            self.best_scored = (float(rewards[top]), archs[top])

    def validated(self, arch: Architecture, score: float, provenance: dict[str, Any]) -> bool:
        """Keep `arch` with `provenance` as the best architecture if its val/score beats the best; True if so."""
        if score <= self.best_score:
            return False
        self.best_score = score
        self.best_architecture = Architecture(arch.space, arch.choices, provenance)
        return True

    def state(self) -> dict[str, Any]:
        """A checkpoint's `autoias_search` entry (JSON-like: architectures as their JSON dicts)."""
        best, scored = self.best_architecture, self.best_scored
        return {"best_score": self.best_score, "best_architecture": None if best is None else best.to_json_dict(),
                "best_scored": None if scored is None else [scored[0], scored[1].to_json_dict()],
                "archs_scored": self.archs_scored}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SearchRecord:
        """The record of a checkpoint's `autoias_search` entry ({} gives an empty record)."""
        best, scored = state.get("best_architecture"), state.get("best_scored")
        return cls(best_score=state.get("best_score", -math.inf),
                   best_architecture=None if best is None else Architecture.from_json_dict(best, "checkpoint"),
                   best_scored=None if scored is None else (scored[0], Architecture.from_json_dict(scored[1], "checkpoint")),
                   archs_scored=state.get("archs_scored", 0))
