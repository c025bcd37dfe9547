"""The AutoIAS search as a LightningModule (paper 3.3.2, 3.4, Algorithm 1), manual optimization.

Per training batch (`training_step`):
1. teacher: BCE(y, f(x; w, a_t)), one supernet step (eq. 10-11); a_t is the largest architecture (concat
   everywhere; with teacher_functions="uniform" its pair functions are drawn per batch);
2. students: soft labels from the updated teacher (eq. 12); N students from the sampler (the generator, or
   uniform during warm-up / with sampler="uniform"); mean over students of beta * soft + (1 - beta) * hard
   BCE (eq. 13-16); one supernet step;
3. generator: M architectures sampled, reward = the objective (AUC on reward rows of the validation split,
   minus the optional cost term and size-budget excess) -> advantage (baseline, optional scaling) ->
   -mean(log P(a) A) (eq. 20-23), one generator step. Skipped during warm-up and on reward rows of a single
   class. With sampler="uniform" (random search) M uniform architectures are scored the same way and no step
   is taken. Either way the best-scoring architecture seen is kept (`best_scored`).

`trainer.global_step` counts optimizer steps: 3 per batch (2 during warm-up or with sampler="uniform").
Configure runs with max_epochs and val_check_interval in batches, not max_steps.

Every rank draws the same architectures (torch.Generators seeded from (seed, batch counter, phase); the
counter is a buffer, so it is checkpointed) and sees the same reward (scores and labels are all-gathered
before the AUC). Each validation scores the candidate (the generator's greedy architecture; random search's
best scored one), optionally refined by `refine_sweeps` of coordinate ascent over the pairs and pruned of
the vectors worth at most `prune_tolerance` of the objective (search/refine.py; not during the warm-up,
whose candidate is the untrained generator's), on the whole validation
split with inherited weights (`val/auc`, `val/logloss`, `val/params`, and
`val/score` = the objective on val/auc, equal to val/auc without cost term or budget); the best by val/score
is kept and written by `search/callbacks.py` to `<log_dir>/best_architecture.json`. EarlyStopping on
`val/score` (or `val/auc`), mode max, ends it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from autoias_pl.auc import batched_auc
from autoias_pl.data.batch import CTRBatch
from autoias_pl.io import run_dir
from autoias_pl.metrics import ctr_metrics
from autoias_pl.search.callbacks import BestArchitectureWriter, SearchViews
from autoias_pl.search.generator import ArchitectureGenerator, PairDecision
from autoias_pl.search.refine import prune_vectors, refine_pairs
from autoias_pl.search.reward import (
    BaselineKind,
    RewardShaper,
    budget_excess,
    kd_student_loss,
    phase_generator,
    reinforce_loss,
    selection_cost,
)
from autoias_pl.space import COMPONENTS, FUNCTIONS, Architecture, SearchSpace
from autoias_pl.supernet.supernet import Supernet

BEST_ARCH_FILE = "best_architecture.json"


def adam(params: Iterable) -> torch.optim.Optimizer:
    """Adam, lr 1e-3 (paper 4.2.4): the default of both optimizers. fused=True: one kernel over all
    parameters (~2.4x faster optimizer steps on CPU; the search takes two supernet steps a batch)."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


class NonFiniteLossError(FloatingPointError):
    """A loss of the search is NaN or infinite; raised before the optimizer step, so no checkpoint follows."""


class AutoIASSearch(LightningModule):
    """Supernet (KD-trained) + architecture generator (REINFORCE). See the module docstring."""

    def __init__(
        self,
        field_names: list[str],
        vocab_sizes: list[int],
        schema_hash: str = "",
        emb_dims: tuple[int, ...] = (4, 8, 16, 32, 64, 128),
        proj_dims: tuple[int, ...] = (4, 8, 16, 32, 64, 128),
        functions: tuple[str, ...] = FUNCTIONS,
        num_layers: int = 5,
        hidden_units: tuple[int, ...] = (64, 128, 256),
        output_insertion: bool = True,
        supernet_optimizer: OptimizerCallable = adam,
        generator_optimizer: OptimizerCallable = adam,
        num_students: int = 9,
        beta: float = 0.5,
        num_reward_archs: int = 4,
        alpha_tau: float = 0.9,
        sampler: Literal["generator", "uniform"] = "generator",
        reward_rows: int = 0,
        baseline: BaselineKind = "ema",
        reward_scaling: bool = False,
        entropy_weight: float = 0.0,
        warmup_batches: int = 0,
        cost_weight: float = 0.0,
        generator_embed_dim: int = 16,
        generator_hidden_dim: int = 64,
        init_select_prob: float | None = None,
        init_std: float = 0.01,
        share_insert_blocks: bool = False,
        seed: int = 0,
        pair_decision: PairDecision = "separate",
        max_params: int | None = None,
        max_macs: int | None = None,
        teacher_functions: Literal["concat", "uniform"] = "concat",
        refine_sweeps: int = 0,
        function_blocks: bool = True,
        prune_tolerance: float = 0.0,
        uniform_students: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["supernet_optimizer", "generator_optimizer"])
        self.automatic_optimization = False
        if sampler not in ("generator", "uniform"):
            raise ValueError(f"sampler must be 'generator' or 'uniform', got {sampler!r}")
        if num_students < 1 or num_reward_archs < 1 or reward_rows < 0 or warmup_batches < 0:
            raise ValueError("num_students, num_reward_archs must be >= 1; reward_rows, warmup_batches >= 0")
        self.space = SearchSpace(tuple(field_names), tuple(emb_dims), tuple(proj_dims), tuple(functions),
                                 num_layers, tuple(hidden_units), output_insertion, schema_hash)
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.supernet_optimizer, self.generator_optimizer = supernet_optimizer, generator_optimizer
        self.num_students, self.beta, self.num_reward_archs = num_students, beta, num_reward_archs
        self.sampler, self.reward_rows, self.warmup_batches = sampler, reward_rows, warmup_batches
        self.entropy_weight, self.cost_weight, self.seed = entropy_weight, cost_weight, seed
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`; the global RNG is restored
            torch.manual_seed(seed)
            self.supernet = Supernet(self.space, self.vocab_sizes, init_std, share_insert_blocks=share_insert_blocks,
                                     function_blocks=function_blocks)
            self.generator = ArchitectureGenerator(self.space, generator_embed_dim, generator_hidden_dim,
                                                   init_select_prob, pair_decision=pair_decision)
        self.max_params, self.max_macs = max_params, max_macs
        if refine_sweeps < 0 or refine_sweeps and reward_rows == 0:
            raise ValueError("refine_sweeps must be >= 0 and needs the fixed reward set (reward_rows > 0)")
        self.refine_sweeps = refine_sweeps
        if prune_tolerance < 0 or prune_tolerance and reward_rows == 0:
            raise ValueError("prune_tolerance must be >= 0 and needs the fixed reward set (reward_rows > 0)")
        self.prune_tolerance = prune_tolerance
        if not 0 <= uniform_students <= num_students:
            raise ValueError(f"uniform_students must be in [0, num_students={num_students}], got {uniform_students}")
        self.uniform_students = uniform_students
        self.shaper = RewardShaper(baseline, alpha_tau, reward_scaling)
        self.register_buffer("batch_count", torch.zeros((), dtype=torch.long))
        if teacher_functions not in ("concat", "uniform"):
            raise ValueError(f"teacher_functions must be 'concat' or 'uniform', got {teacher_functions!r}")
        self.teacher, self.teacher_functions = Architecture.teacher(self.space), teacher_functions
        self.val_metrics = ctr_metrics("val/")
        self.best_score = -math.inf  # best val/score (val/auc - cost term)
        self.best_architecture: Architecture | None = None
        self._val_arch: Architecture | None = None
        self.best_scored: tuple[float, Architecture] | None = None  # best reward objective of a scored arch
        self.archs_scored = 0
        self._reward_set: CTRBatch | None = None
        self._best_path: Path | None = None
        self._decisions = {c: self.space.num_decisions(c) for c in COMPONENTS}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.supernet_optimizer(self.supernet.parameters()),
                self.generator_optimizer(self.generator.parameters())]

    # ----- reward data -----
    def set_reward_set(self, rows: CTRBatch) -> None:
        """Fix the held-out reward rows (the same on every rank; each rank scores its share of them)."""
        world, rank = self._world()
        per = rows.labels.numel() // world
        if per == 0:
            raise ValueError(f"reward set of {rows.labels.numel()} rows is smaller than the {world} ranks")
        part = slice(rank * per, (rank + 1) * per)
        self._reward_set = CTRBatch(rows.features[part].to(self.device), rows.labels[part].to(self.device))

    def on_fit_start(self) -> None:
        trainer = self.trainer
        self._best_path = run_dir(trainer) / BEST_ARCH_FILE  # all ranks
        if self.reward_rows > 0 and self._reward_set is None:
            dm = self.trainer.datamodule
            if dm is None or not hasattr(dm, "reward_set"):
                raise ValueError(f"reward_rows={self.reward_rows} needs a DataModule with reward_set(rows) "
                                 "(CTRDataModule), or call set_reward_set(batch) before fit")
            self.set_reward_set(dm.reward_set(self.reward_rows))

    def _world(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    # ----- training -----
    def training_step(self, batch: Any, batch_idx: int) -> None:
        train, reward = _unpack(batch)
        sup_opt, gen_opt = self.optimizers()
        step = int(self.batch_count)
        teacher_prob = self._teacher_phase(train, sup_opt, step)
        self._student_phase(train, teacher_prob, sup_opt, step)
        if step >= self.warmup_batches:
            self._generator_phase(reward, gen_opt, step)
        self.batch_count += 1

    def _teacher_phase(self, batch: CTRBatch, opt: Any, step: int) -> Tensor:
        """Eq. 10-12: one teacher step; returns the updated teacher's probabilities (B,) as soft labels."""
        teacher = self.teacher_of(step)
        loss = F.binary_cross_entropy_with_logits(self.supernet(batch.features, teacher), batch.labels)
        self._step(loss, opt, "teacher", step)
        self.log("train/teacher_loss", loss.detach(), prog_bar=True)
        with torch.no_grad():
            return torch.sigmoid(self.supernet(batch.features, teacher))  # (B,)

    def teacher_of(self, step: int) -> Architecture:
        """The largest architecture (paper 3.3.1: concat everywhere), or with teacher_functions="uniform" the
        same with each pair's function drawn uniformly per batch: the full-width steps then train every
        function's use of the shared projections, instead of tuning them to concat alone."""
        if self.teacher_functions == "concat":
            return self.teacher
        rng = phase_generator(self.seed, step, "teacher")
        func = torch.randint(len(self.space.functions), (self.space.num_pairs,), generator=rng)
        c = COMPONENTS.index("func")
        return Architecture(self.space, self.teacher.choices[:c] + (tuple(func.tolist()),) + self.teacher.choices[c + 1:])

    def _student_phase(self, batch: CTRBatch, teacher_prob: Tensor, opt: Any, step: int) -> None:
        """Eq. 13-16: N students, the mean of their KD losses, one supernet step (one backward)."""
        archs = self.sample_students(step)
        total = soft_sum = hard_sum = 0.0
        for arch in archs:
            loss, soft, hard = kd_student_loss(self.supernet(batch.features, arch), teacher_prob,
                                               batch.labels, self.beta)
            total, soft_sum, hard_sum = total + loss, soft_sum + soft.detach(), hard_sum + hard.detach()
        n = len(archs)
        self._step(total / n, opt, "students", step)
        self.log_dict({"train/student_loss": total.detach() / n, "train/student_soft_loss": soft_sum / n,
                       "train/student_hard_loss": hard_sum / n})

    def sample_students(self, step: int) -> list[Architecture]:
        """The N students of batch `step`: uniform in warm-up or with sampler="uniform", else the generator's,
        of which `uniform_students` stay uniform draws: the supernet keeps training every function's path
        after the generator has concentrated (otherwise a path the early generator dropped, as product before
        the crosses are learnt, is never trained again and the generator cannot come back to it)."""
        rng = phase_generator(self.seed, step, "students")
        if self.sampler == "uniform" or step < self.warmup_batches:
            return [Architecture.uniform_random(self.space, rng) for _ in range(self.num_students)]
        uniform = [Architecture.uniform_random(self.space, rng) for _ in range(self.uniform_students)]
        if self.uniform_students == self.num_students:
            return uniform
        with torch.no_grad():
            return self.generator.sample(self.num_students - self.uniform_students, rng).architectures + uniform

    def objective(self, archs: list[Architecture], auc: Tensor) -> Tensor:
        """The search objective (M,) float64: AUC minus the optional cost term and size-budget excess."""
        out = auc.double()
        if self.cost_weight:
            out = out - self.cost_weight * selection_cost(archs)
        if self.max_params or self.max_macs:
            out = out - budget_excess(archs, self.vocab_sizes, self.max_params, self.max_macs)
        return out

    @torch.no_grad()
    def reward_auc(self, archs: list[Architecture], rows: CTRBatch) -> Tensor:
        """AUC (M,) float64 (on CPU) of each architecture on the reward rows of all ranks (identical on all)."""
        scores = torch.stack([self.supernet(rows.features, a) for a in archs])  # (M, b)
        scores, labels = self._gather_scores(scores, rows.labels)  # (M, R), (R,)
        return batched_auc(scores.float(), labels).cpu()  # (M,)

    def _generator_phase(self, reward: CTRBatch | None, opt: Any, step: int) -> None:
        """Eq. 20-23: M architectures, their AUC on the reward rows, a REINFORCE step of the generator.
        With sampler="uniform" the M architectures are uniform draws, scored the same way, and no step is
        taken (random search); both keep the best-scoring architecture seen (`best_scored`)."""
        rows = self._reward_set if self.reward_rows > 0 else reward
        if rows is None:
            raise ValueError("reward_rows=0 takes each step's reward batch from the reward stream: use "
                             "CTRDataModule(reward_stream=True) (a dict batch with 'train' and 'reward')")
        rows = CTRBatch(rows.features.to(self.device), rows.labels.to(self.device))  # no-op when already there
        rng = phase_generator(self.seed, step, "rewards")
        if self.sampler == "uniform":
            archs, sample = [Architecture.uniform_random(self.space, rng) for _ in range(self.num_reward_archs)], None
        else:
            sample = self.generator.sample(self.num_reward_archs, rng)
            archs = sample.architectures
        auc = self.reward_auc(archs, rows)  # (M,)
        if torch.isnan(auc).any():  # a single class in the reward rows: no reward, no update
            return
        rewards = self.objective(archs, auc)  # (M,)
        self.archs_scored += len(archs)
        top = int(rewards.argmax())
        if self.best_scored is None or float(rewards[top]) > self.best_scored[0]:
            self.best_scored = (float(rewards[top]), archs[top])
        logs = {"search/auc": auc.mean(), "search/best_scored": self.best_scored[0],
                "search/archs_scored": float(self.archs_scored)}
        if sample is not None:
            baseline = self.shaper.baseline if self.shaper.steps > 0 else float(rewards.mean())
            adv = self.shaper(rewards)  # (M,)
            loss = reinforce_loss(sample.log_prob, adv, sample.entropy, self.entropy_weight, self._decisions)
            self._step(loss, opt, "generator", step)
            logs |= {"search/reward": rewards.mean() - baseline, "search/baseline": baseline,
                     "search/generator_loss": loss.detach()}
            logs |= {f"search/entropy/{c}": h.detach().mean() for c, h in sample.entropy.items()}
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in logs.items()})

    def _gather_scores(self, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(M, b), (b,) per rank -> (M, W*b), (W*b,) from all ranks (identical everywhere)."""
        if self._world()[0] == 1:
            return scores, labels
        s, y = self.all_gather(scores), self.all_gather(labels)  # (W, M, b), (W, b)
        return s.transpose(0, 1).reshape(scores.shape[0], -1), y.reshape(-1)

    def _step(self, loss: Tensor, opt: Any, phase: str, step: int) -> None:
        """manual_backward + step + zero_grad, refusing a non-finite loss on any rank (before the step)."""
        bad = ~torch.isfinite(loss.detach())
        if self._world()[0] > 1:
            bad = self.all_gather(bad).any()
        if bool(bad):
            raise NonFiniteLossError(
                f"non-finite {phase} loss ({float(loss.detach()):.4g} on rank {self._world()[1]}) at batch "
                f"{step} (epoch {self.current_epoch}); no step was taken and no checkpoint follows it")
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)

    @property
    def in_warmup(self) -> bool:
        """True until the first batch after the uniform warm-up (no architecture has been learnt or scored
        yet); the CLI's early stopping skips such validations (autoias_pl/cli_callbacks.py)."""
        return int(self.batch_count) <= self.warmup_batches and self.warmup_batches > 0

    # ----- validation: the generator's greedy architecture on the whole validation split -----
    def candidate(self) -> Architecture:
        """The architecture validation scores: the generator's greedy one, or with sampler="uniform" the
        best one random search has scored (the untrained generator's greedy one before any)."""
        if self.sampler == "uniform" and self.best_scored is not None:
            return self.best_scored[1]
        return self.generator.greedy()

    def on_validation_epoch_start(self) -> None:
        arch = self.candidate()
        # during the warm-up the candidate is the untrained generator's: nothing to refine or prune yet
        if self._reward_set is not None and not self.trainer.sanity_checking and not self.in_warmup:
            rows = self._reward_set

            def score(archs: list[Architecture]) -> Tensor:
                return self.objective(archs, self.reward_auc(archs, rows))

            if self.refine_sweeps:
                arch = refine_pairs(arch, score, self.refine_sweeps, seed=self.seed + int(self.batch_count))
                self.log_dict({"search/refine_gain": arch.provenance["refined_to"] - arch.provenance["refined_from"],
                               "search/refine_changes": float(arch.provenance["changes"])})
            if self.prune_tolerance:
                arch = prune_vectors(arch, score, self.prune_tolerance)
                self.log_dict({"search/prune_loss": arch.provenance["pruned_from"] - arch.provenance["pruned_to"],
                               "search/pruned": float(arch.provenance["pruned"])})
        self._val_arch = arch
        self.val_metrics.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        rows, _ = _unpack(batch)
        self.val_metrics.update(self.supernet(rows.features, self._val_arch), rows.labels)

    def on_validation_epoch_end(self) -> None:
        scores = {k: float(v) for k, v in self.val_metrics.compute().items()}  # synced across ranks
        arch = self._val_arch
        params = arch.num_params(self.vocab_sizes)
        # the search objective: val/auc minus the same cost term as the reward (= val/auc when cost_weight = 0)
        score = float(self.objective([arch], torch.tensor([scores["val/auc"]]))[0])
        self.log_dict({"val/auc": scores["val/auc"], "val/logloss": scores["val/logloss"],
                       "val/params": float(params), "val/score": score}, sync_dist=True, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        if score > self.best_score:
            self.best_score = score
            self.best_architecture = Architecture(self.space, arch.choices, {
                "epoch": self.current_epoch, "val_auc": scores["val/auc"], "val_logloss": scores["val/logloss"],
                "val_score": score, "step": self.global_step, "batch": int(self.batch_count)})

    def configure_callbacks(self) -> list[Callback]:
        """The best-architecture file and the TensorBoard views (search/callbacks.py)."""
        return [BestArchitectureWriter(), SearchViews()]

    @property
    def best_architecture_path(self) -> Path:
        """`<trainer.log_dir or default_root_dir>/best_architecture.json`, fixed at fit start (trainer.log_dir is
        a collective under DDP: it must be read on every rank, never inside an `if rank 0`)."""
        if self._best_path is None:
            raise RuntimeError("best_architecture_path is known once fit has started")
        return self._best_path

    def on_fit_end(self) -> None:
        if self.best_architecture is None or not self.trainer.is_global_zero:
            return
        prov = self.best_architecture.provenance
        rank_zero_info(f"best architecture (val/auc {prov['val_auc']:.5f}): {self.best_architecture_path}")
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.log_hyperparams(self.hparams, {"val/auc": prov["val_auc"], "val/score": self.best_score})

    # ----- checkpoint: best so far (buffers and optimizers are saved by Lightning) -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = self.best_architecture
        scored = self.best_scored
        checkpoint["autoias_search"] = {"best_score": self.best_score,
                                        "best_architecture": None if best is None else best.to_json_dict(),
                                        "best_scored": None if scored is None else [scored[0], scored[1].to_json_dict()],
                                        "archs_scored": self.archs_scored}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("autoias_search", {})
        self.best_score = state.get("best_score", -math.inf)
        best = state.get("best_architecture")
        self.best_architecture = None if best is None else Architecture.from_json_dict(best, "checkpoint")
        scored = state.get("best_scored")
        self.best_scored = None if scored is None else (scored[0], Architecture.from_json_dict(scored[1], "checkpoint"))
        self.archs_scored = state.get("archs_scored", 0)


def _unpack(batch: Any) -> tuple[CTRBatch, CTRBatch | None]:
    """A CTRBatch / (features, labels), or a dict {"train": ..., "reward": ...} -> (train, reward or None)."""
    if isinstance(batch, dict):
        if "train" not in batch:
            raise ValueError(f"a dict batch needs a 'train' entry, got keys {sorted(batch)}")
        reward = batch.get("reward")
        return CTRBatch(*batch["train"]), None if reward is None else CTRBatch(*reward)
    return CTRBatch(*batch), None
