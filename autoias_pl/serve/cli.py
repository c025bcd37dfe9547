"""`autoias-serve`: export a retrained model as a bundle, score raw logs with a bundle.

```
autoias-serve export --ckpt runs/retrain/version_0/checkpoints/best.ckpt --data data/criteo --output bundle/
autoias-serve score --bundle bundle/ --format criteo --input day_24.txt.gz --output preds.parquet
autoias-serve score --bundle bundle/ --format criteo --input day_24.txt.gz --output preds.parquet --runtime onnx
```

`export` writes model.onnx beside model.pt2 where the `onnx` extra is installed (`--onnx auto`, the default;
bundle.json records why not otherwise); `score --runtime onnx` runs it with onnxruntime.

Errors (a bad row, a bundle or dataset of another schema, an existing output) are one line on stderr,
exit code 2. `score` imports no Lightning: `export` loads it only when it runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from autoias_pl.errors import main_status
from autoias_pl.serve.bundle import ONNX_MODES, load_bundle
from autoias_pl.serve.score import DEFAULT_BATCH_SIZE, RUNTIMES

PROG = "autoias-serve"
FORMATS = ("criteo", "avazu", "csv")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="a retrain checkpoint + its prepared dataset -> a serving bundle folder")
    e.add_argument("--ckpt", required=True, help="checkpoint of `autoias fit` with configs/retrain.yaml")
    e.add_argument("--data", required=True, help="the prepared dataset the model was trained on (its schema "
                   "hash must be the checkpoint's): schema.json and vocab.parquet are copied from it")
    e.add_argument("--output", required=True, help="bundle folder to write (refused if it exists)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    e.add_argument("--onnx", choices=ONNX_MODES, default="auto",
                   help="model.onnx beside model.pt2: auto (where onnx is installed, default), require, skip")
    e.set_defaults(run=cmd_export)
    s = sub.add_parser("score", help="raw logs -> click probabilities (parquet: row, prob)")
    s.add_argument("--bundle", required=True, help="folder written by `autoias-serve export`")
    s.add_argument("--format", required=True, choices=FORMATS, help="raw format (must be the bundle's)")
    s.add_argument("--input", required=True, nargs="+", help="raw files (plain or .gz), scored in this order")
    s.add_argument("--output", required=True, help="parquet file to write (replaced if it exists)")
    s.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="error: stop with file:line (default); skip: leave the row out and count it")
    s.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, help="rows per model call")
    s.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of torch or onnxruntime (default: torch's)")
    s.add_argument("--runtime", choices=RUNTIMES, default="pt2",
                   help="pt2: the torch.export program (default); onnx: model.onnx with onnxruntime")
    s.set_defaults(run=cmd_score)
    return parser


def cmd_export(args: argparse.Namespace) -> None:
    from autoias_pl.serve.export import export_checkpoint  # the only path that loads Lightning

    out = export_checkpoint(args.ckpt, args.data, args.output, overwrite=args.overwrite, onnx=args.onnx)
    meta = load_bundle(out).meta
    print(f"{out}: bundle written ({', '.join(meta['files'])}, bundle.json)")
    if not meta["onnx"]["file"]:
        print(f"{out}: no model.onnx: {meta['onnx']['reason']}")


def cmd_score(args: argparse.Namespace) -> None:
    import torch

    from autoias_pl.serve.score import score

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = score(args.bundle, args.input, args.output, format_name=args.format,
                   skip_bad=args.on_bad_row == "skip", batch_size=args.batch_size, runtime=args.runtime)
    skipped = f", {report.bad_rows:,} bad rows skipped" if report.bad_rows else ""
    print(f"{report.output}: {report.rows:,} rows scored{skipped} in {report.seconds:.1f} s "
          f"({report.rows / max(report.seconds, 1e-9):,.0f} rows/s)")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the temporary output is removed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `autoias-serve`; returns the exit status (2 on a data, bundle or usage error)."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return main_status(PROG, lambda: args.run(args))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
