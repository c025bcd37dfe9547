"""The AutoIAS search as a LightningModule (paper 3.3.2, 3.4, Algorithm 1), manual optimization.

The recipe is six config values (search/config.py): space, supernet, distill, generator, reward, schedule.
Per training batch (`training_step`):
1. teacher: BCE(y, f(x; w, a_t)), one supernet step (eq. 10-11); a_t is the largest architecture (concat
   everywhere; with supernet.teacher_functions="uniform" its pair functions are drawn per batch);
2. students: soft labels from the updated teacher (eq. 12); N students, uniform during the warm-up or for
   random search, else the proposer's (distill.uniform_students of them uniform); mean over students of
   beta * soft + (1 - beta) * hard BCE (eq. 13-16); one supernet step;
3. after the warm-up: M architectures from the proposer (search/proposer.py), scored by the objective (AUC on
   reward rows of the validation split, minus the optional cost term and size-budget excess); the best seen is
   kept (`best_scored`); the generator then takes a REINFORCE step (eq. 20-23; random search takes none).
   Skipped on reward rows of a single class.

The warm-up is `schedule.warmup_epochs` (a float), turned into batches at train start. `trainer.global_step`
counts optimizer steps: 3 per batch (2 during warm-up or for random search); the module counts batches in its
`batch_count` buffer (checkpointed). Configure runs with max_epochs and val_check_interval, not max_steps.

Every rank draws the same architectures (torch.Generators seeded from (seed, batch counter, phase)) and sees
the same reward (scores and labels are all-gathered before the AUC). What a validation scores (the proposer's
candidate, refined and pruned; the teacher during the warm-up), logs and keeps: search/validation.py.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from autoias_pl.auc import batched_auc
from autoias_pl.data.batch import CTRBatch, unpack_batch
from autoias_pl.io import run_dir
from autoias_pl.metrics import ctr_metrics
from autoias_pl.search.callbacks import BestArchitectureWriter, SearchViews
from autoias_pl.search.config import (
    CONFIGS,
    DistillConfig,
    GeneratorConfig,
    RewardConfig,
    ScheduleConfig,
    SpaceConfig,
    SupernetConfig,
    as_config,
    recipe_from_flat,
    to_dict,
)
from autoias_pl.search.generator import ArchitectureGenerator, GeneratorSample
from autoias_pl.search.proposer import Proposer, make_proposer
from autoias_pl.search.record import SearchRecord
from autoias_pl.search.reward import (
    RewardShaper,
    budget_excess,
    kd_student_loss,
    phase_generator,
    reinforce_loss,
    selection_cost,
)
from autoias_pl.search.validation import CandidateValidation
from autoias_pl.space import COMPONENTS, Architecture, SearchSpace
from autoias_pl.supernet.supernet import Supernet

BEST_ARCH_FILE = "best_architecture.json"


def adam(params: Iterable) -> torch.optim.Optimizer:
    """Adam, lr 1e-3 (paper 4.2.4): the default of both optimizers. fused=True: one kernel over all
    parameters (~2.4x faster optimizer steps on CPU; the search takes two supernet steps a batch)."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


class NonFiniteLossError(FloatingPointError):
    """A loss of the search is NaN or infinite; raised before the optimizer step, so no checkpoint follows."""


class AutoIASSearch(CandidateValidation, LightningModule):
    """Supernet (KD-trained) + architecture proposer (the generator's REINFORCE, or random search). See the
    module docstring; the recipe is the configs of search/config.py (each accepts its dict too, as a
    checkpoint's hparams hold it); the validation hooks are `CandidateValidation`'s (search/validation.py)."""

    def __init__(
        self,
        field_names: list[str],
        vocab_sizes: list[int],
        schema_hash: str = "",
        space: SpaceConfig = SpaceConfig(),  # noqa: B008 (frozen: a shared default is safe)
        supernet: SupernetConfig = SupernetConfig(),  # noqa: B008
        distill: DistillConfig = DistillConfig(),  # noqa: B008
        generator: GeneratorConfig = GeneratorConfig(),  # noqa: B008
        reward: RewardConfig = RewardConfig(),  # noqa: B008
        schedule: ScheduleConfig = ScheduleConfig(),  # noqa: B008
        supernet_optimizer: OptimizerCallable = adam,
        generator_optimizer: OptimizerCallable = adam,
        seed: int = 0,
    ) -> None:
        super().__init__()
        cfg = {k: as_config(CONFIGS[k], v) for k, v in (("space", space), ("supernet", supernet),
               ("distill", distill), ("generator", generator), ("reward", reward), ("schedule", schedule))}
        self.save_hyperparameters({"field_names": list(field_names), "vocab_sizes": [int(v) for v in vocab_sizes],
                                   "schema_hash": schema_hash, **{k: to_dict(c) for k, c in cfg.items()},
                                   "seed": seed})
        self.automatic_optimization = False
        self.space_config, self.supernet_config = cfg["space"], cfg["supernet"]
        self.distill, self.generator_config = cfg["distill"], cfg["generator"]
        self.reward, self.schedule = cfg["reward"], cfg["schedule"]
        s = self.space_config
        self.space = SearchSpace(tuple(field_names), s.emb_dims, s.proj_dims, s.functions, s.num_layers,
                                 s.hidden_units, s.output_insertion, schema_hash)
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.supernet_optimizer, self.generator_optimizer, self.seed = supernet_optimizer, generator_optimizer, seed
        net, gen = self.supernet_config, self.generator_config
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`; the global RNG is restored
            torch.manual_seed(seed)
            self.supernet = Supernet(self.space, self.vocab_sizes, net.init_std,
                                     share_insert_blocks=net.share_insert_blocks, function_blocks=net.function_blocks)
            self.generator = ArchitectureGenerator(self.space, gen.embed_dim, gen.hidden_dim, gen.init_select_prob,
                                                   pair_decision=gen.pair_decision)
        self.proposer: Proposer = make_proposer(gen.proposer, self.generator)
        self.shaper = RewardShaper(self.reward.baseline, self.reward.alpha_tau, self.reward.scaling)
        self.register_buffer("batch_count", torch.zeros((), dtype=torch.long))
        self.teacher = Architecture.teacher(self.space)
        self.warmup_batches = 0  # schedule.warmup_epochs in batches, set at train start (`on_train_start`)
        self.val_metrics = ctr_metrics("val/")
        self.record = SearchRecord()  # the best validated and the best scored architecture (checkpointed)
        self._val_arch: Architecture | None = None
        self._reward_set: CTRBatch | None = None
        self._best_path: Path | None = None
        self._decisions = {c: self.space.num_decisions(c) for c in COMPONENTS}

    @classmethod
    def from_flat(cls, field_names: list[str], vocab_sizes: list[int], schema_hash: str = "",
                  **flat: Any) -> AutoIASSearch:
        """The module from flat keywords (`num_students=3, reward_rows=512, ...`, search/config.py's
        `recipe_from_flat`): for scripts and tests that set a few fields of the recipe."""
        return cls(field_names, vocab_sizes, schema_hash, **recipe_from_flat(**flat))

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
        rows = self.reward.rows
        if rows > 0 and self._reward_set is None:
            dm = self.trainer.datamodule
            if dm is None or not hasattr(dm, "reward_set"):
                raise ValueError(f"reward.rows={rows} needs a DataModule with reward_set(rows) "
                                 "(CTRDataModule), or call set_reward_set(batch) before fit")
            self.set_reward_set(dm.reward_set(rows))

    def on_train_start(self) -> None:
        """schedule.warmup_epochs in training batches: round(epochs x batches per epoch), from the train loader
        as the trainer limits it (limit_train_batches), known once the fit loop has set it up (after the sanity
        check, which validates the untrained candidate; setting the loader up earlier would break an exact
        mid-epoch resume). Counted on `batch_count` (one per batch, whatever the
        optimizer steps; a checkpointed buffer), so a resumed run keeps the same warm-up."""
        self.warmup_batches = self._warmup_batches(self.trainer.num_training_batches)

    def _warmup_batches(self, per_epoch: float) -> int:
        epochs = self.schedule.warmup_epochs
        if epochs == 0:
            return 0
        if not math.isfinite(per_epoch):
            raise ValueError(f"schedule.warmup_epochs={epochs} needs a train loader with a length "
                             "(or limit_train_batches as a number of batches)")
        return max(1, round(epochs * per_epoch))

    def _world(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    # ----- training -----
    def training_step(self, batch: Any, batch_idx: int) -> None:
        train, reward = unpack_batch(batch)
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
        if self.supernet_config.teacher_functions == "concat":
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
                                               batch.labels, self.distill.beta)
            total, soft_sum, hard_sum = total + loss, soft_sum + soft.detach(), hard_sum + hard.detach()
        n = len(archs)
        self._step(total / n, opt, "students", step)
        self.log_dict({"train/student_loss": total.detach() / n, "train/student_soft_loss": soft_sum / n,
                       "train/student_hard_loss": hard_sum / n})

    def sample_students(self, step: int) -> list[Architecture]:
        """The N students of batch `step`: uniform in warm-up or for a proposer that does not learn (random
        search), else the proposer's, of which `distill.uniform_students` stay uniform draws: the supernet
        keeps training every function's path after the generator has concentrated (otherwise a path the early
        generator dropped, as product before the crosses are learnt, is never trained again and the generator
        cannot come back to it)."""
        rng, n, u = phase_generator(self.seed, step, "students"), self.distill.num_students, self.distill.uniform_students
        if not self.proposer.learns or step < self.warmup_batches:
            return [Architecture.uniform_random(self.space, rng) for _ in range(n)]
        uniform = [Architecture.uniform_random(self.space, rng) for _ in range(u)]
        return self.proposer.students(n - u, rng) + uniform

    def objective(self, archs: list[Architecture], auc: Tensor) -> Tensor:
        """The search objective (M,) float64: AUC minus the optional cost term and size-budget excess."""
        out, r = auc.double(), self.reward
        if r.cost_weight:
            out = out - r.cost_weight * selection_cost(archs)
        if r.max_params or r.max_macs:
            out = out - budget_excess(archs, self.vocab_sizes, r.max_params, r.max_macs)
        return out

    def score_on_reward_set(self, archs: list[Architecture]) -> Tensor:
        """The objective (M,) float64 of `archs` on the fixed reward rows (what refine/prune compare)."""
        if self._reward_set is None:
            raise RuntimeError("score_on_reward_set needs the fixed reward rows (reward.rows > 0, set at fit start)")
        return self.objective(archs, self.reward_auc(archs, self._reward_set))

    @torch.no_grad()
    def reward_auc(self, archs: list[Architecture], rows: CTRBatch) -> Tensor:
        """AUC (M,) float64 (on CPU) of each architecture on the reward rows of all ranks (identical on all)."""
        scores = torch.stack([self.supernet(rows.features, a) for a in archs])  # (M, b)
        scores, labels = self._gather_scores(scores, rows.labels)  # (M, R), (R,)
        return batched_auc(scores.float(), labels).cpu()  # (M,)

    def _generator_phase(self, reward: CTRBatch | None, opt: Any, step: int) -> None:
        """Eq. 20-23: M proposals, their objective on the reward rows, the best kept (`best_scored`), and for a
        learning proposer (the generator) a REINFORCE step; random search only scores (search/proposer.py)."""
        rows = self._reward_rows(reward)
        proposal = self.proposer.propose(self.reward.num_archs, phase_generator(self.seed, step, "rewards"))
        archs = proposal.architectures
        auc = self.reward_auc(archs, rows)  # (M,)
        if torch.isnan(auc).any():  # a single class in the reward rows: no reward, no update
            return
        rewards = self.objective(archs, auc)  # (M,)
        self.record.scored(archs, rewards)
        logs = {"search/auc": auc.mean(), "search/best_scored": self.best_scored[0],
                "search/archs_scored": float(self.archs_scored)}
        if proposal.sample is not None:
            logs |= self._reinforce(proposal.sample, rewards, opt, step)
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in logs.items()})

    def _reward_rows(self, reward: CTRBatch | None) -> CTRBatch:
        """The fixed reward set (reward.rows > 0) or this step's reward batch, on the module's device."""
        rows = self._reward_set if self.reward.rows > 0 else reward
        if rows is None:
            raise ValueError("reward.rows=0 takes each step's reward batch from the reward stream: use "
                             "CTRDataModule(reward_stream=True) (a dict batch with 'train' and 'reward')")
        return CTRBatch(rows.features.to(self.device), rows.labels.to(self.device))  # no-op when already there

    def _reinforce(self, sample: GeneratorSample, rewards: Tensor, opt: Any, step: int) -> dict[str, Any]:
        """Advantages (baseline, optional scaling) -> -mean(log P(a) A) - entropy bonus, one generator step;
        returns what to log."""
        baseline = self.shaper.baseline if self.shaper.steps > 0 else float(rewards.mean())
        adv = self.shaper(rewards)  # (M,)
        loss = reinforce_loss(sample.log_prob, adv, sample.entropy, self.generator_config.entropy_weight,
                              self._decisions)
        self._step(loss, opt, "generator", step)
        return {"search/reward": rewards.mean() - baseline, "search/baseline": baseline,
                "search/generator_loss": loss.detach()} | {
                f"search/entropy/{c}": h.detach().mean() for c, h in sample.entropy.items()}

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
        yet). Its validations score the teacher, logged as `warmup/*` only (see `validated_architecture`); the
        CLI's early stopping and best checkpoint skip them (autoias_pl/cli_callbacks.py)."""
        return int(self.batch_count) <= self.warmup_batches and self.warmup_batches > 0

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

    # ----- what the search has found (search/record.py; buffers and optimizers are saved by Lightning) -----
    @property
    def best_score(self) -> float:
        """The best val/score so far (-inf before the first validation after the warm-up)."""
        return self.record.best_score

    @property
    def best_architecture(self) -> Architecture | None:
        """The architecture of `best_score`, its provenance saying when (epoch, batch, val/auc)."""
        return self.record.best_architecture

    @property
    def best_scored(self) -> tuple[float, Architecture] | None:
        """(objective, architecture) of the best architecture scored on the reward rows so far."""
        return self.record.best_scored

    @property
    def archs_scored(self) -> int:
        """Architectures scored on the reward rows so far."""
        return self.record.archs_scored

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["autoias_search"] = self.record.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.record = SearchRecord.from_state(checkpoint.get("autoias_search", {}))
