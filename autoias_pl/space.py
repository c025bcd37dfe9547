"""The integrated search space of AutoIAS (paper 3.2, Table 3) and the architecture value.

An architecture makes one choice per decision, component by component, in this order (the generator
follows it):

| component | decisions               | candidates                           | label example   |
|-----------|-------------------------|--------------------------------------|-----------------|
| emb       | one per field (n)       | `emb_dims`                           | `emb/C7`        |
| proj      | one per pair (P)        | `proj_dims`                          | `proj/C3xC14`   |
| func      | one per pair (P)        | `functions`                          | `func/C3xC14`   |
| select    | per field and pair      | {0, 1}                               | `select/C3xC14` |
| insert    | per field and pair      | {0, ..., L-1} (+ "out", see below)   | `insert/I2`     |
| hidden    | one per MLP layer (L)   | `hidden_units`                       | `hidden/3`      |

"Vectors" are the n first-order field embeddings followed by the P = n(n-1)/2 pair interaction vectors
(pairs (i, j), i < j, in lexicographic order). Insertion target L ("out") is our extension: the vector is
read out linearly straight into the logit (the wide part of LR / FM / DeepFM); `output_insertion=False`
keeps the paper's set. Choices are stored as candidate indices; values are what the JSON shows.

What an architecture's model looks like (which fields, projections and pair groups it has, at which widths,
in which order its vectors enter each layer) is `Architecture.layout`, an `ArchitectureLayout`
(autoias_pl/layout.py) computed once; the costs here, `CTRModel` and the supernet's plan all read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from autoias_pl.errors import AutoIASError
from autoias_pl.io import atomic_write_text, read_json
from autoias_pl.layout import ArchitectureLayout

COMPONENTS: tuple[str, ...] = ("emb", "proj", "func", "select", "insert", "hidden")
FUNCTIONS: tuple[str, ...] = ("product", "concat", "plus", "max")
OUT = "out"
ARCH_VERSION = 1


class ArchitectureError(AutoIASError, ValueError):
    """An architecture does not fit its search space; the message names the label at fault."""


@dataclass(frozen=True)
class SearchSpace:
    """Candidate sets of every component, over the fields of one data schema."""

    field_names: tuple[str, ...]
    emb_dims: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    proj_dims: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    functions: tuple[str, ...] = FUNCTIONS
    num_layers: int = 5
    hidden_units: tuple[int, ...] = (64, 128, 256)
    output_insertion: bool = True
    schema_hash: str = ""

    def __post_init__(self) -> None:
        for name in ("field_names", "emb_dims", "proj_dims", "functions", "hidden_units"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.field_names) < 2 or len(set(self.field_names)) != len(self.field_names):
            raise ArchitectureError(f"space needs >= 2 distinct field names, got {self.field_names}")
        for name in ("emb_dims", "proj_dims", "hidden_units"):
            dims = getattr(self, name)
            if not dims or any(d < 1 for d in dims) or list(dims) != sorted(set(dims)):
                raise ArchitectureError(f"space.{name} must be ascending distinct positive ints, got {dims}")
        bad = [f for f in self.functions if f not in FUNCTIONS]
        if not self.functions or bad or len(set(self.functions)) != len(self.functions):
            raise ArchitectureError(f"space.functions must be distinct names from {FUNCTIONS}, got {self.functions}")
        if self.num_layers < 1:
            raise ArchitectureError(f"space.num_layers must be >= 1, got {self.num_layers}")

    @classmethod
    def from_schema(cls, schema: Any, **candidates: Any) -> SearchSpace:
        """Space over a data `Schema` (its field names and hash) with optional candidate-set overrides."""
        return cls(field_names=tuple(schema.field_names), schema_hash=schema.hash, **candidates)

    # ----- structure -----
    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @cached_property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        n = self.num_fields
        return tuple((i, j) for i in range(n) for j in range(i + 1, n))

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    @property
    def num_vectors(self) -> int:
        return self.num_fields + self.num_pairs

    @cached_property
    def pair_index(self) -> torch.Tensor:
        return torch.tensor(self.pairs, dtype=torch.long).reshape(-1, 2)  # (P, 2)

    @cached_property
    def vector_names(self) -> tuple[str, ...]:
        f = self.field_names
        return f + tuple(f"{f[i]}x{f[j]}" for i, j in self.pairs)

    @property
    def output_layer(self) -> int:
        """The insertion index that means "read out into the logit" (only valid with output_insertion)."""
        return self.num_layers

    @property
    def max_dim(self) -> int:
        return max(self.emb_dims[-1], self.proj_dims[-1])

    def candidates(self, component: str) -> tuple[Any, ...]:
        if component == "emb":
            return self.emb_dims
        if component == "proj":
            return self.proj_dims
        if component == "func":
            return self.functions
        if component == "select":
            return (0, 1)
        if component == "insert":
            return tuple(range(self.num_layers)) + ((OUT,) if self.output_insertion else ())
        if component == "hidden":
            return self.hidden_units
        raise ArchitectureError(f"unknown component {component!r}; components are {COMPONENTS}")

    def labels(self, component: str) -> tuple[str, ...]:
        names = {
            "emb": self.field_names,
            "proj": self.vector_names[self.num_fields :],
            "func": self.vector_names[self.num_fields :],
            "select": self.vector_names,
            "insert": self.vector_names,
            "hidden": tuple(str(layer) for layer in range(self.num_layers)),
        }[component]
        return tuple(f"{component}/{name}" for name in names)

    def num_decisions(self, component: str) -> int:
        return len(self.labels(component))

    @property
    def total_decisions(self) -> int:
        return sum(self.num_decisions(c) for c in COMPONENTS)

    def log10_size(self) -> float:
        """log10 of the number of architectures in the space."""
        return sum(self.num_decisions(c) * math.log10(len(self.candidates(c))) for c in COMPONENTS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field_names": list(self.field_names),
            "emb_dims": list(self.emb_dims),
            "proj_dims": list(self.proj_dims),
            "functions": list(self.functions),
            "num_layers": self.num_layers,
            "hidden_units": list(self.hidden_units),
            "output_insertion": self.output_insertion,
            "schema_hash": self.schema_hash,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Architecture:
    """One point of a `SearchSpace`: a candidate index per decision, per component (immutable, hashable).

    `choices[c]` holds the candidate indices of component `COMPONENTS[c]`, one per label of that component.
    `provenance` (how it was found: epoch, scores, ...) does not take part in equality.
    """

    space: SearchSpace
    choices: tuple[tuple[int, ...], ...]
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.choices) != len(COMPONENTS):
            raise ArchitectureError(f"expected {len(COMPONENTS)} components, got {len(self.choices)}")
        fixed = []
        for comp, idx in zip(COMPONENTS, self.choices, strict=True):
            idx = tuple(int(i) for i in idx)
            labels, ncand = self.space.labels(comp), len(self.space.candidates(comp))
            if len(idx) != len(labels):
                raise ArchitectureError(
                    f"component {comp!r} has {len(idx)} decisions, the space has {len(labels)} "
                    f"({self.space.num_fields} fields)"
                )
            for label, i in zip(labels, idx, strict=True):
                if not 0 <= i < ncand:
                    raise ArchitectureError(f"{label}: candidate index {i} out of range [0, {ncand})")
            fixed.append(idx)
        object.__setattr__(self, "choices", tuple(fixed))

    # ----- constructors -----
    @classmethod
    def from_indices(cls, space: SearchSpace, indices: Mapping[str, Sequence[int] | torch.Tensor]) -> Architecture:
        """From candidate indices per component name (sequences or 1-d tensors)."""
        missing = [c for c in COMPONENTS if c not in indices]
        if missing:
            raise ArchitectureError(f"missing components {missing}")
        rows = []
        for c in COMPONENTS:
            v = indices[c]
            rows.append(tuple(v.tolist() if isinstance(v, torch.Tensor) else v))
        return cls(space, tuple(rows))

    @classmethod
    def from_values(cls, space: SearchSpace, values: Mapping[str, Any], provenance: Mapping[str, Any] | None = None) -> Architecture:
        """From a `{label: value}` mapping (the JSON form). Every label of the space must be present."""
        known = {label for c in COMPONENTS for label in space.labels(c)}
        unknown = [label for label in values if label not in known]
        if unknown:
            raise ArchitectureError(f"{unknown[0]}: unknown label for this space ({len(unknown)} unknown labels)")
        rows = []
        for c in COMPONENTS:
            cands, idx = space.candidates(c), []
            for label in space.labels(c):
                if label not in values:
                    raise ArchitectureError(f"{label}: missing from the architecture")
                v = values[label]
                if c == "select" and isinstance(v, bool):
                    v = int(v)
                if v not in cands or isinstance(v, bool):
                    raise ArchitectureError(f"{label}: value {v!r} is not a candidate {list(cands)}")
                idx.append(cands.index(v))
            rows.append(tuple(idx))
        return cls(space, tuple(rows), dict(provenance or {}))

    @classmethod
    def teacher(cls, space: SearchSpace) -> Architecture:
        """The largest architecture (paper 3.3.1): max dims, concat, all selected, all at layer 0, max widths."""
        n, p, v = space.num_fields, space.num_pairs, space.num_vectors
        func = space.functions.index("concat") if "concat" in space.functions else 0
        return cls.from_indices(space, {
            "emb": [len(space.emb_dims) - 1] * n,
            "proj": [len(space.proj_dims) - 1] * p,
            "func": [func] * p,
            "select": [1] * v,
            "insert": [0] * v,
            "hidden": [len(space.hidden_units) - 1] * space.num_layers,
        })

    @classmethod
    def uniform_random(cls, space: SearchSpace, rng: torch.Generator) -> Architecture:
        """Each decision drawn uniformly from its candidates with the explicit generator `rng`."""
        return cls.from_indices(space, {
            c: torch.randint(len(space.candidates(c)), (space.num_decisions(c),), generator=rng) for c in COMPONENTS
        })

    # ----- views -----
    def indices(self, component: str) -> tuple[int, ...]:
        return self.choices[COMPONENTS.index(component)]

    def values(self, component: str) -> tuple[Any, ...]:
        cands = self.space.candidates(component)
        return tuple(cands[i] for i in self.indices(component))

    def tensor(self, component: str, device: torch.device | str | None = None) -> torch.Tensor:
        """Candidate indices of one component as a LongTensor (D_c,)."""
        return torch.tensor(self.indices(component), dtype=torch.long, device=device)

    @property
    def emb_dims(self) -> tuple[int, ...]:
        return self.values("emb")

    @property
    def proj_dims(self) -> tuple[int, ...]:
        return self.values("proj")

    @property
    def funcs(self) -> tuple[str, ...]:
        return self.values("func")

    @property
    def selected(self) -> tuple[bool, ...]:
        """Per vector (n fields then P pairs)."""
        return tuple(bool(i) for i in self.indices("select"))

    @property
    def insert_layers(self) -> tuple[int, ...]:
        """Per vector: hidden layer 0..L-1, or L (= space.output_layer) for the output read-out."""
        return self.indices("insert")

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.values("hidden")

    @property
    def vector_widths(self) -> tuple[int, ...]:
        """Width of each vector: d_i for field i, k_p for pair p."""
        return self.emb_dims + self.proj_dims

    def to_values(self) -> dict[str, Any]:
        return {
            label: value
            for c in COMPONENTS
            for label, value in zip(self.space.labels(c), self.values(c), strict=True)
        }

    # ----- structure and costs (autoias_pl/layout.py: the one layout the model and supernet also read) -----
    @cached_property
    def layout(self) -> ArchitectureLayout:
        """The structure of this architecture's standalone model (computed once, cached on the object)."""
        return ArchitectureLayout.of(self)

    def used_fields(self) -> tuple[int, ...]:
        """Fields whose embedding the standalone model computes: selected, or in a selected pair."""
        return self.layout.used

    def num_params(self, vocab_sizes: Sequence[int]) -> int:
        """Parameters of the standalone model (`ArchitectureLayout.num_params`: embeddings of used fields,
        projections d_i x K_i, the shared concat map at Kc, the hidden layers that exist, the read-out)."""
        if len(vocab_sizes) != self.space.num_fields:
            raise ArchitectureError(f"{len(vocab_sizes)} vocab sizes for {self.space.num_fields} fields")
        return self.layout.num_params(vocab_sizes)

    def num_macs(self) -> int:
        """Multiply-adds per sample of the standalone model (lookups, plus and max counted as free)."""
        return self.layout.num_macs()

    def summary(self) -> dict[str, Any]:
        n, names = self.space.num_fields, self.space.vector_names
        selected = self.layout.selected_vectors
        return {
            "selected_fields": [names[v] for v in selected if v < n],
            "selected_pairs": [names[v] for v in selected if v >= n],
            "hidden": list(self.hidden),
            "macs_per_sample": self.num_macs(),
        }

    # ----- JSON -----
    def to_json_dict(self, vocab_sizes: Sequence[int] | None = None) -> dict[str, Any]:
        summary = self.summary()
        if vocab_sizes is not None:
            summary["params"] = self.num_params(vocab_sizes)
        return {
            "autoias_architecture_version": ARCH_VERSION,
            "schema_hash": self.space.schema_hash,
            "provenance": dict(self.provenance),
            "summary": summary,
            "space": self.space.to_dict(),
            "choices": self.to_values(),
        }

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> Architecture:
        version = d.get("autoias_architecture_version")
        if version != ARCH_VERSION:
            raise ArchitectureError(f"{source}: autoias_architecture_version {version!r}, expected {ARCH_VERSION}")
        try:
            space = SearchSpace.from_dict(d["space"])
            return cls.from_values(space, d["choices"], d.get("provenance"))
        except KeyError as e:
            raise ArchitectureError(f"{source}: missing key {e}") from e
        except ArchitectureError as e:
            raise ArchitectureError(f"{source}: {e}") from e

    def save(self, path: str | Path, vocab_sizes: Sequence[int] | None = None) -> Path:
        atomic_write_text(path, json.dumps(self.to_json_dict(vocab_sizes), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, schema_hash: str | None = None) -> Architecture:
        """Read an architecture JSON; with `schema_hash`, refuse one searched on a different data schema."""
        path = Path(path)
        try:
            d = read_json(path, ArchitectureError)
        except FileNotFoundError as e:
            raise ArchitectureError(f"{path}: no such architecture file") from e
        arch = cls.from_json_dict(d, source=str(path))
        if schema_hash is not None and arch.space.schema_hash != schema_hash:
            raise ArchitectureError(
                f"{path}: searched on data schema {arch.space.schema_hash!r}, but this data is {schema_hash!r}"
            )
        return arch
