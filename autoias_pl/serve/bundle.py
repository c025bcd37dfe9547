"""A serving bundle: one folder that holds everything needed to score raw rows, and nothing else.

```
DIR/bundle.json        what the bundle is: versions, schema hash, input field order and dtype, what the
                       output means, sha256 of every other file
DIR/model.pt2          the model as a portable program (`torch.export.save`): (B, n) int64 ids -> (B,)
                       float32 logits; load it with `torch.export.load(path).module()`, no model code needed
DIR/schema.json        the prepared dataset's schema (fields, vocabulary sizes, raw format)
DIR/vocab.parquet      its vocabularies (field, value, count, id): raw value -> id, as `prepare` wrote them
DIR/architecture.json  the architecture of the model (Architecture JSON, with its size)
```

`write_bundle` exports a `CTRModel` (or any module with that signature) beside a copy of a prepared
dataset's schema and vocabularies; it refuses a dataset whose schema hash differs from the model's.
`load_bundle` checks a bundle before anything is scored: every file's hash, the schema's hash against
bundle.json, the vocabularies against the schema. No Lightning, no training code: `score.py` reads it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from autoias_pl.data.readers import RawFormat
from autoias_pl.data.schema import OOV_ID, SCHEMA_FILE, Schema, SchemaError
from autoias_pl.io import atomic_output_dir, atomic_write_text, read_json

BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
PROGRAM_FILE = "model.pt2"
ARCH_FILE = "architecture.json"
PARITY_ATOL = 1e-6  # the exported program against the eager model at export time, on logits


class BundleError(ValueError):
    """A bundle (or the dataset it is made from) that cannot be trusted: the message names the file."""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle folder: its metadata (bundle.json), schema and raw format."""

    path: Path
    meta: dict[str, Any]
    schema: Schema

    @property
    def format(self) -> RawFormat:
        return RawFormat(**self.schema.extra["raw_format"])

    @property
    def program_path(self) -> Path:
        return self.path / self.meta["program"]["file"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_vocabularies(directory: Path, schema: Schema) -> None:
    """The vocabulary file agrees with the schema: per field ids 1..K with K + 1 == vocab_size (0 is OOV)."""
    if not schema.vocab_file or "raw_format" not in schema.extra:
        raise SchemaError(f"{directory}: not a dataset made by `prepare` (no vocabulary or raw format); "
                          "only prepared raw logs can be served")
    path = directory / schema.vocab_file
    if not path.is_file():
        raise SchemaError(f"{path}: no such vocabulary file (named by {directory / SCHEMA_FILE})")
    vocab = pq.read_table(path, columns=["field", "id"])
    stats = vocab.group_by("field").aggregate([("id", "count"), ("id", "min"), ("id", "max")]).to_pylist()
    found = {s["field"]: (s["id_count"], s["id_min"], s["id_max"]) for s in stats}
    unknown = sorted(set(found) - set(schema.field_names))
    if unknown:
        raise SchemaError(f"{path}: vocabularies of fields {unknown} that {SCHEMA_FILE} does not have")
    for spec in schema.fields:
        count, lo, hi = found.get(spec.name, (0, 1, 0))
        if count + 1 != spec.vocab_size or (count and (lo, hi) != (OOV_ID + 1, count)):
            raise SchemaError(
                f"{path}: field {spec.name!r} has {count} known values (ids {lo}..{hi}), but {SCHEMA_FILE} "
                f"says vocab_size {spec.vocab_size} (schema hash {schema.hash}): vocabularies and schema differ"
            )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "pyarrow": pa.__version__,
           "numpy": np.__version__}
    try:
        out["autoias_pl"] = metadata.version("autoias-pl")
    except metadata.PackageNotFoundError:
        out["autoias_pl"] = "unknown"
    return out


def export_program(model: nn.Module, vocab_sizes: list[int]) -> torch.export.ExportedProgram:
    """`torch.export` of `model` ((B, n) int64 -> (B,)) with a dynamic batch dimension, on the CPU."""
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(v, (8,), generator=gen) for v in vocab_sizes], 1)  # (8, n)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},))


def _check_parity(model: nn.Module, program_file: Path, vocab_sizes: list[int]) -> float:
    """Largest |logit difference| of the saved program against the eager model over batches of 1, 7, 300."""
    program = torch.export.load(program_file).module()
    gen, worst = torch.Generator().manual_seed(1), 0.0
    with torch.no_grad():
        for b in (1, 7, 300):
            x = torch.stack([torch.randint(v, (b,), generator=gen) for v in vocab_sizes], 1)  # (b, n)
            worst = max(worst, float((program(x) - model(x)).abs().max()))
    if worst > PARITY_ATOL:
        raise BundleError(f"{program_file}: the exported program differs from the model by {worst:.3g} (logits)")
    return worst


def write_bundle(output: str | Path, model: nn.Module, data_dir: str | Path, schema_hash: str,
                 architecture_json: dict[str, Any], *, source: dict[str, Any] | None = None,
                 overwrite: bool = False) -> Path:
    """Write the bundle of `model` (trained on data of `schema_hash`) with `data_dir`'s vocabularies.

    Refuses a dataset of another schema hash and an existing `output` without `overwrite`; atomic (a
    failure leaves nothing at `output`)."""
    data_dir, output = Path(data_dir), Path(output)
    schema = Schema.load(data_dir)
    if schema.hash != schema_hash:
        raise BundleError(f"{data_dir / SCHEMA_FILE}: data schema {schema.hash} differs from the model's "
                          f"{schema_hash}: export needs the dataset the model was trained on")
    check_vocabularies(data_dir, schema)
    vocab_sizes = schema.vocab_sizes
    if list(getattr(model, "vocab_sizes", vocab_sizes)) != vocab_sizes:
        raise BundleError(f"{data_dir}: vocabulary sizes {vocab_sizes} differ from the model's {model.vocab_sizes}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    program = export_program(model, vocab_sizes)
    with atomic_output_dir(output, overwrite) as tmp:
        torch.export.save(program, tmp / PROGRAM_FILE)
        worst = _check_parity(model, tmp / PROGRAM_FILE, vocab_sizes)
        shutil.copyfile(data_dir / SCHEMA_FILE, tmp / SCHEMA_FILE)
        shutil.copyfile(data_dir / schema.vocab_file, tmp / schema.vocab_file)  # type: ignore[operator]
        atomic_write_text(tmp / ARCH_FILE, json.dumps(architecture_json, indent=1) + "\n")
        files = [PROGRAM_FILE, SCHEMA_FILE, str(schema.vocab_file), ARCH_FILE]
        meta = {
            "autoias_bundle_version": BUNDLE_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "schema_hash": schema.hash,
            "format": schema.format,
            "program": {
                "file": PROGRAM_FILE,
                "load": "torch.export.load(path).module()",
                "input": {"shape": ["batch", schema.num_fields], "dtype": "int64",
                          "fields": schema.field_names, "vocab_sizes": vocab_sizes, "oov_id": OOV_ID,
                          "meaning": "one row per sample, the ids of its fields in this order (vocab.parquet)"},
                "output": {"shape": ["batch"], "dtype": "float32",
                           "meaning": "the click logit; P(click) = sigmoid(logit)"},
                "export_parity_max_abs_logit": worst,
            },
            "onnx": None,  # not written: onnx/onnxruntime are not dependencies
            "architecture": architecture_json.get("summary", {}),
            "source": dict(source or {}, data=str(data_dir)),
            "files": {name: sha256(tmp / name) for name in files},
        }
        atomic_write_text(tmp / BUNDLE_FILE, json.dumps(meta, indent=1) + "\n")
    return output


def load_bundle(directory: str | Path) -> Bundle:
    """Read and check a bundle: version, every file's sha256, schema hash, vocabularies against the schema."""
    directory = Path(directory)
    path = directory / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{path}: no bundle.json (is {directory} a bundle of `autoias-serve export`?)")
    meta = read_json(path, BundleError)
    version = meta.get("autoias_bundle_version")
    if version != BUNDLE_VERSION:
        raise BundleError(f"{path}: autoias_bundle_version {version!r}, expected {BUNDLE_VERSION}")
    schema = Schema.load(directory)
    if schema.hash != meta.get("schema_hash"):
        raise BundleError(f"{directory / SCHEMA_FILE}: schema hash {schema.hash} differs from the model's "
                          f"{meta.get('schema_hash')} in {path}: the bundle's schema is not the model's")
    check_vocabularies(directory, schema)
    for name, digest in meta.get("files", {}).items():
        f = directory / name
        if not f.is_file():
            raise BundleError(f"{f}: missing (listed in {path})")
        if sha256(f) != digest:
            raise BundleError(f"{f}: changed since export (sha256 differs from {path})")
    return Bundle(directory, meta, schema)
