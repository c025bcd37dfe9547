"""The search: the LightningModule (`module`), the architecture generator, the reward logic and the views.

`autoias_pl.search.AutoIASSearch` (the class path the configs name) is resolved on first use, so importing
the Lightning-free parts (`search.generator`, `search.reward`) does not import Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BEST_ARCH_FILE", "AutoIASSearch", "NonFiniteLossError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from autoias_pl.search import module

        return getattr(module, name)
    raise AttributeError(f"module 'autoias_pl.search' has no attribute {name!r}")
