"""Who proposes the architectures a search scores: the generator (learns from their rewards) or uniform draws
(random search, the paper's ablation 4.4.3). One small interface, so the search module never branches on it.

- `propose(n, rng)`: n architectures for the reward (and, with a `sample`, what REINFORCE needs);
- `students(n, rng)`: the n non-uniform students of a batch after the warm-up;
- `candidate(best_scored)`: the architecture a validation scores (the generator's greedy one; random search:
  the best it has scored, or the untrained generator's greedy one before any).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from autoias_pl.search.generator import ArchitectureGenerator, GeneratorSample
from autoias_pl.space import Architecture


@dataclass
class Proposal:
    architectures: list[Architecture]  # n architectures
    sample: GeneratorSample | None  # log-probs and entropies for a learning proposer, else None


class Proposer(Protocol):
    learns: bool  # True: its proposals come with a sample and it takes a REINFORCE step on their rewards

    def propose(self, n: int, rng: torch.Generator) -> Proposal: ...

    def students(self, n: int, rng: torch.Generator) -> list[Architecture]: ...

    def candidate(self, best_scored: Architecture | None) -> Architecture: ...


class GeneratorProposer:
    """The architecture generator: sampled proposals, greedy candidate."""

    learns = True

    def __init__(self, generator: ArchitectureGenerator) -> None:
        self.generator = generator

    def propose(self, n: int, rng: torch.Generator) -> Proposal:
        sample = self.generator.sample(n, rng)
        return Proposal(sample.architectures, sample)

    @torch.no_grad()
    def students(self, n: int, rng: torch.Generator) -> list[Architecture]:
        return self.generator.sample(n, rng).architectures if n > 0 else []

    def candidate(self, best_scored: Architecture | None) -> Architecture:
        return self.generator.greedy()


class UniformProposer:
    """Random search: uniform proposals, no learning; the candidate is the best architecture scored so far
    (before any, the untrained generator's greedy one, as a fixed starting point)."""

    learns = False

    def __init__(self, generator: ArchitectureGenerator) -> None:
        self.generator, self.space = generator, generator.space

    def propose(self, n: int, rng: torch.Generator) -> Proposal:
        return Proposal([Architecture.uniform_random(self.space, rng) for _ in range(n)], None)

    def students(self, n: int, rng: torch.Generator) -> list[Architecture]:
        return [Architecture.uniform_random(self.space, rng) for _ in range(n)]

    def candidate(self, best_scored: Architecture | None) -> Architecture:
        return best_scored if best_scored is not None else self.generator.greedy()


def make_proposer(kind: str, generator: ArchitectureGenerator) -> Proposer:
    """"generator" -> GeneratorProposer, "uniform" -> UniformProposer (GeneratorConfig.proposer)."""
    return {"generator": GeneratorProposer, "uniform": UniformProposer}[kind](generator)
