"""`autoias-serve export`: a retrain checkpoint -> a serving bundle (`bundle.py`).

The one module of `serve/` that reads a Lightning checkpoint, so the one that imports `autoias_pl.retrain`
(and with it Lightning); scoring never imports it.
"""

from __future__ import annotations

from pathlib import Path

from autoias_pl.serve.bundle import BundleError, write_bundle


def export_checkpoint(ckpt: str | Path, data_dir: str | Path, output: str | Path, overwrite: bool = False,
                      onnx: str = "auto") -> Path:
    """Write the bundle of the retrained model in `ckpt` with the vocabularies of `data_dir` to `output`
    (`onnx`: "auto", "require" or "skip" the ONNX model, `bundle.write_bundle`), with the calibrator the
    checkpoint carries (fitted on the validation split: the program's second output, the calibrated P(click))."""
    from autoias_pl.retrain import AutoIASRetrain

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no such checkpoint")
    if Path(output).exists() and not overwrite:  # before the slow load (write_bundle checks it again)
        raise FileExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    try:
        module = AutoIASRetrain.load_from_checkpoint(ckpt, map_location="cpu")
    except (KeyError, TypeError, RuntimeError) as e:
        raise BundleError(f"{ckpt}: not a retrain checkpoint of `autoias fit` ({type(e).__name__}: {e})") from e
    hp = module.hparams
    if getattr(module, "arch", None) is not None:  # an architecture of the space (searched or a baseline)
        arch_json = module.arch.to_json_dict(vocab_sizes=list(hp["vocab_sizes"]))
    else:  # a published reference model (`ref:<model>`, autoias_pl/references.py): its name and sizes
        arch_json = {"reference": hp.get("architecture"),
                     **{k: hp.get(k) for k in ("baseline_dim", "baseline_hidden", "baseline_layers")},
                     "summary": {"params": sum(p.numel() for p in module.model.parameters())}}
    source = {"checkpoint": str(ckpt), "architecture": hp.get("architecture")}
    return write_bundle(output, module.model, data_dir, hp["schema_hash"], arch_json, source=source,
                        overwrite=overwrite, onnx=onnx, calibrator=module.calibrator)
