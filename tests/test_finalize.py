"""Top-k final selection (autoias_pl/search/finalize.py) and the generator's top_k, on tiny synthetic data.

The search checkpoint is written by hand (the hyperparameters of the space and the generator's weights, the
two things finalize reads), so these tests need no search run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import autoias_pl.search.finalize as finalize_module
from autoias_pl.data.schema import Schema
from autoias_pl.search.finalize import FINAL_ARCH_FILE, candidates, finalize, generator_from_checkpoint
from autoias_pl.search.generator import ArchitectureGenerator
from autoias_pl.space import Architecture, SearchSpace

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def small_space(schema: Schema) -> SearchSpace:
    return SearchSpace(tuple(schema.field_names), (4, 8), (4, 8), ("product", "concat"), 1, (8, 16), True,
                       schema.hash)


def peaked(space: SearchSpace, seed: int = 0) -> ArchitectureGenerator:
    """A joint-pair generator with random, fairly confident per-decision logits (a trained one's shape)."""
    torch.manual_seed(seed)
    gen = ArchitectureGenerator(space, pair_decision="joint")
    with torch.no_grad():
        for b in gen.bias.values():
            b.normal_(0.0, 0.15)  # x decision_logit_scale 10: logits of std 1.5
    return gen


def write_run(tmp: Path, schema: Schema, gen: ArchitectureGenerator, best: Architecture | None) -> Path:
    """A search run folder: checkpoints/last.ckpt (space hyperparameters + generator weights) and the pick."""
    s = gen.space
    space = {"emb_dims": list(s.emb_dims), "proj_dims": list(s.proj_dims), "functions": list(s.functions),
             "num_layers": s.num_layers, "hidden_units": list(s.hidden_units), "output_insertion": s.output_insertion}
    hparams = {"field_names": list(s.field_names), "vocab_sizes": list(schema.vocab_sizes), "schema_hash": s.schema_hash,
               "space": space, "generator": {"pair_decision": "joint"}}  # AutoIASSearch's nested recipe layout
    state = {f"generator.{k}": v for k, v in gen.state_dict().items()}
    (tmp / "checkpoints").mkdir(parents=True)
    torch.save({"hyper_parameters": hparams, "state_dict": state}, tmp / "checkpoints" / "last.ckpt")
    if best is not None:
        best.save(tmp / "best_architecture.json", schema.vocab_sizes)
    return tmp


def test_top_k_is_distinct_and_ordered_by_log_prob(synth_schema: Schema) -> None:
    gen = peaked(small_space(synth_schema))
    top = gen.top_k(6, torch.Generator().manual_seed(1), samples=200)
    assert len(top) == 6
    assert len({a.layout for a in top}) == 6  # six different standalone models
    logp = [a.provenance["log_prob"] for a in top]
    assert logp == sorted(logp, reverse=True)
    assert torch.allclose(gen.log_prob(top).detach(), torch.tensor(logp), atol=1e-4)
    # nothing among the draws is more likely than the k-th kept one, unless it is one of the kept models
    draws = gen.sample(200, torch.Generator().manual_seed(1)).architectures + [gen.greedy()]
    kept = {a.layout for a in top}
    others = [a for a in draws if a.layout not in kept]
    assert float(gen.log_prob(others).detach().max()) <= logp[-1] + 1e-4


def test_candidates_put_the_search_pick_first_and_drop_duplicates(synth_schema: Schema) -> None:
    gen = peaked(small_space(synth_schema))
    greedy = gen.greedy()
    out = candidates(gen, 4, greedy, seed=0, samples=100)  # the pick is the greedy model: no duplicate of it
    assert out[0].layout == greedy.layout and len(out) == 4 and len({a.layout for a in out}) == 4


def test_finalize_trains_k_for_the_budget_and_picks_the_best_val_auc(synth_schema: Schema, synth_dir: Path,
                                                                      tmp_path: Path) -> None:
    space = small_space(synth_schema)
    gen = peaked(space)
    # the search's pick: one field read out alone, a weak model that top-k selection should not keep
    n, p = space.num_fields, space.num_pairs
    weak = Architecture.from_indices(space, {"emb": [0] * n, "proj": [0] * p, "func": [0] * p,
                                             "select": [1] + [0] * (n - 1 + p), "insert": [1] * (n + p),
                                             "hidden": [0]})
    run = write_run(tmp_path / "run", synth_schema, gen, weak)
    assert generator_from_checkpoint(run / "checkpoints" / "last.ckpt").greedy() == gen.greedy()
    report = finalize(run, synth_dir, k=3, epochs=2, samples=64)
    cands = report["candidates"]
    assert len(cands) == 3 and report["budget_epochs"] == 6
    assert all(len(c["val_auc"]) == 2 for c in cands)  # exactly the stated epochs each
    assert cands[0]["source"] == "search" and [c["source"] for c in cands[1:]] == ["generator"] * 2
    aucs = [c["best_val_auc"] for c in cands]
    assert report["chosen"] == aucs.index(max(aucs))
    assert report["chosen"] != 0, aucs  # one field alone loses to the generator's models on planted pairs
    final = Architecture.load(run / FINAL_ARCH_FILE, schema_hash=synth_schema.hash)
    chosen = candidates(gen, 3, weak, seed=0, samples=64)[report["chosen"]]
    assert final.layout == chosen.layout
    assert final.provenance["finalize"]["val_auc"] == pytest.approx(max(aucs))
    assert json.loads((run / "final_architecture.report.json").read_text())["chosen"] == report["chosen"]


def test_widen_follows_every_candidate_by_it_at_the_widest_widths(synth_schema: Schema) -> None:
    space = small_space(synth_schema)
    gen = peaked(space)
    pick = gen.greedy()
    n, p = space.num_fields, space.num_pairs
    narrow = Architecture(space, ((0,) * n, (0,) * p) + pick.choices[2:-1] + ((0,),))  # widths 4, 8 units
    plain = candidates(gen, 3, narrow, seed=0, samples=50)
    out = candidates(gen, 3, narrow, seed=0, samples=50, widen=True)
    assert out[0] == narrow and out[1].hidden == (16,)
    assert set(out[1].emb_dims) == {8} and set(out[1].proj_dims) == {8}
    assert out[1].choices[2:-1] == narrow.choices[2:-1]  # functions, selection, insertion kept
    assert len({a.layout for a in out}) == len(out) <= 6
    structures = [a.choices[2:-1] for a in out]  # each of the 3 plain candidates is there, then its widest twin
    assert [a.layout for a in out if not a.provenance.get("widened")] == [a.layout for a in plain]
    for a in out:
        if a.provenance.get("widened"):
            assert a.choices[2:-1] in [b.choices[2:-1] for b in plain] and a.hidden == (16,)
    assert structures.count(narrow.choices[2:-1]) >= 2  # (the greedy model may share it at other widths)


def test_finalize_by_the_retraining_recipe_chooses_on_best_ckpt_val_auc(synth_schema: Schema, synth_dir: Path,
                                                                        tmp_path: Path) -> None:
    """--recipe: every candidate is retrained as `autoias fit -c configs/retrain.yaml` retrains (a subprocess),
    scored by its best.ckpt's val AUC; the choice, the report and the candidates' run folders agree."""
    space = small_space(synth_schema)
    gen = peaked(space)
    run = write_run(tmp_path / "run", synth_schema, gen, None)
    recipe = [CONFIGS / "retrain.yaml", CONFIGS / "trainer" / "cpu.yaml"]
    report = finalize(run, synth_dir, k=2, samples=64, recipe=recipe,
                      recipe_overrides=["--trainer.max_epochs=2", "--model.init_args.optimizer.init_args.lr=0.01"])
    cands = report["candidates"]
    assert len(cands) == 2 and report["recipe"] == [str(c) for c in recipe] and "epochs" not in report
    runs = run / "final_architecture.runs"
    for i, c in enumerate(cands):
        summary = json.loads((runs / f"candidate{i}" / "fit_summary.json").read_text())
        assert c["best_val_auc"] == summary["best_score"] and c["epochs"] == summary["epochs"] == 2
        trained = Architecture.load(runs / f"candidate{i}.json", schema_hash=synth_schema.hash)
        assert trained.layout == candidates(gen, 2, None, seed=0, samples=64)[i].layout
    aucs = [c["best_val_auc"] for c in cands]
    assert report["chosen"] == aucs.index(max(aucs)) and report["budget_epochs"] == 4
    final = Architecture.load(run / FINAL_ARCH_FILE, schema_hash=synth_schema.hash)
    assert final.layout == Architecture.load(runs / f"candidate{report['chosen']}.json").layout
    assert final.provenance["finalize"]["recipe"] == report["recipe"]
    with pytest.raises(ValueError, match="finetune"):
        finalize(run, synth_dir, k=1, recipe=recipe, finetune=True)


def test_recipe_subprocess_runs_at_this_process_thread_count(synth_schema: Schema, synth_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate's `autoias fit` subprocess gets this process's torch thread count (OMP_NUM_THREADS), whatever
    the environment says, so that finalize's and the demo's --threads reach it."""
    seen = []

    def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        seen.append(kw["env"]["OMP_NUM_THREADS"])
        return subprocess.CompletedProcess(cmd, 1, "", "stopped here")

    monkeypatch.setattr(finalize_module.subprocess, "run", run)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    arch = candidates(peaked(small_space(synth_schema)), 1, None, seed=0, samples=8)[0]
    for threads in (1, 2):
        torch.set_num_threads(threads)  # the module's one_thread fixture restores the count
        with pytest.raises(RuntimeError, match="stopped here"):
            finalize_module.train_by_recipe(arch, synth_dir, synth_schema.vocab_sizes, [CONFIGS / "retrain.yaml"], 0,
                                            None, tmp_path, f"c{threads}")
    assert seen == ["1", "2"]


def test_reads_the_generator_of_a_real_search_checkpoint(search_run: Path) -> None:
    """The layout `write_run` imitates is the one `autoias fit` writes: the generator of a real search's
    last.ckpt loads with its trained weights and its greedy decode is the search module's."""
    from autoias_pl.search import AutoIASSearch

    ckpt = search_run / "checkpoints" / "last.ckpt"
    gen = generator_from_checkpoint(ckpt)
    module = AutoIASSearch.load_from_checkpoint(ckpt, map_location="cpu")
    for (name, a), b in zip(gen.state_dict().items(), module.generator.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert gen.greedy().choices == module.generator.greedy().choices
