"""What a validation of the search scores, logs and keeps: the hooks of `AutoIASSearch` (search/module.py).

Each validation after the warm-up scores the proposer's candidate (the generator's greedy architecture; random
search's best scored one), refined by `reward.refine_sweeps` of coordinate ascent over the pairs and pruned of
the vectors worth at most `reward.prune_tolerance` (search/refine.py), on the whole validation split with
inherited weights (`val/auc`, `val/logloss`, `val/params`, `val/score` = the objective on val/auc); the best by
val/score is kept and written by `search/callbacks.py` to `<log_dir>/best_architecture.json`. Validations during
the warm-up score the teacher instead and log it as `warmup/teacher_auc`, `warmup/teacher_logloss`,
`warmup/teacher_params` only: no candidate exists yet, so none is validated, kept or checkpointed as best.
EarlyStopping on `val/score`, mode max, ends the search (the CLI's skips the warm-up: autoias_pl/cli_callbacks.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from autoias_pl.data.batch import unpack_batch
from autoias_pl.search.refine import post_process
from autoias_pl.space import Architecture

if TYPE_CHECKING:
    from autoias_pl.search.module import AutoIASSearch


class CandidateValidation:
    """The validation hooks of `AutoIASSearch`, which mixes them in before LightningModule; they read its state
    (proposer, record, reward config, supernet, metrics), hence `self: AutoIASSearch`."""

    def candidate(self: AutoIASSearch) -> Architecture:
        """The proposer's candidate: the generator's greedy architecture, or random search's best scored one
        (the untrained generator's greedy one before any)."""
        return self.proposer.candidate(None if self.best_scored is None else self.best_scored[1])

    @property
    def validated_architecture(self: AutoIASSearch) -> Architecture | None:
        """The architecture the current (or last) validation scores, read-only: during the warm-up the teacher
        (the largest architecture: how far the shared weights have come; no candidate exists yet), after it the
        candidate, refined and pruned (reward.refine_sweeps / prune_tolerance)."""
        return self._val_arch

    def on_validation_epoch_start(self: AutoIASSearch) -> None:
        self._val_arch = self.teacher if self.in_warmup else self._post_process(self.candidate())
        self.val_metrics.reset()

    def _post_process(self: AutoIASSearch, arch: Architecture) -> Architecture:
        """`arch` refined over its pairs and pruned of the vectors worth at most reward.prune_tolerance, on the
        fixed reward rows (search/refine.py); unchanged without them and in the sanity check."""
        r = self.reward
        if self._reward_set is None or self.trainer.sanity_checking or not (r.refine_sweeps or r.prune_tolerance):
            return arch
        arch, logs = post_process(arch, self.score_on_reward_set, r.refine_sweeps, r.prune_tolerance,
                                  seed=self.seed + int(self.batch_count))
        self.log_dict(logs)
        return arch

    def validation_step(self: AutoIASSearch, batch: Any, batch_idx: int) -> None:
        rows, _ = unpack_batch(batch)
        self.val_metrics.update(self.supernet(rows.features, self._val_arch), rows.labels)

    def on_validation_epoch_end(self: AutoIASSearch) -> None:
        scores = {k: float(v) for k, v in self.val_metrics.compute().items()}  # synced across ranks
        arch = self._val_arch
        params = float(arch.num_params(self.vocab_sizes))
        if self.in_warmup:  # the teacher: its own keys, never a candidate's val/auc, val/score or best
            self.log_dict({"warmup/teacher_auc": scores["val/auc"], "warmup/teacher_logloss": scores["val/logloss"],
                           "warmup/teacher_params": params}, sync_dist=True, prog_bar=True)
            return
        # the search objective: val/auc minus the same cost term as the reward (= val/auc without cost or budget)
        score = float(self.objective([arch], torch.tensor([scores["val/auc"]]))[0])
        self.log_dict({"val/auc": scores["val/auc"], "val/logloss": scores["val/logloss"],
                       "val/params": params, "val/score": score}, sync_dist=True, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.record.validated(arch, score, {
            "epoch": self.current_epoch, "val_auc": scores["val/auc"], "val_logloss": scores["val/logloss"],
            "val_score": score, "step": self.global_step, "batch": int(self.batch_count)})
