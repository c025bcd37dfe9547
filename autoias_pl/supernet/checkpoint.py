"""Read the supernet out of a search checkpoint without Lightning (nor the search module, nor the data).

A search checkpoint (`autoias fit` with `autoias_pl.search.AutoIASSearch`) holds the search's init
arguments in `hyper_parameters` (`field_names`, `vocab_sizes`, `schema_hash`, and the recipe as dicts: the
space's candidates under `space`, `share_insert_blocks` and `function_blocks` under `supernet`) and the
supernet's weights in `state_dict` under `supernet.`; that is all `supernet_from_checkpoint` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from autoias_pl.space import ArchitectureError, SearchSpace
from autoias_pl.supernet.supernet import Supernet

PREFIX = "supernet."
SPACE_KEYS = ("emb_dims", "proj_dims", "functions", "num_layers", "hidden_units", "output_insertion")


def space_of(hparams: Mapping[str, Any], source: str = "<checkpoint>") -> SearchSpace:
    """The search space of a search checkpoint's `hyper_parameters` (ArchitectureError if one is missing)."""
    space = hparams.get("space")
    space = space if isinstance(space, Mapping) else {}
    missing = [k for k in ("field_names", "vocab_sizes", "schema_hash") if k not in hparams]
    missing += [f"space.{k}" for k in SPACE_KEYS if k not in space]
    if missing:
        raise ArchitectureError(f"{source}: not a search checkpoint (hyper_parameters lack {missing})")
    h = space
    return SearchSpace(tuple(hparams["field_names"]), tuple(h["emb_dims"]), tuple(h["proj_dims"]),
                       tuple(h["functions"]), int(h["num_layers"]), tuple(h["hidden_units"]),
                       bool(h["output_insertion"]), str(hparams["schema_hash"]))


def read_search_checkpoint(path: str | Path, prefix: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyper_parameters, the state_dict entries under `prefix` with it removed) of the search checkpoint at
    `path`; FileNotFoundError if there is none, ArchitectureError if it holds no `prefix`* weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such search checkpoint")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)}
    if not weights:
        raise ArchitectureError(f"{path}: not a search checkpoint (no {prefix}* weights in its state_dict)")
    return ckpt.get("hyper_parameters") or {}, weights


def supernet_from_checkpoint(path: str | Path) -> Supernet:
    """The trained supernet (on CPU, float32 parameters) of the search checkpoint at `path`."""
    hparams, weights = read_search_checkpoint(path, PREFIX)
    space = space_of(hparams, str(path))
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        options = hparams.get("supernet") or {}
        net = Supernet(space, [int(v) for v in hparams["vocab_sizes"]],
                       share_insert_blocks=bool(options.get("share_insert_blocks", False)),
                       function_blocks=bool(options.get("function_blocks", True)))
    net.load_state_dict(weights)
    return net
