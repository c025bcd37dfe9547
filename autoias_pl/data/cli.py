"""`autoias-data`: prepare raw click logs, inspect a prepared dataset, or synthesize one.

    autoias-data prepare --format criteo --input train.txt --output data/criteo --preset bars
    autoias-data prepare --format avazu --train tr.csv --val va.csv --test te.csv --output data/avazu
    autoias-data prepare --format csv --input log.csv --label y --categorical a,b --numeric x --output d
    autoias-data inspect data/criteo
    autoias-data synth --output data/synth --rows 100000 --fields 10
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from autoias_pl.data.readers import RawFormat, avazu_format, criteo_format, csv_format
from autoias_pl.data.schema import LABEL, SPLITS, Schema
from autoias_pl.data.shards import reading
from autoias_pl.errors import ConfigError, main_status
from autoias_pl.space import SearchSpace

PROG = "autoias-data"


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _split(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.8,0.1,0.1, got {text!r}") from e


def _delimiter(text: str) -> str:
    text = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"a delimiter is one character, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="raw logs -> vocabularies + parquet shards + schema.json")
    p.add_argument("--format", required=True, choices=["criteo", "avazu", "csv"])
    p.add_argument("--input", nargs="+", type=Path, help="raw files, split randomly per row")
    p.add_argument("--train", nargs="+", type=Path, help="pre-split: training files (the vocabulary's source)")
    p.add_argument("--val", nargs="+", type=Path, default=[])
    p.add_argument("--test", nargs="+", type=Path, default=[])
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--preset", choices=["paper", "bars"], default="bars",
                   help="paper: min_count 20, split 0.72/0.08/0.2; bars (default): min_count 10 (avazu 2), 8:1:1")
    p.add_argument("--min-count", type=int, default=None, help="overrides the preset")
    p.add_argument("--split", type=_split, default=None, help="train,val,test fractions; overrides the preset")
    p.add_argument("--seed", type=int, default=2018)
    p.add_argument("--rows-per-shard", type=int, default=None)
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--label", help="csv: the label column")
    p.add_argument("--categorical", type=_names, default=[], help="csv: comma-separated column names")
    p.add_argument("--numeric", type=_names, default=[], help="csv: integer columns, bucketed like Criteo's")
    p.add_argument("--delimiter", type=_delimiter, default=",", help="csv: one character (or \\t)")
    p.set_defaults(run=cmd_prepare)
    i = sub.add_parser("inspect", help="summarize a prepared dataset")
    i.add_argument("directory", type=Path)
    i.set_defaults(run=cmd_inspect)
    s = sub.add_parser("synth", help="write a synthetic dataset with planted interacting pairs")
    s.add_argument("--output", required=True, type=Path)
    s.add_argument("--rows", required=True, type=int)
    s.add_argument("--fields", required=True, type=int)
    s.add_argument("--planted-pairs", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--vocab-range", type=_int_pair, default=None, metavar="LO,HI",
                   help="vocabulary sizes are log-uniform in [LO, HI] (default 10,3000)")
    s.add_argument("--rows-per-shard", type=int, default=None)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=cmd_synth)
    return parser


def _format(args: argparse.Namespace) -> RawFormat:
    if args.format == "criteo":
        return criteo_format()
    if args.format == "avazu":
        return avazu_format()
    if not args.label or not (args.categorical or args.numeric):
        raise ConfigError("--format csv needs --label and at least one of --categorical/--numeric")
    return csv_format(args.label, args.categorical, args.numeric, args.delimiter)


def cmd_prepare(args: argparse.Namespace) -> None:
    from autoias_pl.data.prepare import prepare, resolve_protocol
    from autoias_pl.data.shards import DEFAULT_ROWS_PER_SHARD

    if (args.input is None) == (args.train is None):
        raise ConfigError("give either --input (random split) or --train [--val] [--test] (pre-split)")
    fmt = _format(args)
    min_count, split = resolve_protocol(args.preset, fmt.name, args.min_count, args.split)
    schema = prepare(
        args.output, fmt, args.input, train=args.train, val=args.val, test=args.test,
        min_count=min_count, split=split, seed=args.seed,
        rows_per_shard=args.rows_per_shard or DEFAULT_ROWS_PER_SHARD,
        skip_bad=args.on_bad_row == "skip", overwrite=args.overwrite,
    )
    print(f"{args.output}: {sum(schema.rows.values()):,} rows {schema.rows}, {schema.num_fields} fields, "
          f"hash {schema.hash}, {schema.bad_rows_skipped} bad rows skipped")


def positive_rates(directory: Path) -> dict[str, float | None]:
    """Mean label per split, read from the shards' label column (None for an empty split)."""
    rates: dict[str, float | None] = {}
    for split in SPLITS:
        pos = rows = 0
        for shard in sorted((directory / split).glob("part-*.parquet")):
            with reading(shard):  # a truncated or corrupt shard: one line naming it, exit code 2
                labels = pq.read_table(shard, columns=[LABEL])[LABEL].to_numpy()  # (R,) int8
            pos, rows = pos + int(np.count_nonzero(labels)), rows + len(labels)
        rates[split] = pos / rows if rows else None
    return rates


def search_space_line(schema: Schema) -> str:
    """The size of the default search space over the schema's fields."""
    if schema.num_fields < 2:
        return f"none ({schema.num_fields} field: the space needs >= 2)"
    return f"10^{SearchSpace.from_schema(schema).log10_size():.1f} architectures (default candidate sets)"


def cmd_inspect(args: argparse.Namespace) -> None:
    schema = Schema.load(args.directory)
    rates = positive_rates(args.directory)
    print(f"dataset:      {args.directory}")
    print(f"format:       {schema.format}   hash: {schema.hash}   schema_version: {schema.schema_version}")
    print(f"protocol:     min_count {schema.min_count}, split {schema.split}, seed {schema.seed}, "
          f"bad rows skipped {schema.bad_rows_skipped}")
    for split in SPLITS:
        rate = rates[split]
        print(f"{split + ':':<13} {schema.rows.get(split, 0):>12,} rows   positive rate "
              + ("-" if rate is None else f"{rate:.4f}"))
    print(f"fields:       {schema.num_fields} (vocabulary sizes include the OOV id 0)")
    width = max((len(f.name) for f in schema.fields), default=4)
    for f in schema.fields:
        print(f"  {f.name:<{width}}  {f.kind:<11} {f.vocab_size:>10,}")
    print(f"search space: {search_space_line(schema)}")


def _int_pair(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(t) for t in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two integers), got {text!r}") from e
    return lo, hi


def cmd_synth(args: argparse.Namespace) -> None:
    from autoias_pl.data.shards import DEFAULT_ROWS_PER_SHARD
    from autoias_pl.data.synth import VOCAB_RANGE, synthesize

    schema = synthesize(args.output, args.rows, args.fields, planted_pairs=args.planted_pairs, seed=args.seed,
                        rows_per_shard=args.rows_per_shard or DEFAULT_ROWS_PER_SHARD, overwrite=args.overwrite,
                        vocab_range=args.vocab_range or VOCAB_RANGE)
    print(f"{args.output}: {sum(schema.rows.values()):,} rows {schema.rows}, {schema.num_fields} fields, "
          f"hash {schema.hash}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `autoias-data`; returns the exit status (2 on a data or usage error, no traceback)."""
    args = build_parser().parse_args(argv)
    return main_status(PROG, lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
