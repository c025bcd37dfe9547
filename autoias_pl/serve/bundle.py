"""A serving bundle: one folder that holds everything needed to score raw rows, and nothing else.

```
DIR/bundle.json        what the bundle is: versions, schema hash, input field order and dtype, what the
                       output means, sha256 of every other file
DIR/model.pt2          the model as a portable program (`torch.export.save`): (B, n) int64 ids -> (B,)
                       float32 logits; with a fitted calibrator -> (logits (B,), calibrated probabilities
                       (B,)); load it with `torch.export.load(path).module()`, no model code needed
DIR/model.onnx         the same program as ONNX (input `ids`, outputs `logit` [and `prob`], dynamic `batch`), written when
                       the `onnx` extra (onnx, onnxscript) is installed; bundle.json says whether it was and
                       why not; run it with `onnxruntime.InferenceSession(path)`, no torch needed
DIR/schema.json        the prepared dataset's schema (fields, vocabulary sizes, raw format)
DIR/vocab.parquet      its vocabularies (field, value, count, id): raw value -> id, as `prepare` wrote them
DIR/architecture.json  the architecture of the model (Architecture JSON, with its size)
```

`write_bundle` exports a `CTRModel` (or any module with that signature) beside a copy of a prepared
dataset's schema and vocabularies; it refuses a dataset whose schema hash differs from the model's. Given a
fitted `Calibrator` (autoias_pl/calibration.py: what retraining fits on the validation split), the program
computes the calibrated probability too, as a second output `prob` beside the raw `logit`; bundle.json's
"calibration" says which map it is. Without one (or unfitted: the identity) the program has the one output.
The ONNX model is checked against the eager model with onnxruntime at export time (1e-5 on logits) where
onnxruntime is installed. `load_bundle` checks a bundle before anything is scored: every file's hash, the schema's hash against
bundle.json, the vocabularies against the schema. No Lightning, no training code: `score.py` reads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
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

from autoias_pl.calibration import Calibrator
from autoias_pl.data.readers import RawFormat
from autoias_pl.data.schema import OOV_ID, SCHEMA_FILE, Schema, SchemaError
from autoias_pl.errors import AutoIASError
from autoias_pl.io import atomic_output_dir, atomic_write_text, read_json

BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
ARCH_FILE = "architecture.json"
PARITY_ATOL = 1e-6  # the exported program against the eager model at export time, on logits
ONNX_PARITY_ATOL = 1e-5  # the ONNX model (onnxruntime) against the eager model at export time, on logits
ONNX_MODES = ("auto", "require", "skip")  # write model.onnx where possible / or fail / never
ONNX_INPUT, ONNX_OUTPUT, ONNX_BATCH = "ids", "logit", "batch"
ONNX_PROB = "prob"  # the calibrated probability, in bundles with a calibrator


class Calibrated(nn.Module):
    """model then calibrator: ids (B, n) -> (raw logits (B,), calibrated probabilities (B,)), one program."""

    def __init__(self, model: nn.Module, calibrator: Calibrator) -> None:
        super().__init__()
        self.model, self.calibrator = model, calibrator
        self.vocab_sizes = getattr(model, "vocab_sizes", None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)  # (B,)
        return logits, self.calibrator(logits)


def outputs(program_or_model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B,), calibrated probabilities (B,) or None) of a bundle's program or its eager module."""
    out = program_or_model(x)
    return (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)


class BundleError(AutoIASError, ValueError):
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

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX model's path, None if the bundle has none (`meta["onnx"]["reason"]` says why)."""
        file = (self.meta.get("onnx") or {}).get("file")
        return self.path / file if file else None


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


def expected(model: nn.Module, x: torch.Tensor, runtime: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a runtime's outputs for ids x should be: the eager model's logits, and the eager calibrator of the
    runtime's own logits (an isotonic map is steep between close knots: it would amplify the runtimes'
    last-bit logit differences, which the logit check bounds already)."""
    logits, probs = outputs(model, x)
    if probs is None:
        return logits, None
    return logits, model.calibrator(outputs(runtime, x)[0])  # type: ignore[operator]


def export_program(model: nn.Module, vocab_sizes: list[int]) -> torch.export.ExportedProgram:
    """`torch.export` of `model` ((B, n) int64 -> (B,)) with a dynamic batch dimension, on the CPU."""
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(v, (8,), generator=gen) for v in vocab_sizes], 1)  # (8, n)
    batch = torch.export.Dim("batch", min=1)
    # opt_einsum picks a 3-operand einsum's contraction order from the traced sizes, which pins the batch
    # (ref:finalmlp's bilinear fusion); left to right instead: the same sums, checked by `_check_parity`
    with torch.no_grad(), torch.backends.opt_einsum.flags(enabled=False):
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},))


def _check_parity(model: nn.Module, program_file: Path, vocab_sizes: list[int]) -> float:
    """Largest |difference| of the saved program against the eager model (logits, and probabilities where
    calibrated) over batches of 1, 7, 300."""
    program = torch.export.load(program_file).module()
    gen, worst = torch.Generator().manual_seed(1), 0.0
    with torch.no_grad():
        for b in (1, 7, 300):
            x = torch.stack([torch.randint(v, (b,), generator=gen) for v in vocab_sizes], 1)  # (b, n)
            for got, want in zip(outputs(program, x), expected(model, x, program), strict=True):
                if want is not None:
                    worst = max(worst, float((got - want).abs().max()))
    if worst > PARITY_ATOL:
        raise BundleError(f"{program_file}: the exported program differs from the model by {worst:.3g} (logits)")
    return worst


def onnx_missing() -> str | None:
    """Why no ONNX model can be exported here (a sentence), or None when onnx and onnxscript are importable."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'autoias-pl[onnx]')"
    return None


def export_onnx(program: torch.export.ExportedProgram, path: Path, calibrated: bool = False) -> dict[str, Any]:
    """Write `program` as ONNX to `path` (input `ids` (batch, n) int64, output `logit` (batch,) float32 and,
    if `calibrated`, `prob` (batch,) float32, the batch dimension named `batch`), checked by `onnx.checker`;
    returns its opset and the versions used."""
    import logging

    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" per export
    names = [ONNX_OUTPUT, ONNX_PROB] if calibrated else [ONNX_OUTPUT]
    onnx_program = torch.onnx.export(program, input_names=[ONNX_INPUT], output_names=names,
                                     dynamo=True, external_data=False, verbose=False)
    proto = onnx_program.model_proto
    graph = proto.graph
    names = {d.dim_param for v in graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    for v in [*graph.input, *graph.output, *graph.value_info]:  # the exporter's symbol (s77) -> "batch"
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = ONNX_BATCH
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())
    versions = {"onnx": onnx.__version__}
    for m in ("onnxscript", "onnxruntime"):
        try:
            versions[m] = metadata.version(m)
        except metadata.PackageNotFoundError:
            pass
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "versions": versions}


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of the ONNX model at `path` (`threads` intra-op threads, None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_onnx_parity(model: nn.Module, onnx_file: Path, vocab_sizes: list[int]) -> float | None:
    """Largest |logit difference| of the ONNX model (onnxruntime) against the eager model over batches of
    1, 7, 300; None when onnxruntime is not installed (not checked)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    session = onnx_session(onnx_file, threads=1)
    gen, worst = torch.Generator().manual_seed(2), 0.0
    with torch.no_grad():
        for b in (1, 7, 300):
            x = torch.stack([torch.randint(v, (b,), generator=gen) for v in vocab_sizes], 1)  # (b, n)
            got = session.run(None, {ONNX_INPUT: x.numpy()})  # [logit] or [logit, prob]
            ran = tuple(torch.from_numpy(g) for g in got)
            want = [t for t in expected(model, x, lambda _, ran=ran: ran) if t is not None]
            worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True)))
    if worst > ONNX_PARITY_ATOL:
        raise BundleError(f"{onnx_file}: the ONNX model differs from the model by {worst:.3g} (logits, "
                          f"onnxruntime; tolerance {ONNX_PARITY_ATOL:g})")
    return worst


def _write_onnx(model: nn.Module, program: torch.export.ExportedProgram, directory: Path,
                vocab_sizes: list[int], mode: str) -> dict[str, Any]:
    """bundle.json's "onnx" entry: the file written and checked, or `{"file": None, "reason": ...}`.

    `mode` "auto" writes it where onnx is installed and records why not otherwise (an export that fails
    too); "require" raises instead; "skip" never writes it. A model that differs is always an error."""
    if mode not in ONNX_MODES:
        raise ValueError(f"onnx mode must be one of {ONNX_MODES}, got {mode!r}")
    if mode == "skip":
        return {"file": None, "reason": "not asked for (--onnx skip)"}
    reason = onnx_missing()
    if reason is None:
        try:
            info = export_onnx(program, directory / ONNX_FILE, calibrated=isinstance(model, Calibrated))
        except Exception as e:  # an op the exporter cannot translate: recorded, or raised below
            (directory / ONNX_FILE).unlink(missing_ok=True)
            reason = f"export failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if reason is not None:
        if mode == "require":
            raise BundleError(f"{directory / ONNX_FILE}: not written: {reason}")
        return {"file": None, "reason": reason}
    worst = _check_onnx_parity(model, directory / ONNX_FILE, vocab_sizes)
    return {
        "file": ONNX_FILE,
        "load": "onnxruntime.InferenceSession(path)",
        "input": {"name": ONNX_INPUT, "shape": [ONNX_BATCH, len(vocab_sizes)], "dtype": "int64",
                  "meaning": "as program.input: the ids of the fields in program.input.fields order"},
        "output": {"name": ONNX_OUTPUT, "shape": [ONNX_BATCH], "dtype": "float32",
                   "meaning": "the click logit; P(click) = sigmoid(logit)"},
        **({"prob_output": {"name": ONNX_PROB, "shape": [ONNX_BATCH], "dtype": "float32",
                            "meaning": "the calibrated click probability (bundle.json's calibration)"}}
           if isinstance(model, Calibrated) else {}),
        **info,
        "export_parity_max_abs_logit": worst,  # None: onnxruntime was not installed, not checked
    }


def calibration_meta(calibrator: Calibrator | None) -> dict[str, Any] | None:
    """bundle.json's "calibration": the fitted map, or None (no calibrator, unfitted or "none": sigmoid)."""
    if calibrator is None or not bool(calibrator.fitted) or calibrator.method == "none":
        return None
    meta: dict[str, Any] = {"method": calibrator.method, "fitted_on": "the validation split"}
    if calibrator.method == "platt":
        meta.update(slope=float(calibrator.slope), bias=float(calibrator.bias),
                    meaning="prob = sigmoid(slope * logit + bias)")
    else:
        meta.update(knots=calibrator.knots_x.numel(), meaning="prob = isotonic map of logit (linear "
                    "between knots, clipped outside)")
    return meta


def write_bundle(output: str | Path, model: nn.Module, data_dir: str | Path, schema_hash: str,
                 architecture_json: dict[str, Any], *, source: dict[str, Any] | None = None,
                 overwrite: bool = False, onnx: str = "auto", calibrator: Calibrator | None = None) -> Path:
    """Write the bundle of `model` (trained on data of `schema_hash`) with `data_dir`'s vocabularies.

    Refuses a dataset of another schema hash and an existing `output` without `overwrite`; atomic (a
    failure leaves nothing at `output`). `onnx` ("auto", "require", "skip") says whether to write
    model.onnx too (`_write_onnx`). A fitted `calibrator` adds the calibrated probability output."""
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
    if onnx not in ONNX_MODES:
        raise ValueError(f"onnx mode must be one of {ONNX_MODES}, got {onnx!r}")
    calibration = calibration_meta(calibrator)
    if calibration is not None:
        model = Calibrated(model.cpu().eval(), calibrator.cpu().eval())  # type: ignore[union-attr]
    program = export_program(model, vocab_sizes)
    with atomic_output_dir(output, overwrite) as tmp:
        torch.export.save(program, tmp / PROGRAM_FILE)
        worst = _check_parity(model, tmp / PROGRAM_FILE, vocab_sizes)
        onnx_meta = _write_onnx(model, program, tmp, vocab_sizes, onnx)
        shutil.copyfile(data_dir / SCHEMA_FILE, tmp / SCHEMA_FILE)
        shutil.copyfile(data_dir / schema.vocab_file, tmp / schema.vocab_file)  # type: ignore[operator]
        atomic_write_text(tmp / ARCH_FILE, json.dumps(architecture_json, indent=1) + "\n")
        files = [PROGRAM_FILE, *([ONNX_FILE] if onnx_meta["file"] else []), SCHEMA_FILE, str(schema.vocab_file),
                 ARCH_FILE]
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
                           "meaning": "the click logit; P(click) = sigmoid(logit)"
                           + ("; a second output: the calibrated P(click) (calibration)" if calibration else "")},
                "export_parity_max_abs_logit": worst,
            },
            "onnx": onnx_meta,  # {"file": None, "reason": ...} where not written
            "calibration": calibration,  # None: one output, P(click) = sigmoid(logit)
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
