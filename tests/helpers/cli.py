"""`autoias` runs as a test makes them: the repository's configs, quiet, logging to a given folder."""

from __future__ import annotations

from pathlib import Path

from autoias_pl.cli import run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def autoias(subcommand: str, configs: list[str], *overrides: str, out: Path, version: str):
    """`autoias <subcommand> -c configs/<c>... --overrides`, logging to out/<version>."""
    args = [subcommand]
    for c in configs:
        args += ["-c", str(CONFIGS / c)]
    args += [f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=",
             f"--trainer.logger.init_args.version={version}", *QUIET, *overrides]
    return run(args)


RETRAIN = ["data/synthetic.yaml", "retrain.yaml", "trainer/cpu.yaml"]
SEARCH = ["data/synthetic.yaml", "search/cpu.yaml", "trainer/cpu.yaml"]


def retrain_overrides(data: Path, architecture: str, epochs: int = 3) -> list[str]:
    return [f"--data.data_dir={data}", "--data.batch_size=512", f"--model.init_args.architecture={architecture}",
            "--model.init_args.optimizer.init_args.lr=0.01", "--model.init_args.baseline_dim=8",
            "--model.init_args.baseline_hidden=32", "--model.init_args.baseline_layers=2",
            f"--trainer.max_epochs={epochs}"]
