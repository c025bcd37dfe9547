"""The architecture generator: sampling, teacher-forced log-probs, explicit dependencies, REINFORCE."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from autoias_pl.search.generator import ArchitectureGenerator
from autoias_pl.space import COMPONENTS, Architecture, ArchitectureError, SearchSpace

PERTURB = 0.2  # weight noise that makes every conditional non-uniform without saturating it


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def space() -> SearchSpace:
    # 5 fields, 10 pairs, 15 vectors, 3 layers (+ out)
    return SearchSpace(field_names=("A", "B", "C", "D", "E"), emb_dims=(4, 8, 16), proj_dims=(4, 8), num_layers=3)


def make_gen(space: SearchSpace, perturb: float = 0.0, seed: int = 0, **kw: object) -> ArchitectureGenerator:
    """A generator; with `perturb`, every parameter gets Gaussian noise so nothing is uniform or zero."""
    torch.manual_seed(seed)
    gen = ArchitectureGenerator(space, embed_dim=8, hidden_dim=32, **kw)
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in gen.named_parameters():
                scale = perturb / gen.decision_logit_scale if name.startswith("bias.") else perturb
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return gen


def with_choice(arch: Architecture, component: str, decision: int, value: int) -> Architecture:
    idx = {c: list(arch.indices(c)) for c in COMPONENTS}
    idx[component][decision] = value
    return Architecture.from_indices(arch.space, idx)


def reference_log_prob(gen: ArchitectureGenerator, arch: Architecture) -> float:
    """Slow reference: one architecture at a time, a Python loop over components and decisions."""
    total = 0.0
    for c in COMPONENTS:
        p = gen.probs(c, [arch])[0]  # (D_c, C)
        for d, a in enumerate(arch.indices(c)):
            total += float(torch.log(p[d, a].detach()))
    return total


def reference_input(gen: ArchitectureGenerator, arch: Architecture, comp: str, d: int) -> torch.Tensor:
    """Slow reference: the MLP input of decision d of `comp`, built one state at a time (the module table)."""
    sp, n = arch.space, arch.space.num_fields
    state = {c: [gen.choice[c].weight[i] for i in arch.indices(c)] for c in COMPONENTS[:-1]}
    ends = [(v, v) for v in range(n)] + list(sp.pairs)  # per vector
    width = state["emb"] + state["proj"]  # per vector
    func = [gen.field_token] * n + state["func"]  # per vector
    if comp in ("proj", "func"):
        i, j = sp.pairs[d]
        local = ([state["proj"][d]] if comp == "func" else []) + [state["emb"][i], state["emb"][j]]
    elif comp in ("select", "insert"):
        i, j = ends[d]
        local = ([state["select"][d]] if comp == "insert" else []) + [width[d], func[d], state["emb"][i], state["emb"][j]]
    elif comp == "hidden":
        sel, ins = arch.indices("select"), arch.indices("insert")
        at_d = [width[v] for v in range(sp.num_vectors) if sel[v] == 1 and ins[v] == d]
        local = [sum(at_d, torch.zeros(gen.embed_dim)) / sp.num_vectors]
    else:
        local = []
    pooled = [torch.stack(state[c]).mean(0) for c in COMPONENTS[: COMPONENTS.index(comp)]]
    return torch.cat([gen.slot[comp][d], *local, *pooled])


def test_probs_match_a_decision_by_decision_reference(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    arch = gen.sample(1, torch.Generator().manual_seed(5)).architectures[0]
    with torch.no_grad():
        for comp in COMPONENTS:
            ref = torch.stack([
                gen.policy[comp](reference_input(gen, arch, comp, d)) + gen.decision_logit_scale * gen.bias[comp][d]
                for d in range(space.num_decisions(comp))
            ]).softmax(-1)  # (D_c, C)
            torch.testing.assert_close(gen.probs(comp, [arch])[0], ref, msg=comp)


def test_sample_shapes_ranges_and_architectures(space: SearchSpace) -> None:
    s = make_gen(space, perturb=PERTURB).sample(7, torch.Generator().manual_seed(3))
    assert len(s.architectures) == 7 and s.log_prob.shape == (7,)
    for c in COMPONENTS:
        D, C = space.num_decisions(c), len(space.candidates(c))
        assert s.indices[c].shape == (7, D) and s.entropy[c].shape == (7,)
        assert int(s.indices[c].min()) >= 0 and int(s.indices[c].max()) < C
        assert [a.indices(c) for a in s.architectures] == [tuple(r) for r in s.indices[c].tolist()]
        assert bool((s.entropy[c] > 0).all()) and bool((s.entropy[c] <= torch.log(torch.tensor(C)) + 1e-6).all())


def test_log_prob_of_sample_matches_teacher_forcing_and_slow_reference(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    s = gen.sample(6, torch.Generator().manual_seed(0))
    forced = gen.log_prob(s.architectures)
    ref = torch.tensor([reference_log_prob(gen, a) for a in s.architectures])
    torch.testing.assert_close(s.log_prob.detach(), forced.detach())
    torch.testing.assert_close(forced.detach(), ref, rtol=1e-5, atol=1e-4)
    assert len(set(ref.tolist())) > 1  # the architectures (and their probabilities) differ


def test_entropy_matches_probs(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    archs = gen.sample(3, torch.Generator().manual_seed(0)).architectures
    ent = gen.entropy(archs)
    for c in COMPONENTS:
        p = gen.probs(c, archs)  # (n, D_c, C)
        torch.testing.assert_close(ent[c], -(p * p.log()).sum(-1).mean(-1))
        torch.testing.assert_close(gen.entropy()[c], -(gen.probs(c) * gen.probs(c).log()).sum(-1).mean())


def test_log_prob_is_differentiable_in_every_parameter(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    archs = gen.sample(4, torch.Generator().manual_seed(0)).architectures
    gen.log_prob(archs).sum().backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_decisions_see_the_emb_of_their_own_fields(space: SearchSpace) -> None:
    # swapping the emb choices of fields i and k keeps every pooled state: only pairs touching i or k move
    gen, i, k = make_gen(space, perturb=PERTURB), 1, 3
    a = with_choice(with_choice(gen.greedy(), "emb", i, 0), "emb", k, 2)
    b = with_choice(with_choice(a, "emb", i, 2), "emb", k, 0)
    ends = [(v,) for v in range(space.num_fields)] + list(space.pairs)  # fields, then pairs
    for comp in ("proj", "func", "select", "insert"):
        vectors = ends[space.num_fields :] if comp in ("proj", "func") else ends
        touches = torch.tensor([len({i, k} & set(e)) for e in vectors])  # (D_c,)
        p = gen.probs(comp, [a, b]).detach()  # (2, D_c, C)
        change = (p[0] - p[1]).abs().sum(-1)  # (D_c,)
        assert float(change[touches == 0].max()) < 1e-6, comp
        assert float(change[touches == 1].min()) > 1e-3, comp


def test_pooled_state_reaches_decisions_about_other_fields(space: SearchSpace) -> None:
    gen, i = make_gen(space, perturb=PERTURB), 0
    a = gen.greedy()
    b = with_choice(a, "emb", i, (a.indices("emb")[i] + 1) % len(space.emb_dims))
    apart = torch.tensor([i not in pair for pair in space.pairs])  # (P,)
    for comp in ("proj", "func"):
        p = gen.probs(comp, [a, b]).detach()  # (2, P, C)
        assert float((p[0] - p[1]).abs().sum(-1)[apart].min()) > 1e-5, comp


def test_pair_select_depends_on_its_func_and_proj(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    a, n, pair = gen.greedy(), space.num_fields, 4
    for comp, ncand in (("func", len(space.functions)), ("proj", len(space.proj_dims))):
        b = with_choice(a, comp, pair, (a.indices(comp)[pair] + 1) % ncand)
        p = gen.probs("select", [a, b]).detach()  # (2, V, 2)
        change = (p[0] - p[1]).abs().sum(-1)  # (V,)
        assert float(change[n + pair]) > 1e-3 and float(change[n + pair]) == float(change.max()), comp


def test_insert_depends_on_select_and_hidden_on_the_inserted_vectors(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    a, v = gen.greedy(), 6
    b = with_choice(a, "select", v, 1 - a.indices("select")[v])
    p = gen.probs("insert", [a, b]).detach()  # (2, V, L + 1)
    change = (p[0] - p[1]).abs().sum(-1)  # (V,)
    assert float(change[v]) > 1e-3 and float(change[v]) == float(change.max())
    ph = gen.probs("hidden", [a, b]).detach()  # (2, L, H)
    assert float((ph[0] - ph[1]).abs().max()) > 1e-4


def test_hidden_sees_what_is_inserted_at_each_layer(space: SearchSpace) -> None:
    # swap the layers of two selected vectors of different widths: every pooled state stays the same
    gen, v, w = make_gen(space, perturb=PERTURB), 0, space.num_fields + 2
    a = gen.greedy()
    for u in (v, w):
        a = with_choice(a, "select", u, 1)
    a = with_choice(with_choice(with_choice(a, "insert", v, 0), "insert", w, 1), "emb", v, 2)
    b = with_choice(with_choice(a, "insert", v, 1), "insert", w, 0)
    p = gen.probs("hidden", [a, b]).detach()  # (2, L, H)
    change = (p[0] - p[1]).abs().sum(-1)  # (L,)
    assert float(change[:2].min()) > 1e-4 and float(change[2:].max()) < 1e-6
    # unselected vectors are not inserted anywhere
    a, b = (with_choice(with_choice(x, "select", v, 0), "select", w, 0) for x in (a, b))
    p = gen.probs("hidden", [a, b]).detach()  # (2, L, H)
    assert float((p[0] - p[1]).abs().max()) < 1e-6


def test_sampling_is_reproducible_per_seed(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    s1, s2 = (gen.sample(5, torch.Generator().manual_seed(11)) for _ in range(2))
    s3 = gen.sample(5, torch.Generator().manual_seed(12))
    assert s1.architectures == s2.architectures
    assert s1.architectures != s3.architectures


def test_greedy_is_the_argmax_path(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    best = gen.greedy()
    for c in COMPONENTS:
        p = gen.probs(c, [best])[0]  # (D_c, C)
        assert tuple(p.argmax(-1).tolist()) == best.indices(c), c
        torch.testing.assert_close(gen.probs(c), p)


def test_uniform_at_init_and_sampling_frequencies_match_probs(space: SearchSpace) -> None:
    gen = make_gen(space)
    for c in COMPONENTS:
        p = gen.probs(c)
        torch.testing.assert_close(p, torch.full_like(p, 1.0 / p.shape[-1]))
    s = gen.sample(2000, torch.Generator().manual_seed(0))
    for c in COMPONENTS:
        C = len(space.candidates(c))
        freq = torch.nn.functional.one_hot(s.indices[c], C).float().mean((0, 1))  # (C,)
        torch.testing.assert_close(freq, torch.full((C,), 1.0 / C), atol=0.02, rtol=0)
    # not uniform: the first component (no earlier choices) must follow its probs per decision
    gen = make_gen(space, perturb=1.0)
    s = gen.sample(4000, torch.Generator().manual_seed(1))
    freq = torch.nn.functional.one_hot(s.indices["emb"], len(space.emb_dims)).float().mean(0)  # (F, C)
    assert float((gen.probs("emb").detach() - 1 / 3).abs().max()) > 0.1
    torch.testing.assert_close(freq, gen.probs("emb").detach(), atol=0.035, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_with_a_cpu_generator_matches_cpu(space: SearchSpace) -> None:
    gen = make_gen(space, perturb=PERTURB)
    cpu = gen.sample(5, torch.Generator().manual_seed(4))
    cuda = gen.to("cuda").sample(5, torch.Generator().manual_seed(4))
    assert cuda.architectures == cpu.architectures and cuda.log_prob.device.type == "cuda"
    torch.testing.assert_close(cuda.log_prob.cpu(), cpu.log_prob, rtol=1e-4, atol=1e-3)


def test_init_select_prob(space: SearchSpace) -> None:
    gen = make_gen(space, init_select_prob=0.1)
    torch.testing.assert_close(gen.probs("select")[:, 1], torch.full((space.num_vectors,), 0.1))
    with pytest.raises(ValueError, match="init_select_prob"):
        make_gen(space, init_select_prob=1.0)


def test_foreign_architecture_is_refused(space: SearchSpace) -> None:
    other = SearchSpace(field_names=("A", "B", "C", "D", "E"))
    with pytest.raises(ArchitectureError, match="space"):
        make_gen(space).log_prob([Architecture.teacher(other)])


def reinforce(gen: ArchitectureGenerator, reward: Callable[[Architecture], float], steps: int = 50) -> None:
    """Plain REINFORCE with a batch-mean baseline (n = 8, Adam lr 1e-2)."""
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    for _ in range(steps):
        s = gen.sample(8, rng)
        r = torch.tensor([reward(a) for a in s.architectures])
        loss = -(s.log_prob * (r - r.mean())).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_reinforce_raises_the_rewarded_function(space: SearchSpace) -> None:
    gen = make_gen(space)
    imax = space.functions.index("max")
    before = float(gen.probs("func")[:, imax].detach().mean())
    reinforce(gen, lambda a: sum(f == "max" for f in a.funcs) / space.num_pairs)
    after = float(gen.probs("func")[:, imax].detach().mean())
    assert before == pytest.approx(0.25) and after > 0.6, after


def test_reinforce_ranks_planted_pairs_first(space: SearchSpace) -> None:
    gen = make_gen(space)
    n, planted = space.num_fields, [1, 4, 8]
    others = [p for p in range(space.num_pairs) if p not in planted]

    def reward(a: Architecture) -> float:  # balanced: selecting everything (or nothing) scores 0
        sel = a.selected[n:]
        return sum(sel[p] for p in planted) / len(planted) - sum(sel[p] for p in others) / len(others)

    reinforce(gen, reward)
    p1 = gen.probs("select")[n:, 1].detach()  # (P,)
    assert float(p1[planted].min()) > float(p1[others].max()), p1


def test_criteo_scale_has_one_decision_per_field_pair_and_vector() -> None:
    """39 fields (Criteo): 741 pairs, 780 vectors; a sample carries exactly the space's decisions."""
    space = SearchSpace(field_names=tuple(f"F{i}" for i in range(39)))
    s = ArchitectureGenerator(space).sample(4, torch.Generator().manual_seed(0))
    counts = {"emb": 39, "proj": 741, "func": 741, "select": 780, "insert": 780, "hidden": space.num_layers}
    assert {c: tuple(s.indices[c].shape) for c in COMPONENTS} == {c: (4, d) for c, d in counts.items()}
    assert space.total_decisions == 3081 + space.num_layers and len(s.architectures) == 4
