"""The schema that travels with a prepared dataset: fields, vocabulary sizes, rows per split, provenance.

`DIR/schema.json` is written by `autoias-data prepare` and `autoias-data synth` and read by everything
downstream (DataModule, search space, retraining). Ids of every field lie in [0, vocab_size); id 0 is the
field's out-of-vocabulary id (rare or unseen values).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoias_pl.errors import AutoIASError
from autoias_pl.io import atomic_write_text, read_json

SCHEMA_VERSION = 1
SCHEMA_FILE = "schema.json"
SPLITS = ("train", "val", "test")
LABEL = "label"
OOV_ID = 0


class SchemaError(AutoIASError, ValueError):
    """A schema file is missing, malformed, or does not match what a later step expects."""


@dataclass(frozen=True)
class FieldSpec:
    """One input field: its column name, number of ids (OOV included) and kind."""

    name: str
    vocab_size: int
    kind: str = "categorical"  # "categorical" | "numeric" (bucketed) | "derived"


@dataclass
class Schema:
    """What a prepared dataset holds. `extra` carries format-specific facts (e.g. synth's planted pairs)."""

    format: str
    fields: list[FieldSpec]
    rows: dict[str, int]
    min_count: int = 1
    seed: int = 0
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    bad_rows_skipped: int = 0
    vocab_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.fields]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def hash(self) -> str:
        """Content hash of what a model depends on: format, field names and vocabulary sizes."""
        key = {"format": self.format, "fields": [[f.name, f.vocab_size] for f in self.fields]}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hash"] = self.hash
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Schema:
        try:
            fields = [FieldSpec(**f) for f in d["fields"]]
            kwargs = {k: d[k] for k in ("format", "rows") if k in d}
            for k in ("min_count", "seed", "split", "bad_rows_skipped", "vocab_file", "extra", "schema_version"):
                if k in d:
                    kwargs[k] = d[k]
            schema = cls(fields=fields, **kwargs)
        except (KeyError, TypeError) as e:
            raise SchemaError(f"{source}: malformed schema ({e!r})") from e
        if schema.schema_version > SCHEMA_VERSION:
            raise SchemaError(f"{source}: schema_version {schema.schema_version} is newer than {SCHEMA_VERSION}")
        if "hash" in d and d["hash"] != schema.hash:
            raise SchemaError(f"{source}: stored hash {d['hash']} does not match its fields ({schema.hash})")
        return schema

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SCHEMA_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Schema:
        path = Path(directory) / SCHEMA_FILE
        if not path.is_file():
            raise SchemaError(f"{path}: no schema.json (is {directory} a prepared dataset?)")
        return cls.from_dict(read_json(path, SchemaError), source=str(path))


def shard_path(directory: str | Path, split: str, index: int) -> Path:
    return Path(directory) / split / f"part-{index:05d}.parquet"
