"""`autoias-serve`: export a retrained model as a bundle, score raw Criteo-layout logs with it.

Tiny raw files in the exact Criteo layout (TSV: label, I1..I13, C1..C26) are prepared pre-split, so the
test split's parquet rows are the test file's rows in order: scoring the raw file must give what the
checkpoint's model gives on the prepared rows.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch import Trainer

from autoias_pl.ctr_model import CTRModel
from autoias_pl.data.datamodule import CTRDataModule
from autoias_pl.data.prepare import prepare
from autoias_pl.data.readers import AVAZU_COLUMNS, avazu_format, criteo_format, csv_format
from autoias_pl.data.schema import Schema, SchemaError
from autoias_pl.retrain import AutoIASRetrain
from autoias_pl.serve import bundle as bundle_module
from autoias_pl.serve import score as score_module
from autoias_pl.serve.bundle import (
    BUNDLE_FILE,
    ONNX_FILE,
    PROGRAM_FILE,
    BundleError,
    load_bundle,
    write_bundle,
)
from autoias_pl.serve.cli import main
from autoias_pl.serve.export import export_checkpoint
from autoias_pl.serve.score import Scorer, bad_row_indices, good_row_indices, score
from autoias_pl.space import Architecture, SearchSpace
from tests.helpers.raw import criteo_lines, write
from tests.helpers.serve import no_training_code, read_preds


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test raw files; the test file has values never seen in training (-> OOV)."""
    d = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    write(d / "train.txt", criteo_lines(rng, 600, 10))
    write(d / "val.txt", criteo_lines(rng, 100, 10))
    write(d / "test.txt", criteo_lines(rng, 300, 14))
    return d


@pytest.fixture(scope="module")
def data(raw: Path) -> Path:
    out = raw.parent / "data"
    prepare(out, criteo_format(), train=[raw / "train.txt"], val=[raw / "val.txt"], test=[raw / "test.txt"],
            min_count=3)
    return out


def retrain(data: Path, architecture: str, ckpt: Path) -> Path:
    """A few training steps of AutoIASRetrain on `data` (a large learning rate: the weights move away from
    their initialisation, so a wrong id changes a probability far beyond the tolerance), saved as a checkpoint."""
    schema = Schema.load(data)
    module = AutoIASRetrain(schema.field_names, schema.vocab_sizes, schema.hash, architecture=architecture,
                            baseline_dim=4, baseline_hidden=16, baseline_layers=2,
                            optimizer=lambda params: torch.optim.Adam(params, lr=0.05))
    trainer = Trainer(max_steps=8, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=CTRDataModule(str(data), batch_size=128))
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def ckpts(data: Path) -> dict[str, Path]:
    """deepfm, lr, a random architecture of a small space over the 39 fields, the published DCN-V2."""
    space = SearchSpace.from_schema(Schema.load(data), emb_dims=(2, 4), proj_dims=(2, 4), hidden_units=(8, 16),
                                    num_layers=2)
    arch_path = Architecture.uniform_random(space, torch.Generator().manual_seed(3)).save(data.parent / "arch.json")
    return {name: retrain(data, arch, data.parent / f"{name.replace(':', '-')}.ckpt")
            for name, arch in (("deepfm", "deepfm"), ("lr", "lr"), ("random", str(arch_path)),
                               ("ref:dcnv2", "ref:dcnv2"))}


@pytest.fixture(scope="module")
def bundle(ckpts: dict[str, Path], data: Path) -> Path:
    return export_checkpoint(ckpts["deepfm"], data, data.parent / "bundle-deepfm")


def model_probs(ckpt: Path, data: Path, split: str = "test") -> np.ndarray:
    """sigmoid of the checkpoint's model on the prepared split's rows, in order."""
    module = AutoIASRetrain.load_from_checkpoint(ckpt, map_location="cpu").eval()
    schema = Schema.load(data)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((data / split).glob("part-*.parquet"))])
    x = torch.from_numpy(np.stack([table[f].to_numpy().astype(np.int64) for f in schema.field_names], 1))
    with torch.no_grad():
        return torch.sigmoid(module.model(x).float()).numpy()


@pytest.mark.parametrize("name", ["deepfm", "lr", "random", "ref:dcnv2"])
def test_raw_scores_equal_the_checkpoint_on_prepared_rows(name: str, ckpts: dict[str, Path], data: Path,
                                                          raw: Path, tmp_path: Path) -> None:
    """Parity: raw text -> bundle score == prepared parquet -> the checkpoint model's sigmoid (1e-6)."""
    out = export_checkpoint(ckpts[name], data, tmp_path / "bundle")
    expected = model_probs(ckpts[name], data)  # (300,)
    assert len(expected) == 300 and expected.std() > 1e-3
    report = score(out, [raw / "test.txt"], tmp_path / "preds.parquet", format_name="criteo", batch_size=64)
    rows, probs = read_preds(tmp_path / "preds.parquet")
    assert report.rows == 300 and report.bad_rows == 0
    assert rows.tolist() == list(range(300))
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["schema_hash"] == Schema.load(data).hash
    assert meta["program"]["input"]["fields"] == Schema.load(data).field_names
    assert meta["program"]["input"]["dtype"] == "int64" and "sigmoid" in meta["program"]["output"]["meaning"]


def test_gzip_and_several_inputs_number_rows_across_files(bundle: Path, raw: Path, data: Path,
                                                          ckpts: dict[str, Path], tmp_path: Path) -> None:
    gz = tmp_path / "test.txt.gz"
    gz.write_bytes(gzip.compress((raw / "test.txt").read_bytes()))
    assert main(["score", "--bundle", str(bundle), "--format", "criteo", "--input", str(raw / "test.txt"), str(gz),
                 "--output", str(tmp_path / "p.parquet"), "--batch-size", "100"]) == 0
    rows, probs = read_preds(tmp_path / "p.parquet")
    assert rows.tolist() == list(range(600))
    expected = model_probs(ckpts["deepfm"], data)
    np.testing.assert_allclose(probs, np.concatenate([expected, expected]), rtol=0, atol=1e-6)


def test_unknown_values_score_as_out_of_vocabulary(bundle: Path, raw: Path, tmp_path: Path) -> None:
    """A row of values never seen scores like a row of OOV ids (0 everywhere but the numeric buckets)."""
    unseen = "\t".join(["0", *[""] * 13, *["never-seen"] * 26]) + "\n"
    empty_cats = "\t".join(["1", *[""] * 13, *["zz"] * 26]) + "\n"
    f = write(tmp_path / "u.txt", [unseen, empty_cats])
    score(bundle, [f], tmp_path / "u.parquet")
    _, probs = read_preds(tmp_path / "u.parquet")
    assert probs[0] == pytest.approx(probs[1], abs=1e-7)  # both all-OOV categoricals, same numeric codes


def test_scoring_imports_neither_lightning_nor_the_search(bundle: Path, raw: Path, tmp_path: Path) -> None:
    """A fresh interpreter scores through the CLI and loads the .pt2 without Lightning, search or model code."""
    code = (
        "import sys\nfrom autoias_pl.serve.cli import main\n"
        f"assert main(['score', '--bundle', {str(bundle)!r}, '--format', 'criteo', '--input', "
        f"{str(raw / 'test.txt')!r}, '--output', {str(tmp_path / 'p.parquet')!r}]) == 0\n"
        "import torch\np = torch.export.load(" + repr(str(bundle / PROGRAM_FILE)) + ").module()\n"
        "assert p(torch.zeros(3, 39, dtype=torch.long)).shape == (3,)\n"
        + no_training_code()
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 300


def test_bad_row_is_one_line_exit_2_and_writes_nothing(bundle: Path, raw: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lines = (raw / "test.txt").read_text().splitlines(keepends=True)[:20]
    lines[6] = "x" + lines[6][1:]  # line 7: label 'x'
    f = write(tmp_path / "bad.txt", lines)
    out = tmp_path / "out" / "preds.parquet"
    code = main(["score", "--bundle", str(bundle), "--format", "criteo", "--input", str(f), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("autoias-serve: error: ") and f"{f}:7:" in err[0] and "label" in err[0]
    assert not out.exists() and list(out.parent.iterdir()) == []  # no output, no temporary file


def test_skip_counts_bad_rows_and_keeps_the_rest(bundle: Path, raw: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    lines = (raw / "test.txt").read_text().splitlines(keepends=True)[:40]
    clean = write(tmp_path / "clean.txt", lines)
    bad = list(lines)
    bad[3] = "2" + bad[3][1:]  # label 2
    bad[10] = "\t".join(bad[10].split("\t")[:20]) + "\n"  # too few columns (pyarrow's own rejection)
    bad[25] = bad[25].replace("\t", "\tabc\t", 1)  # one column too many
    bad[30] = "\n"  # a blank line is no row
    f = write(tmp_path / "bad.txt", bad)
    assert bad_row_indices(f, criteo_format()).tolist() == [3, 10, 25]
    out = tmp_path / "skip.parquet"
    assert main(["score", "--bundle", str(bundle), "--format", "criteo", "--input", str(f), "--output", str(out),
                 "--on-bad-row", "skip", "--batch-size", "7"]) == 0
    assert "3 bad rows skipped" in capsys.readouterr().out
    score(bundle, [clean], tmp_path / "clean.parquet")
    rows, probs = read_preds(out)
    crow, cprobs = read_preds(tmp_path / "clean.parquet")
    keep = [i for i in range(40) if i not in (3, 10, 25, 30)]
    expected_rows = [i for i in range(39) if i not in (3, 10, 25)]  # the blank line is not numbered
    assert rows.tolist() == expected_rows
    np.testing.assert_allclose(probs, cprobs[keep], rtol=0, atol=1e-6)  # other batch sizes: last bits differ


def test_good_row_indices_skip_the_bad_ones() -> None:
    bad = np.array([0, 3, 4, 9])
    good = [i for i in range(20) if i not in bad]
    assert good_row_indices(0, 16, bad).tolist() == good
    assert good_row_indices(5, 4, bad).tolist() == good[5:9]


def test_interrupted_score_leaves_no_output(bundle: Path, raw: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def predict(self: score_module.Scorer, ids: np.ndarray, batch_size: int = 1) -> np.ndarray:
        calls.append(len(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros(len(ids), np.float32)

    monkeypatch.setattr(score_module.Scorer, "predict", predict)
    out = tmp_path / "o" / "preds.parquet"
    with pytest.raises(KeyboardInterrupt):
        score(bundle, [raw / "test.txt", raw / "test.txt"], out)
    assert len(calls) == 2 and not out.exists() and list(out.parent.iterdir()) == []


def test_bundle_whose_schema_or_vocabularies_changed_is_refused(bundle: Path, raw: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # a schema of other vocabulary sizes (consistent with itself, so only the bundle's hash catches it)
    b1 = Path(shutil.copytree(bundle, tmp_path / "b1"))
    schema = json.loads((b1 / "schema.json").read_text())
    schema["fields"][20]["vocab_size"] += 1
    schema["hash"] = Schema.from_dict({k: v for k, v in schema.items() if k != "hash"}).hash
    (b1 / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(BundleError, match="schema hash .* differs from the model's"):
        load_bundle(b1)
    code = main(["score", "--bundle", str(b1), "--format", "criteo", "--input", str(raw / "test.txt"),
                 "--output", str(tmp_path / "p.parquet")])
    assert code == 2 and "schema hash" in capsys.readouterr().err and not (tmp_path / "p.parquet").exists()
    # vocabularies that no longer match the schema (a value dropped)
    b2 = Path(shutil.copytree(bundle, tmp_path / "b2"))
    vocab = pq.read_table(b2 / "vocab.parquet")
    pq.write_table(vocab.slice(1), b2 / "vocab.parquet")
    with pytest.raises(SchemaError, match="vocabularies and schema differ"):
        load_bundle(b2)
    # same sizes, other values: the file's hash in bundle.json catches it
    b3 = Path(shutil.copytree(bundle, tmp_path / "b3"))
    values = vocab["value"].to_pylist()
    values[0], values[1] = values[1], values[0]
    pq.write_table(vocab.set_column(1, "value", pa.array(values, pa.string())), b3 / "vocab.parquet")
    with pytest.raises(BundleError, match="changed since export"):
        load_bundle(b3)
    # and a bundle asked to score another format
    with pytest.raises(BundleError, match="scores 'criteo' rows, not 'avazu'"):
        score(bundle, [raw / "test.txt"], tmp_path / "p.parquet", format_name="avazu")


def test_export_refuses_data_of_another_schema(ckpts: dict[str, Path], raw: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    prepare(other, criteo_format(), train=[raw / "test.txt"], val=[raw / "val.txt"], test=[raw / "val.txt"],
            min_count=3)
    code = main(["export", "--ckpt", str(ckpts["lr"]), "--data", str(other), "--output", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "differs from the model's" in err[0] and str(other) in err[0]
    assert not (tmp_path / "b").exists()


def test_export_refuses_an_existing_folder_without_overwrite(ckpts: dict[str, Path], data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", "--ckpt", str(ckpts["lr"]), "--data", str(data), "--output", str(out)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and load_bundle(out).schema.hash == Schema.load(data).hash
    onnx = ["model.onnx"] if load_bundle(out).onnx_path else []  # where the onnx extra is installed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["architecture.json", "bundle.json", "model.pt2", "schema.json", "vocab.parquet", *onnx])


def avazu_lines(rng: np.random.Generator, rows: int, pool: int, days: int) -> list[str]:
    lines = [",".join(AVAZU_COLUMNS) + "\n"]
    for i in range(rows):
        hour = f"1410{21 + rng.integers(days):02d}{rng.integers(24):02d}"
        cats = [f"{k}v{rng.integers(pool)}" for k in range(21)]
        lines.append(",".join([str(i), str(rng.integers(2)), hour, *cats]) + "\n")
    return lines


def csv_lines(rng: np.random.Generator, rows: int, pool: int, days: int) -> list[str]:
    lines = ["y,a,n,b\n"]
    for _ in range(rows):
        lines.append(f"{rng.integers(2)},a{rng.integers(pool)},{rng.integers(-5, 50 * days)},\"b,{rng.integers(pool)}\"\n")
    return lines


@pytest.mark.parametrize("fmt_name", ["avazu", "csv"])
def test_avazu_and_csv_rows_score_like_their_prepared_rows(fmt_name: str, tmp_path: Path) -> None:
    """The other formats through the same path (no Lightning here: a CTRModel with large random weights);
    the test file has unseen categoricals, hours of unseen days and unseen numeric buckets."""
    rng = np.random.default_rng(1)
    lines, fmt = ((avazu_lines, avazu_format()) if fmt_name == "avazu"
                  else (csv_lines, csv_format("y", ["a", "b"], ["n"])))
    train = write(tmp_path / "train.csv", lines(rng, 400, 8, 3))
    test = write(tmp_path / "test.csv", lines(rng, 200, 12, 9))
    schema = prepare(tmp_path / "data", fmt, train=[train], test=[test], min_count=2)
    arch = Architecture.uniform_random(SearchSpace.from_schema(schema, emb_dims=(2, 4), proj_dims=(2, 4),
                                                               hidden_units=(8,), num_layers=2),
                                       torch.Generator().manual_seed(0))
    model = CTRModel(arch, schema.vocab_sizes).eval()
    g = torch.Generator().manual_seed(0)  # weights of their own (not the global stream's state after the init)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3, generator=g)
    bundle = write_bundle(tmp_path / "bundle", model, tmp_path / "data", schema.hash, arch.to_json_dict())
    score(bundle, [test], tmp_path / "p.parquet", format_name=fmt_name)
    rows, probs = read_preds(tmp_path / "p.parquet")
    table = pq.read_table(next((tmp_path / "data" / "test").glob("part-*.parquet")))
    x = torch.from_numpy(np.stack([table[f].to_numpy().astype(np.int64) for f in schema.field_names], 1))
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    assert rows.tolist() == list(range(200)) and expected.std() > 1e-2
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)


def test_without_onnx_the_bundle_says_why_and_onnx_scoring_is_refused(data: Path, raw: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Where the onnx extra is absent (faked here, so this runs either way) export writes no model.onnx and
    says why in bundle.json; `--runtime onnx` is then one line, exit 2; `require` refuses to export."""
    monkeypatch.setattr(bundle_module, "onnx_missing", lambda: "onnx not installed (pip install 'autoias-pl[onnx]')")
    schema = Schema.load(data)
    space = SearchSpace.from_schema(schema, emb_dims=(2,), proj_dims=(2,), hidden_units=(8,), num_layers=1)
    model = CTRModel(Architecture.uniform_random(space, torch.Generator().manual_seed(0)), schema.vocab_sizes)
    out = write_bundle(tmp_path / "b", model, data, schema.hash, {})
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["onnx"] == {"file": None, "reason": "onnx not installed (pip install 'autoias-pl[onnx]')"}
    assert ONNX_FILE not in meta["files"] and not (out / ONNX_FILE).exists() and load_bundle(out).onnx_path is None
    with pytest.raises(BundleError, match="has no ONNX model .onnx not installed"):
        Scorer(out, runtime="onnx")
    code = main(["score", "--bundle", str(out), "--format", "criteo", "--input", str(raw / "test.txt"),
                 "--output", str(tmp_path / "p.parquet"), "--runtime", "onnx"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no ONNX model" in err[0] and not (tmp_path / "p.parquet").exists()
    score(out, [raw / "test.txt"], tmp_path / "p.parquet")  # pt2 still scores
    with pytest.raises(BundleError, match="model.onnx: not written: onnx not installed"):
        write_bundle(tmp_path / "r", model, data, schema.hash, {}, onnx="require")
    assert not (tmp_path / "r").exists()
    skipped = write_bundle(tmp_path / "s", model, data, schema.hash, {}, onnx="skip")
    assert load_bundle(skipped).meta["onnx"]["file"] is None and not (skipped / ONNX_FILE).exists()


def calibrated_checkpoint(ckpt: Path, data: Path, method: str, out: Path) -> Path:
    """`ckpt` with its calibrator (`method`) fitted on the prepared validation rows, as retraining does."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["calibration"] = method
    module = AutoIASRetrain(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    schema = Schema.load(data)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((data / "val").glob("part-*.parquet"))])
    x = torch.from_numpy(np.stack([table[f].to_numpy().astype(np.int64) for f in schema.field_names], 1))
    with torch.no_grad():
        module.calibrator.fit(module.eval().model(x), torch.from_numpy(table["label"].to_numpy()).float())
    assert bool(module.calibrator.fitted)
    checkpoint["state_dict"] = module.state_dict()
    torch.save(checkpoint, out)
    return out


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_bundle_scores_the_checkpoints_calibrated_probabilities(method: str, ckpts: dict[str, Path],
                                                                           data: Path, raw: Path,
                                                                           tmp_path: Path) -> None:
    """The checkpoint alone restores its calibrator; the bundle's program outputs (raw logit, calibrated
    probability); raw rows score as calibrator(model(prepared rows)) within 1e-6, in a fresh interpreter
    without training code too (platt)."""
    ckpt = calibrated_checkpoint(ckpts["deepfm"], data, method, tmp_path / "cal.ckpt")
    module = AutoIASRetrain.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert module.calibrator.method == method and bool(module.calibrator.fitted)
    if method == "platt":
        assert float(module.calibrator.slope) != 1.0
    schema = Schema.load(data)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((data / "test").glob("part-*.parquet"))])
    x = torch.from_numpy(np.stack([table[f].to_numpy().astype(np.int64) for f in schema.field_names], 1))
    with torch.no_grad():
        logits = module.model(x).float()
        expected = module.calibrator(logits).numpy()
    assert np.abs(expected - torch.sigmoid(logits).numpy()).max() > 1e-3  # calibration moves the probabilities
    out = export_checkpoint(ckpt, data, tmp_path / "bundle")
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["calibration"]["method"] == method and meta["program"]["export_parity_max_abs_logit"] <= 1e-6
    score(out, [raw / "test.txt"], tmp_path / "preds.parquet", batch_size=64)
    rows, probs = read_preds(tmp_path / "preds.parquet")
    assert rows.tolist() == list(range(300))
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(Scorer(out).logits(x.numpy()), logits.numpy(), rtol=0, atol=1e-6)  # raw logit kept
    if method != "platt":
        return
    code = (
        "import sys\nfrom autoias_pl.serve.cli import main\n"
        f"assert main(['score', '--bundle', {str(out)!r}, '--format', 'criteo', '--input', "
        f"{str(raw / 'test.txt')!r}, '--output', {str(tmp_path / 'p.parquet')!r}]) == 0\n"
        "import torch\np = torch.export.load(" + repr(str(out / PROGRAM_FILE)) + ").module()\n"
        "logit, prob = p(torch.zeros(3, 39, dtype=torch.long))\n"
        "assert logit.shape == prob.shape == (3,) and ((prob > 0) & (prob < 1)).all()\n"
        + no_training_code()
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(read_preds(tmp_path / "p.parquet")[1], expected, rtol=0, atol=1e-6)
