"""The search's options beyond the paper: one joint decision per pair, random search that keeps its best,
and size budgets in the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from autoias_pl.search.generator import ArchitectureGenerator
from autoias_pl.search.reward import budget_excess
from autoias_pl.space import COMPONENTS, Architecture, SearchSpace
from tests.helpers.search import data, make, trainer  # noqa: F401  (the `data` fixture)

SPACE = SearchSpace(tuple(f"F{i}" for i in range(5)), emb_dims=(2, 4), proj_dims=(2, 4), num_layers=2,
                    hidden_units=(4, 8))


def joint(seed: int = 0) -> ArchitectureGenerator:
    torch.manual_seed(seed)
    gen = ArchitectureGenerator(SPACE, pair_decision="joint")
    with torch.no_grad():  # leave the uniform start: random logits everywhere
        for p in gen.parameters():
            p.add_(0.5 * torch.randn(p.shape))
    return gen


def test_joint_pairs_select_exactly_the_pairs_that_are_not_off() -> None:
    gen, n = joint(), SPACE.num_fields
    s = gen.sample(64, torch.Generator().manual_seed(1))
    pair = s.indices["func"]  # (64, P) joint indices: 0 = off
    assert pair.max() == len(SPACE.functions) and pair.min() == 0  # every candidate, "off" included, is drawn
    for k, a in enumerate(s.architectures):
        assert [int(b) for b in a.selected[n:]] == (pair[k] > 0).long().tolist()
        assert [f for f, on in zip(a.indices("func"), pair[k].tolist(), strict=True) if on] == \
               [j - 1 for j in pair[k].tolist() if j]


def test_joint_log_prob_is_the_sampling_log_prob_and_counts_each_pair_once() -> None:
    gen, n = joint(), SPACE.num_fields
    s = gen.sample(8, torch.Generator().manual_seed(2))
    torch.testing.assert_close(gen.log_prob(s.architectures), s.log_prob)
    # reference: sum of log pi over every decision, with the pair select decisions excluded (they are forced)
    ref = []
    for a in s.architectures:
        total = 0.0
        for c in COMPONENTS:
            logp = gen.probs(c, [a])[0].log()  # (D_c, C)
            idx = gen._indices([a])[c][0]
            rows = range(n) if c == "select" else range(logp.shape[0])
            total += sum(float(logp[d, idx[d]].detach()) for d in rows)
        ref.append(total)
    torch.testing.assert_close(s.log_prob.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=0)


def test_joint_pair_probs_are_the_sampling_frequencies() -> None:
    """pair_choice_probs (P, 1 + F) and selection_probs against what `sample` draws: with the embedding and
    projection decisions made certain (so every draw takes the greedy path these probabilities condition on),
    the frequency of each pair option and of each pair's selection over 4096 draws is within 0.03 (> 3.8
    standard errors) of the probability."""
    gen, n = joint(), SPACE.num_fields
    with torch.no_grad():
        for c in ("emb", "proj"):
            gen.bias[c][:, 0] += 1e3  # candidate 0, certainly
    probs = gen.pair_choice_probs()  # (P, 1 + F)
    assert probs.shape == (SPACE.num_pairs, 1 + len(SPACE.functions))
    torch.testing.assert_close(probs.sum(1), torch.ones(SPACE.num_pairs))
    s = gen.sample(4096, torch.Generator().manual_seed(2))
    assert (s.indices["emb"] == 0).all() and (s.indices["proj"] == 0).all()
    options = s.indices["func"]  # (K, P) joint indices: 0 = off
    freq = torch.stack([(options == o).double().mean(0) for o in range(probs.shape[1])], 1)  # (P, 1 + F)
    torch.testing.assert_close(freq, probs.double(), atol=0.03, rtol=0)
    selected = s.indices["select"][:, n:].double().mean(0)  # (P,) the pairs the architectures select
    torch.testing.assert_close(gen.selection_probs()[n:].double(), selected, atol=0.03, rtol=0)
    assert float((probs[:, 0] - 1 / probs.shape[1]).abs().max()) > 0.05  # not the uniform start


def test_separate_pair_choice_probs_factorise_select_and_function() -> None:
    torch.manual_seed(0)
    gen, n = ArchitectureGenerator(SPACE), SPACE.num_fields
    with torch.no_grad():
        gen.bias["select"][n + 2, 1] = 0.3  # pair 2 more likely selected, pair 5 more likely "max"
        gen.bias["func"][5, 3] = 0.2
    probs = gen.pair_choice_probs()
    torch.testing.assert_close(probs.sum(1), torch.ones(SPACE.num_pairs))
    sel = gen.probs("select")[n:, 1]
    torch.testing.assert_close(probs[:, 0], 1.0 - sel, atol=1e-5, rtol=0)  # select does not see func here
    torch.testing.assert_close(probs[5, 1:], sel[5] * gen.probs("func")[5], atol=1e-5, rtol=0)


def test_init_select_prob_in_joint_mode() -> None:
    gen = ArchitectureGenerator(SPACE, init_select_prob=0.2, pair_decision="joint")
    probs = gen.pair_choice_probs()
    torch.testing.assert_close(probs[:, 0], torch.full((SPACE.num_pairs,), 0.8))
    torch.testing.assert_close(probs[:, 1:], torch.full((SPACE.num_pairs, 4), 0.05))


def test_budget_excess_is_relative_and_zero_within_budget() -> None:
    vocab = [10] * 5
    a, t = Architecture.uniform_random(SPACE, torch.Generator().manual_seed(0)), Architecture.teacher(SPACE)
    pa, pt = a.num_params(vocab), t.num_params(vocab)
    got = budget_excess([a, t], vocab, max_params=pa, max_macs=None)
    assert got[0] == 0.0 and got[1] == pytest.approx(pt / pa - 1.0)
    both = budget_excess([t], vocab, max_params=pa, max_macs=t.num_macs() // 2)
    assert both[0] == pytest.approx(pt / pa - 1.0 + t.num_macs() / (t.num_macs() // 2) - 1.0)
    assert budget_excess([t], vocab, None, None)[0] == 0.0


def test_random_search_keeps_the_best_architecture_it_scored(tmp_path: Path, data) -> None:  # noqa: F811
    module = make(sampler="uniform", num_reward_archs=4)  # GeneratorConfig.proposer = "uniform"
    trainer(tmp_path, epochs=2).fit(module, datamodule=data)
    assert module.archs_scored == 4 * 2 * 8  # 8 batches of 256 rows a epoch, 4 architectures each
    score, best = module.best_scored
    assert module.validated_architecture == best  # validation scores the best scored architecture, not a greedy one
    rows = module._reward_set
    with torch.no_grad():
        from autoias_pl.auc import batched_auc
        again = batched_auc(module.supernet(rows.features, best)[None], rows.labels)
    assert module.best_architecture is not None and score <= 1.0 and 0.0 < float(again[0]) <= 1.0
    assert sum(p.abs().sum() for p in module.generator.bias.values()) == 0  # the generator never moved


def test_a_params_budget_shrinks_the_objective_of_a_large_architecture() -> None:
    module = make(max_params=500)
    t = Architecture.teacher(module.space)
    got = module.objective([t], torch.tensor([0.7], dtype=torch.float64))
    assert float(got[0]) == pytest.approx(0.7 - (t.num_params(module.vocab_sizes) / 500 - 1.0))


def test_uniform_teacher_draws_functions_per_batch_and_keeps_the_rest_of_the_teacher() -> None:
    module = make(teacher_functions="uniform")
    a, b = module.teacher_of(0), module.teacher_of(1)
    assert a == module.teacher_of(0) and a != b  # a function of (seed, batch), not of the call
    c = COMPONENTS.index("func")
    for arch in (a, b):
        assert arch.choices[:c] + arch.choices[c + 1:] == module.teacher.choices[:c] + module.teacher.choices[c + 1:]
    assert len(set(a.indices("func"))) > 1
    paper = make()
    assert paper.teacher_of(3) is paper.teacher  # the paper's: concat everywhere


def test_refine_pairs_climbs_to_the_best_option_of_each_pair() -> None:
    """With an objective that counts pairs at their target option, one sweep reaches the target exactly."""
    from autoias_pl.search.refine import option_of, refine_pairs

    g = torch.Generator().manual_seed(3)
    target = torch.randint(1 + len(SPACE.functions), (SPACE.num_pairs,), generator=g).tolist()

    def score(archs: list[Architecture]) -> torch.Tensor:
        return torch.tensor([sum(option_of(a, q) == t for q, t in enumerate(target)) / len(target)
                             for a in archs], dtype=torch.float64)

    start = Architecture.uniform_random(SPACE, g)
    got = refine_pairs(start, score, sweeps=1)
    assert [option_of(got, q) for q in range(SPACE.num_pairs)] == target
    assert got.provenance["refined_to"] == 1.0 and got.provenance["changes"] > 0
    untouched = ("emb", "proj", "insert", "hidden")
    assert all(got.indices(c) == start.indices(c) for c in untouched)
    assert got.selected[: SPACE.num_fields] == start.selected[: SPACE.num_fields]
    # nothing to gain: nothing changes
    assert refine_pairs(got, score).choices == got.choices


def test_search_validates_the_refined_architecture(tmp_path: Path, data) -> None:  # noqa: F811
    module = make(refine_sweeps=1, pair_decision="joint", teacher_functions="uniform")
    trainer(tmp_path, epochs=1).fit(module, datamodule=data)
    prov = module.validated_architecture.provenance
    assert prov["refined_to"] >= prov["refined_from"]
    assert module.best_architecture.choices == module.validated_architecture.choices
    with pytest.raises(ValueError, match=r"RewardConfig\.refine_sweeps .*reward rows"):
        make(refine_sweeps=1, reward_rows=0)


def test_prune_vectors_drops_exactly_what_is_worth_less_than_the_tolerance() -> None:
    """Objective = sum of the values of the selected vectors (a few worth 0.01, some 1e-5, the rest 0, one
    harmful): pruning at tolerance 1e-3 keeps the valuable ones only, and its total loss stays within it."""
    from autoias_pl.search.refine import prune_vectors

    v = SPACE.num_vectors
    value = torch.zeros(v, dtype=torch.float64)
    value[[0, 3, 7, 11]] = 0.01  # two fields, two pairs that matter
    value[[1, 5, 9]] = 1e-5  # nearly worthless
    value[12] = -0.002  # harmful: removal gains

    def score(archs: list[Architecture]) -> torch.Tensor:
        return torch.stack([(torch.tensor(a.selected, dtype=torch.float64) * value).sum() for a in archs])

    everything = Architecture.teacher(SPACE)  # every vector selected
    got = prune_vectors(everything, score, tolerance=1e-3)
    assert [i for i, s in enumerate(got.selected) if s] == [0, 3, 7, 11]
    prov = got.provenance
    assert prov["pruned"] == v - 4 and prov["pruned_to"] >= prov["pruned_from"] - 1e-3
    assert all(got.indices(c) == everything.indices(c) for c in COMPONENTS if c != "select")
    # a tolerance below the worthless vectors' value keeps them (and tolerance 0 prunes nothing)
    kept = prune_vectors(everything, score, tolerance=1e-6)
    assert [i for i, s in enumerate(kept.selected) if s] == [0, 1, 3, 5, 7, 9, 11]
    assert prune_vectors(everything, score, tolerance=0.0).choices == everything.choices
    # a left-out field that gains is added first (and a harmful or worthless one is not)
    c_sel = COMPONENTS.index("select")
    choices = [list(c) for c in everything.choices]
    for f in (3, 1, 4):  # worth 0.01, 1e-5, 0
        choices[c_sel][f] = 0
    without = Architecture(SPACE, tuple(tuple(c) for c in choices))
    got = prune_vectors(without, score, tolerance=1e-3)
    assert [i for i, s in enumerate(got.selected) if s] == [0, 3, 7, 11]
    assert got.provenance["added_fields"] == 2  # fields 3 and 1 gain on their own; 1 is then pruned
    assert got.provenance["pruned_to"] > got.provenance["pruned_from"]


def test_search_validates_the_pruned_architecture(tmp_path: Path, data) -> None:  # noqa: F811
    module = make(prune_tolerance=1e-3, pair_decision="joint", teacher_functions="uniform")
    trainer(tmp_path, epochs=1).fit(module, datamodule=data)
    prov = module.validated_architecture.provenance
    assert prov["pruned_to"] >= prov["pruned_from"] - 1e-3
    assert module.best_architecture.choices == module.validated_architecture.choices
    with pytest.raises(ValueError, match=r"RewardConfig\.prune_tolerance .*reward rows"):
        make(prune_tolerance=1e-3, reward_rows=0)


def test_uniform_students_stay_uniform_after_warm_up() -> None:
    """After warm-up, the first N - u students are the generator's draws and the last u are uniform draws
    (the same ones a uniform sampler would make from the same seed); u out of range is refused."""
    module = make(num_students=5, uniform_students=2, warmup_epochs=0, pair_decision="joint")
    with torch.no_grad():  # a peaked generator: its draws are far from uniform ones
        for p in module.generator.parameters():
            p.mul_(0).add_(3.0)
    students = module.sample_students(7)
    assert len(students) == 5
    from autoias_pl.search.reward import phase_generator
    rng = phase_generator(module.seed, 7, "students")
    expected = [Architecture.uniform_random(module.space, rng) for _ in range(2)]
    assert [a.choices for a in students[3:]] == [a.choices for a in expected]
    generated = module.generator.sample(3, rng).architectures
    assert [a.choices for a in students[:3]] == [a.choices for a in generated]
    with pytest.raises(ValueError, match="uniform_students"):
        make(num_students=3, uniform_students=4)


def test_in_warmup_until_the_first_batch_after_it() -> None:
    """The CLI's early stopping and best checkpoint skip validations while `in_warmup` (autoias_pl/cli_callbacks.py):
    a validation right at the end of the warm-up comes before any generator step."""
    module = make()
    module.warmup_batches = 4  # what train start sets from schedule.warmup_epochs
    for count, warm in ((0, True), (4, True), (5, False)):
        module.batch_count.fill_(count)
        assert module.in_warmup is warm
    assert make().in_warmup is False


def test_warmup_validates_the_teacher_and_keeps_no_candidate(tmp_path: Path, data) -> None:  # noqa: F811
    """warmup_epochs 1.5 of 2: the first epoch's validation scores the teacher, logged as warmup/* only (no
    val/auc, no best architecture); the second's scores the generator's candidate."""
    seen: list[tuple[bool, int, set[str]]] = []

    class Record(Callback):
        def on_validation_end(self, trainer: Trainer, module: Any) -> None:
            arch = module.validated_architecture
            seen.append((module.in_warmup, sum(arch.selected), set(trainer.callback_metrics)))

    module = make(warmup_epochs=1.5)
    trainer(tmp_path, epochs=2, callbacks=[Record()]).fit(module, datamodule=data)
    assert module.warmup_batches == 12  # 1.5 epochs of 8 batches
    (warm, n_warm, keys_warm), (after, _, keys_after) = seen
    assert warm and not after and n_warm == module.space.num_vectors  # the teacher selects every vector
    assert {"warmup/teacher_auc", "warmup/teacher_params"} <= keys_warm and "val/auc" not in keys_warm
    assert {"val/auc", "val/score"} <= keys_after
    assert module.best_architecture.provenance["epoch"] == 1
