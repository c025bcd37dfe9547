"""The bundle's ONNX model (the `onnx` extra): onnxruntime scores what the `.pt2` program scores.

Skipped where onnx, onnxscript or onnxruntime is not installed. The models are built without Lightning
(random weights, spread so that a wrong id or op moves a logit far beyond the tolerance) over tiny raw
Criteo-layout files: a searched architecture with all four interaction functions, the in-space baseline lr
(the other in-space baselines are the same CTRModel export) and every published reference model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

for _module in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (the onnx extra: pip install -e '.[onnx]')")

import onnx  # noqa: E402

from autoias_pl.baselines import baseline  # noqa: E402
from autoias_pl.calibration import Calibrator  # noqa: E402
from autoias_pl.ctr_model import CTRModel  # noqa: E402
from autoias_pl.data.prepare import prepare  # noqa: E402
from autoias_pl.data.readers import criteo_format, read_blocks  # noqa: E402
from autoias_pl.data.schema import Schema  # noqa: E402
from autoias_pl.references import REFERENCES, reference  # noqa: E402
from autoias_pl.serve.bundle import (  # noqa: E402
    BUNDLE_FILE,
    ONNX_BATCH,
    ONNX_FILE,
    ONNX_PARITY_ATOL,
    load_bundle,
    write_bundle,
)
from autoias_pl.serve.cli import main  # noqa: E402
from autoias_pl.serve.score import Scorer, score  # noqa: E402
from autoias_pl.space import FUNCTIONS, Architecture, SearchSpace  # noqa: E402
from tests.helpers.raw import criteo_lines, write  # noqa: E402
from tests.helpers.serve import no_training_code, read_preds  # noqa: E402

# the in-space baselines are CTRModels like "searched" (one export path): "lr", the one without pairs and MLP,
# stands for them; each published reference model is its own module
KINDS = ("searched", "lr", *REFERENCES)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared Criteo-layout dataset (39 fields) and, beside it, raw/test.txt with unseen values."""
    d = tmp_path_factory.mktemp("onnx")
    rng = np.random.default_rng(5)
    (d / "raw").mkdir()
    train = write(d / "raw" / "train.txt", criteo_lines(rng, 400, 8))
    write(d / "raw" / "test.txt", criteo_lines(rng, 200, 12))
    prepare(d / "data", criteo_format(), train=[train], min_count=2)
    return d / "data"


def searched(schema: Schema) -> Architecture:
    """A random architecture of a small space whose selected pairs use product, concat, plus and max."""
    space = SearchSpace.from_schema(schema, emb_dims=(2, 4), proj_dims=(2, 4), hidden_units=(8, 16), num_layers=2)
    arch = Architecture.uniform_random(space, torch.Generator().manual_seed(11))
    pairs = range(space.num_fields, space.num_vectors)
    used = {arch.funcs[q] for q, v in zip(range(space.num_pairs), pairs, strict=True) if arch.selected[v]}
    assert used == set(FUNCTIONS), used
    return arch


def build(kind: str, schema: Schema) -> tuple[nn.Module, dict]:
    """The model of `kind` with spread random weights, and its architecture JSON."""
    torch.manual_seed(0)
    vocab = schema.vocab_sizes
    if kind in REFERENCES:
        model: nn.Module = reference(kind, vocab, dim=4, hidden=16, layers=2)
        arch_json = {"reference": kind}
    else:
        space = SearchSpace.from_schema(schema, emb_dims=(2, 4), proj_dims=(2, 4), hidden_units=(8, 16),
                                        num_layers=2)
        arch = searched(schema) if kind == "searched" else baseline(kind, space, dim=4, hidden=16)
        model, arch_json = CTRModel(arch, vocab), arch.to_json_dict(vocab_sizes=vocab)
        with torch.no_grad():  # random, not the structured init (identity projections, pair read-out 1)
            for w in model.projections:  # (m, d, K)
                w.uniform_(-(w.shape[1] ** -0.5), w.shape[1] ** -0.5)
            fan_in = model.readout.weight.shape[1]
            model.readout.weight.uniform_(-(fan_in ** -0.5), fan_in ** -0.5)
    with torch.no_grad():
        tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for p in model.parameters():  # the default init gives near-constant logits
            if id(p) in tables:
                p.normal_(0.0, 0.3)
            elif p.dim() >= 2:
                p.mul_(1.5)
    return model.eval(), arch_json


def encoded_test_rows(bundle: Path, raw: Path) -> np.ndarray:
    scorer = Scorer(bundle)
    return np.concatenate([scorer.encoder.encode_block(b) for b in read_blocks(raw, scorer.format)]).astype(np.int64)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_scores_like_the_pt2_program(kind: str, data: Path, tmp_path: Path) -> None:
    """.pt2 (torch.export) == model.onnx (onnxruntime) within 1e-5 on the same encoded rows (logits), and
    raw rows scored end to end through either runtime give the same probabilities."""
    schema = Schema.load(data)
    model, arch_json = build(kind, schema)
    out = write_bundle(tmp_path / "bundle", model, data, schema.hash, arch_json, onnx="require")
    meta = json.loads((out / BUNDLE_FILE).read_text())["onnx"]
    assert meta["file"] == ONNX_FILE and meta["input"]["name"] == "ids" and meta["output"]["name"] == "logit"
    assert 0 <= meta["export_parity_max_abs_logit"] <= ONNX_PARITY_ATOL and meta["opset"] >= 18
    assert load_bundle(out).onnx_path == out / ONNX_FILE

    raw = data.parent / "raw" / "test.txt"
    ids = encoded_test_rows(out, raw)  # (200, 39) ids, unseen values -> 0
    assert ids.shape == (200, 39) and (ids == 0).any()
    pt2, ort = Scorer(out, "pt2"), Scorer(out, "onnx", threads=1)
    a, b = pt2.logits(ids), ort.logits(ids)
    assert a.dtype == b.dtype == np.float32 and a.std() > 0.02, (kind, a.std())  # spread: a wrong op shows
    np.testing.assert_allclose(b, a, rtol=0, atol=ONNX_PARITY_ATOL)
    for i in (0, 1, 17):  # the dynamic batch: one row, odd sizes
        np.testing.assert_allclose(ort.logits(ids[i : i + i + 1]), a[i : i + i + 1], rtol=0, atol=ONNX_PARITY_ATOL)

    score(out, [raw], tmp_path / "pt2.parquet", batch_size=64)
    score(out, [raw], tmp_path / "onnx.parquet", batch_size=37, runtime="onnx")
    (r1, p1), (r2, p2) = read_preds(tmp_path / "pt2.parquet"), read_preds(tmp_path / "onnx.parquet")
    assert r1.tolist() == r2.tolist() == list(range(200))
    np.testing.assert_allclose(p2, p1, rtol=0, atol=ONNX_PARITY_ATOL)


def test_onnx_file_has_a_named_dynamic_batch(data: Path, tmp_path: Path) -> None:
    schema = Schema.load(data)
    out = write_bundle(tmp_path / "b", build("deepfm", schema)[0], data, schema.hash, {})
    proto = onnx.load(out / ONNX_FILE)
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [ONNX_BATCH, 39]
    assert [d.dim_param or d.dim_value for d in outp.type.tensor_type.shape.dim] == [ONNX_BATCH]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not proto.graph.initializer or all(not t.external_data for t in proto.graph.initializer)  # one file


def test_onnx_loads_in_a_fresh_interpreter_without_lightning_or_the_search(data: Path, tmp_path: Path) -> None:
    """`score --runtime onnx` and a bare onnxruntime session of model.onnx, with neither Lightning nor the
    search (nor the model code) imported; the CLI's probabilities are the .pt2's."""
    schema = Schema.load(data)
    model, arch_json = build("searched", schema)
    out = write_bundle(tmp_path / "bundle", model, data, schema.hash, arch_json)
    raw = data.parent / "raw" / "test.txt"
    code = (
        "import sys\nfrom autoias_pl.serve.cli import main\n"
        f"assert main(['score', '--bundle', {str(out)!r}, '--format', 'criteo', '--input', {str(raw)!r}, "
        f"'--output', {str(tmp_path / 'onnx.parquet')!r}, '--runtime', 'onnx', '--threads', '1']) == 0\n"
        "import numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(out / ONNX_FILE)!r}, providers=['CPUExecutionProvider'])\n"
        "(y,) = s.run(['logit'], {'ids': np.zeros((3, 39), np.int64)})\n"
        "assert y.shape == (3,) and y.dtype == np.float32 and np.isfinite(y).all()\n"
        + no_training_code(("autoias_pl.references",))
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert main(["score", "--bundle", str(out), "--format", "criteo", "--input", str(raw),
                 "--output", str(tmp_path / "pt2.parquet")]) == 0
    (r1, p1), (r2, p2) = read_preds(tmp_path / "pt2.parquet"), read_preds(tmp_path / "onnx.parquet")
    assert r1.tolist() == r2.tolist() == list(range(200)) and p1.std() > 1e-2
    np.testing.assert_allclose(p2, p1, rtol=0, atol=ONNX_PARITY_ATOL)
    assert pq.read_table(tmp_path / "onnx.parquet").num_rows == 200


def test_a_changed_onnx_file_is_refused(data: Path, tmp_path: Path) -> None:
    schema = Schema.load(data)
    out = write_bundle(tmp_path / "b", build("lr", schema)[0], data, schema.hash, {})
    (out / ONNX_FILE).write_bytes((out / ONNX_FILE).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="model.onnx: changed since export"):
        load_bundle(out)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_onnx_outputs_the_raw_logit_and_the_calibrated_probability(method: str, data: Path,
                                                                             tmp_path: Path) -> None:
    """With a fitted calibrator the ONNX model has two outputs, `logit` (the raw one) and `prob` (calibrated),
    equal to the eager model and calibrator and to the .pt2 program; raw rows score the same either way."""
    schema = Schema.load(data)
    model, arch_json = build("ref:deepfm", schema)
    ids = torch.stack([torch.randint(v, (2000,), generator=torch.Generator().manual_seed(v)) for v in
                       schema.vocab_sizes], 1)  # (2000, 39) "validation" rows
    with torch.no_grad():
        z = model(ids)
        labels = (torch.rand(2000, generator=torch.Generator().manual_seed(1)) < torch.sigmoid(z / 3)).float()
        calibrator = Calibrator(method).fit(z, labels)  # the logits are 3x too large: a visible correction
    out = write_bundle(tmp_path / "bundle", model, data, schema.hash, arch_json, onnx="require",
                       calibrator=calibrator)
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["calibration"]["method"] == method and meta["onnx"]["prob_output"]["name"] == "prob"
    proto = onnx.load(out / ONNX_FILE)
    assert [o.name for o in proto.graph.output] == ["logit", "prob"]
    raw = data.parent / "raw" / "test.txt"
    x = encoded_test_rows(out, raw)  # (200, 39)
    pt2, ort = Scorer(out, "pt2"), Scorer(out, "onnx", threads=1)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        expected = calibrator(logits).numpy()
    assert np.abs(expected - torch.sigmoid(logits).numpy()).max() > 1e-2
    np.testing.assert_allclose(ort.logits(x), logits.numpy(), rtol=0, atol=ONNX_PARITY_ATOL)
    np.testing.assert_allclose(pt2.logits(x), logits.numpy(), rtol=0, atol=1e-6)
    # the probabilities: the calibrator of each runtime's own logits (an isotonic map is steep between close
    # knots, so it amplifies the runtimes' last-bit logit differences; Platt: also the eager ones directly)
    with torch.no_grad():
        from_ort = calibrator(torch.from_numpy(ort.logits(x))).numpy()
    np.testing.assert_allclose(ort.predict(x), from_ort, rtol=0, atol=ONNX_PARITY_ATOL)
    np.testing.assert_allclose(pt2.predict(x), expected, rtol=0, atol=1e-6)
    if method == "platt":
        np.testing.assert_allclose(ort.predict(x), expected, rtol=0, atol=ONNX_PARITY_ATOL)
    score(out, [raw], tmp_path / "onnx.parquet", batch_size=37, runtime="onnx")
    np.testing.assert_allclose(read_preds(tmp_path / "onnx.parquet")[1], from_ort, rtol=0, atol=ONNX_PARITY_ATOL)
