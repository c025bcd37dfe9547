"""Every shipped config parses (--print_config), and the runnable ones run one batch on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoias_pl.cli import run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def stack(config: str) -> list[str]:
    """The configs that `config` composes with: data + a model preset + trainer, in command-line order."""
    if config.startswith("data/"):
        base = [config, "retrain.yaml"]
    elif config.startswith("ablation/"):
        base = ["data/synthetic.yaml", "search/cpu.yaml", config]  # the CPU recipe: small supernets
    elif config.startswith("trainer/"):
        base = ["data/synthetic.yaml", "retrain.yaml", config]
    else:
        base = ["data/synthetic.yaml", config]
    return base if config.startswith("trainer/") else [*base, "trainer/cpu.yaml"]


def args_for(configs: list[str]) -> list[str]:
    return [a for c in configs for a in ("-c", str(CONFIGS / c))]


def test_the_config_tree_is_what_the_readme_lists() -> None:
    assert {"data/synthetic.yaml", "data/criteo.yaml", "data/avazu.yaml", "search/paper.yaml", "search/robust.yaml", "search/cpu.yaml",
            "ablation/no_kd.yaml", "ablation/students_1.yaml", "ablation/random_search.yaml",
            "ablation/reward_archs_1.yaml", "retrain.yaml", "trainer/cpu.yaml", "trainer/gpu.yaml",
            "trainer/ddp.yaml", "trainer/slurm.yaml"} <= set(ALL)


@pytest.mark.parametrize("config", ALL)
def test_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(["fit", *args_for(stack(config)), "--print_config"])
    assert exit_.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("autoias_pl.")
    own = yaml.safe_load((CONFIGS / config).read_text())
    for path, value in leaves(own.get("model", {}).get("init_args", {})):
        got = resolved["model"]["init_args"]
        for key in path:
            got = got[key]
        assert got == value, ".".join(path)


def leaves(tree: dict, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(key path, value) of every value of a config's nested dicts (the recipe's configs), but not inside a
    `class_path` entry (the resolved config adds the class's defaults there)."""
    out: list[tuple[tuple[str, ...], object]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += [] if "class_path" in value else leaves(value, (*path, key))
        else:
            out.append(((*path, key), value))
    return out


def test_paper_preset_is_the_paper() -> None:
    """Table 3 and section 4.2.4: the values a reader checks first."""
    m = yaml.safe_load((CONFIGS / "search/paper.yaml").read_text())["model"]["init_args"]
    space = m["space"]
    assert space["emb_dims"] == space["proj_dims"] == [4, 8, 16, 32, 64, 128]
    assert space["functions"] == ["product", "concat", "plus", "max"]
    assert (space["num_layers"], space["hidden_units"], space["output_insertion"]) == (5, [64, 128, 256], False)
    assert (m["distill"]["num_students"], m["distill"]["beta"], m["reward"]["num_archs"]) == (9, 0.5, 4)
    for opt in ("supernet_optimizer", "generator_optimizer"):
        assert m[opt] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}


RUNNABLE = [c for c in ALL if c.startswith(("search/", "ablation/")) or c in ("retrain.yaml", "trainer/cpu.yaml")]


@pytest.mark.parametrize("config", RUNNABLE)
def test_config_runs_one_batch(config: str, synth_dir: Path, synth_factory, tmp_path: Path) -> None:
    """An ablation overlay (one argument over search/paper.yaml) runs on 3 fields: the paper's widths over
    3 pairs, not a ~31M-weight supernet over 45 (search/paper.yaml's own run has the 10 fields)."""
    data = synth_factory(rows=4000, fields=3, planted_pairs=1, seed=2) if config.startswith("ablation/") else synth_dir
    cli = run(["fit", *args_for(stack(config)), f"--data.data_dir={data}", "--data.batch_size=256",
               "--data.eval_batch_size=2048", "--trainer.fast_dev_run=1",
               f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert cli.trainer.state.finished
    # the one validation of fast_dev_run: a search still in its warm-up scores the teacher (warmup/*), else val/*
    warm = getattr(cli.model, "warmup_batches", 0) > 0
    metrics = set(cli.trainer.callback_metrics)
    assert ("warmup/teacher_auc" in metrics) is warm and ("val/auc" in metrics) is not warm


def test_readme_and_usage_name_only_existing_configs_and_arguments() -> None:
    """The docs a newcomer copies from stay in step with the code."""
    import inspect
    import re

    from autoias_pl.retrain import AutoIASRetrain
    from autoias_pl.search import AutoIASSearch

    root = CONFIGS.parent
    text = (root / "README.md").read_text() + (root / "docs" / "usage.md").read_text()
    for path in set(re.findall(r"configs/[\w/]+\.yaml", text)):
        assert (root / path).is_file(), path
    from dataclasses import fields

    from autoias_pl.search.config import CONFIGS as SEARCH_CONFIGS

    known = set(inspect.signature(AutoIASSearch).parameters) | set(inspect.signature(AutoIASRetrain).parameters)
    names = set(re.findall(r"--model\.init_args\.([\w.]+\w)", text))
    assert any("." in n for n in names)  # the search's nested keys are checked too
    for name in names:
        head, _, rest = name.partition(".")
        assert head in known, name
        if head in SEARCH_CONFIGS:  # a field of that config
            assert rest.split(".")[0] in {f.name for f in fields(SEARCH_CONFIGS[head])}, name
