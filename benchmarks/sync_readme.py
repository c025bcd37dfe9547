"""Copy the demo's results into README.md, between `<!-- demo-results -->` and `<!-- /demo-results -->`.

    make demo                                          # writes runs/demo/results.md (minutes)
    python benchmarks/sync_readme.py                   # keeps a copy, rewrites the README block
    python benchmarks/sync_readme.py --check           # exit 1 if the README block is stale
    python benchmarks/sync_readme.py --verify RUN.md   # exit 1 if a fresh demo's results differ from it

With a results file other than the kept copy (default: runs/demo/results.md), that file is first copied to
`benchmarks/readme_demo_results.md`; the README block is then made from the kept copy. tests/test_readme.py
checks that the README block is `readme_block()` of the kept copy, so updating one without the other fails.

The block is the comparison table, the planted-pair line and the run's sizes with the column notes, as the
demo wrote them (`autoias_pl/experiments/demo.py`); its total wall time, which varies with the machine's load, is left
out. The prose after the block is written by hand.

`--verify` is what CI runs after a fresh `make demo` (`make demo-check`): the README block must be what the
code at HEAD prints, every figure but the wall-clock seconds (training s, "searched in N s"), which vary with
the machine's load and are masked on both sides.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
KEPT = ROOT / "benchmarks" / "readme_demo_results.md"
DEMO_RESULTS = ROOT / "runs" / "demo" / "results.md"
BEGIN, END = "<!-- demo-results -->", "<!-- /demo-results -->"
TITLE = "# AutoIAS demo: "
PAIRS = "planted pairs found by the search: "
TOTAL = "Total wall time "


def parse_results(text: str, source: str = "results.md") -> dict[str, str]:
    """The parts of a demo's results.md: title (sizes and seed), table, notes, pairs, total.

    The demo writes five paragraphs: `# AutoIAS demo: <sizes>`, the markdown table, the notes on the
    columns, the planted-pair line and `Total wall time <s> s.`; anything else is refused.
    """
    paragraphs = [p.strip("\n") for p in text.strip().split("\n\n")]
    names = ("title", "table", "notes", "pairs", "total")
    if len(paragraphs) != len(names):
        raise ValueError(f"{source}: expected {len(names)} paragraphs ({', '.join(names)}), got {len(paragraphs)}")
    parts = dict(zip(names, paragraphs, strict=True))
    table = parts["table"].splitlines()
    checks = {
        "title": parts["title"].startswith(TITLE) and "\n" not in parts["title"],
        "table": len(table) >= 3 and all(line.startswith("| ") or line.startswith("|---") for line in table),
        "notes": "\n" not in parts["notes"],
        "pairs": parts["pairs"].startswith(PAIRS) and "\n" not in parts["pairs"],
        "total": parts["total"].startswith(TOTAL),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"{source}: not a demo results.md (unexpected {', '.join(bad)} paragraph)")
    return parts


def readme_block(results_md: str, source: str = "results.md") -> str:
    """The README's lines between the markers (markers excluded) for a demo's results.md text."""
    p = parse_results(results_md, source)
    sizes = p["title"].removeprefix(TITLE)
    return f"{p['table']}\n\n{p['pairs']}\n\nDemo of {sizes}. {p['notes']}\n"


SECONDS = re.compile(r"(?<=\| )[\d.]+(?= \| [^|]*\|$)|(?<=searched in )\d+(?= s)|(?<=finalized in )\d+(?= s)",
                     re.MULTILINE)


def masked(block: str) -> str:
    """`block` with its wall-clock seconds (the training s column, the search's "searched in N s" and
    finalize's "finalized in N s") as `?`."""
    return SECONDS.sub("?", block)


def current_block(readme: str) -> str:
    """The README's lines between the markers (markers excluded)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"README: expected one {BEGIN} ... {END} block")
    return readme.split(BEGIN + "\n", 1)[1].split(END, 1)[0]


def splice(readme: str, block: str) -> str:
    """`readme` with the block between the markers replaced by `block`."""
    old = current_block(readme)
    head, tail = readme.split(BEGIN + "\n" + old + END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=DEMO_RESULTS,
                        help=f"a demo's results.md (default {DEMO_RESULTS.relative_to(ROOT)})")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--kept", type=Path, default=KEPT, help="the committed copy the README is made from")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the README block is not the kept copy's")
    parser.add_argument("--verify", type=Path, metavar="RESULTS_MD",
                        help="change nothing; exit 1 if this fresh demo's results differ from the README block "
                             "in anything but the seconds")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    if args.verify:
        fresh, kept = masked(readme_block(args.verify.read_text(), str(args.verify))), masked(current_block(readme))
        if fresh != kept:
            diff = [f"  README: {a}\n  fresh:  {b}" for a, b in zip(kept.splitlines(), fresh.splitlines(), strict=False)
                    if a != b]
            print(f"{args.readme}: the demo block is not what the code prints ({args.verify}); run "
                  f"`python {Path(__file__).name} {args.verify}`:\n" + "\n".join(diff), file=sys.stderr)
            return 1
        return 0
    if args.check:
        fresh = splice(readme, readme_block(args.kept.read_text(), str(args.kept)))
        if fresh != readme:
            print(f"{args.readme}: the demo block is not that of {args.kept}; run {Path(__file__).name}",
                  file=sys.stderr)
            return 1
        return 0
    if args.results.resolve() != args.kept.resolve():
        readme_block(args.results.read_text(), str(args.results))  # refuse a broken file before copying it
        shutil.copyfile(args.results, args.kept)
        print(f"copied {args.results} -> {args.kept}")
    args.readme.write_text(splice(readme, readme_block(args.kept.read_text(), str(args.kept))))
    print(f"{args.readme}: demo block written from {args.kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
