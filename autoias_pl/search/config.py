"""The search's recipe as a few typed, self-validating values (no Lightning here).

`AutoIASSearch` takes one of each; a YAML recipe nests them under `model.init_args`:

    model:
      class_path: autoias_pl.search.AutoIASSearch
      init_args:
        space: {emb_dims: [4, 8, 16], num_layers: 2, ...}
        reward: {num_archs: 16, rows: 8192, ...}

and a single field is overridden as `--model.init_args.reward.num_archs 8`. Each class checks its own
fields in `__post_init__` (a ValueError naming the field); fields that depend on each other sit in the same
class (refine/prune need the fixed reward rows: both in `RewardConfig`; uniform students <= students: both in
`DistillConfig`). `recipe_from_flat` maps the former flat keyword names (`num_reward_archs=4`) onto the
configs, for scripts and tests that set a few fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from autoias_pl.search.generator import PairDecision
from autoias_pl.search.reward import BaselineKind
from autoias_pl.space import FUNCTIONS, SearchSpace

ProposerKind = Literal["generator", "uniform"]


def _need(ok: bool, cls: str, name: str, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{cls}.{name} must be {what}, got {value!r}")


def _one_of(cls: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _need(value in allowed, cls, name, " or ".join(repr(a) for a in allowed), value)


@dataclass(frozen=True)
class SpaceConfig:
    """The candidates of the search space (paper Table 3); the fields come from the data."""

    # the defaults are SearchSpace's (the paper's Table 3), never a second copy of them
    emb_dims: tuple[int, ...] = SearchSpace.emb_dims
    proj_dims: tuple[int, ...] = SearchSpace.proj_dims
    functions: tuple[str, ...] = SearchSpace.functions
    num_layers: int = SearchSpace.num_layers
    hidden_units: tuple[int, ...] = SearchSpace.hidden_units
    output_insertion: bool = SearchSpace.output_insertion

    def __post_init__(self) -> None:
        for name in ("emb_dims", "proj_dims", "functions", "hidden_units"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # YAML lists -> tuples (hashable)
            _need(len(getattr(self, name)) > 0, "SpaceConfig", name, "non-empty", getattr(self, name))
        for name in ("emb_dims", "proj_dims", "hidden_units"):
            values = getattr(self, name)
            _need(all(int(v) == v and v >= 1 for v in values), "SpaceConfig", name, "positive integers", values)
        unknown = [f for f in self.functions if f not in FUNCTIONS]
        _need(not unknown, "SpaceConfig", "functions", f"a subset of {list(FUNCTIONS)}", list(self.functions))
        _need(self.num_layers >= 1, "SpaceConfig", "num_layers", ">= 1", self.num_layers)


@dataclass(frozen=True)
class SupernetConfig:
    """The weight-sharing supernet and its teacher (paper 3.3.1)."""

    init_std: float = 0.01
    share_insert_blocks: bool = False
    function_blocks: bool = True  # one MLP block per (pair, function); the Supernet's default too
    teacher_functions: Literal["concat", "uniform"] = "concat"  # uniform: pair functions drawn per batch

    def __post_init__(self) -> None:
        _need(self.init_std > 0, "SupernetConfig", "init_std", "> 0", self.init_std)
        _one_of("SupernetConfig", "teacher_functions", self.teacher_functions, ("concat", "uniform"))


@dataclass(frozen=True)
class DistillConfig:
    """The students of each batch and their knowledge distillation (paper eq. 13-16)."""

    num_students: int = 9
    beta: float = 0.5  # weight of the teacher's soft labels (0: hard labels only)
    uniform_students: int = 0  # of num_students, drawn uniformly after the warm-up too

    def __post_init__(self) -> None:
        _need(self.num_students >= 1, "DistillConfig", "num_students", ">= 1", self.num_students)
        _need(0.0 <= self.beta <= 1.0, "DistillConfig", "beta", "in [0, 1]", self.beta)
        _need(0 <= self.uniform_students <= self.num_students, "DistillConfig", "uniform_students",
              f"in [0, num_students={self.num_students}]", self.uniform_students)


@dataclass(frozen=True)
class GeneratorConfig:
    """Who proposes architectures: the generator (REINFORCE, paper 3.4) or uniform draws (random search)."""

    proposer: ProposerKind = "generator"
    embed_dim: int = 16
    hidden_dim: int = 64
    init_select_prob: float | None = None
    pair_decision: PairDecision = "separate"
    entropy_weight: float = 0.0

    def __post_init__(self) -> None:
        _one_of("GeneratorConfig", "proposer", self.proposer, ("generator", "uniform"))
        _one_of("GeneratorConfig", "pair_decision", self.pair_decision, ("separate", "joint"))
        _need(self.embed_dim >= 1, "GeneratorConfig", "embed_dim", ">= 1", self.embed_dim)
        _need(self.hidden_dim >= 1, "GeneratorConfig", "hidden_dim", ">= 1", self.hidden_dim)
        p = self.init_select_prob
        _need(p is None or 0.0 < p < 1.0, "GeneratorConfig", "init_select_prob", "None or in (0, 1)", p)
        _need(self.entropy_weight >= 0, "GeneratorConfig", "entropy_weight", ">= 0", self.entropy_weight)


@dataclass(frozen=True)
class RewardConfig:
    """The reward of M proposed architectures (paper eq. 20-23), its objective, and the candidate's
    post-processing by the same objective on the fixed reward rows (search/refine.py)."""

    num_archs: int = 4  # M architectures scored per batch
    rows: int = 0  # fixed reward rows of the validation split; 0: a fresh reward batch per step
    baseline: BaselineKind = "ema"
    alpha_tau: float = 0.9
    scaling: bool = False
    cost_weight: float = 0.0  # price per selected vector (0: accuracy first)
    max_params: int | None = None  # size budget: the reward loses the relative excess
    max_macs: int | None = None
    refine_sweeps: int = 0  # coordinate-ascent sweeps over the candidate's pairs (needs rows > 0)
    prune_tolerance: float = 0.0  # drop vectors worth at most this much objective (needs rows > 0)

    def __post_init__(self) -> None:
        _need(self.num_archs >= 1, "RewardConfig", "num_archs", ">= 1", self.num_archs)
        _need(self.rows >= 0, "RewardConfig", "rows", ">= 0", self.rows)
        _one_of("RewardConfig", "baseline", self.baseline, ("ema", "leave_one_out"))
        _need(0.0 <= self.alpha_tau < 1.0, "RewardConfig", "alpha_tau", "in [0, 1)", self.alpha_tau)
        _need(self.cost_weight >= 0, "RewardConfig", "cost_weight", ">= 0", self.cost_weight)
        for name in ("max_params", "max_macs"):
            v = getattr(self, name)
            _need(v is None or v >= 1, "RewardConfig", name, "None or >= 1", v)
        _need(self.refine_sweeps >= 0, "RewardConfig", "refine_sweeps", ">= 0", self.refine_sweeps)
        _need(self.prune_tolerance >= 0, "RewardConfig", "prune_tolerance", ">= 0", self.prune_tolerance)
        for name in ("refine_sweeps", "prune_tolerance"):
            _need(not getattr(self, name) or self.rows > 0, "RewardConfig", name,
                  "0 without the fixed reward rows (rows > 0)", getattr(self, name))


@dataclass(frozen=True)
class ScheduleConfig:
    """When the generator starts: after `warmup_epochs` epochs (a float: 0.5 is half an epoch) of uniform
    students and no generator step; the module turns it into batches at train start."""

    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        _need(self.warmup_epochs >= 0, "ScheduleConfig", "warmup_epochs", ">= 0", self.warmup_epochs)


CONFIGS: dict[str, type] = {"space": SpaceConfig, "supernet": SupernetConfig, "distill": DistillConfig,
                            "generator": GeneratorConfig, "reward": RewardConfig, "schedule": ScheduleConfig}
# the former flat keyword of a field, where it differs from the field's name: (config, field)
_RENAMED: dict[str, tuple[str, str]] = {
    "sampler": ("generator", "proposer"), "generator_embed_dim": ("generator", "embed_dim"),
    "generator_hidden_dim": ("generator", "hidden_dim"), "num_reward_archs": ("reward", "num_archs"),
    "reward_rows": ("reward", "rows"), "reward_scaling": ("reward", "scaling"),
}


def as_config(cls: type, value: Any) -> Any:
    """`value` as an instance of the config class `cls` (a dict, e.g. from a checkpoint's hparams, or None)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as a plain dict of lists and scalars (what a checkpoint's hparams hold)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def nested_name(flat: str) -> str:
    """The dotted name of a flat keyword under `model.init_args` ("num_reward_archs" -> "reward.num_archs");
    names that are not a config's field (seed, the optimizers) stay as they are."""
    owner = {f.name: (key, f.name) for key, cls in CONFIGS.items() for f in fields(cls)} | _RENAMED
    return ".".join(owner[flat]) if flat in owner else flat


def flat_from_nested(init_args: dict[str, Any]) -> dict[str, Any]:
    """The configs' sections of a YAML recipe's `model.init_args` as flat keywords (the inverse of
    `recipe_from_flat`): {"reward": {"num_archs": 16}} -> {"num_reward_archs": 16}."""
    renamed = {v: k for k, v in _RENAMED.items()}
    return {renamed.get((key, name), name): value for key in CONFIGS
            for name, value in (init_args.get(key) or {}).items()}


def recipe_from_flat(**flat: Any) -> dict[str, Any]:
    """Flat keywords (`emb_dims=(4, 8)`, `num_reward_archs=4`, `seed=1`, ...) -> the keyword arguments of
    `AutoIASSearch` (`space=SpaceConfig(...)`, `reward=RewardConfig(...)`, `seed=1`). Names that are not a
    config's field pass through unchanged (the optimizers, seed); a config given whole is updated."""
    owner = {f.name: (key, f.name) for key, cls in CONFIGS.items() for f in fields(cls)} | _RENAMED
    parts: dict[str, dict[str, Any]] = {key: {} for key in CONFIGS}
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name in CONFIGS:
            parts[name] = to_dict(as_config(CONFIGS[name], value)) | parts[name]
        elif name in owner:
            key, field_name = owner[name]
            parts[key][field_name] = value
        else:
            out[name] = value
    return out | {key: CONFIGS[key](**values) for key, values in parts.items()}


__all__ = ["CONFIGS", "DistillConfig", "GeneratorConfig", "RewardConfig", "ScheduleConfig", "SpaceConfig",
           "SupernetConfig", "as_config", "flat_from_nested", "nested_name", "recipe_from_flat", "to_dict"]
