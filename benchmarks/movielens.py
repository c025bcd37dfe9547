"""Build MovieLens-100K as a CTR log (the development log of the real-data work) from the fetched files.

MovieLens' licence forbids redistribution, so the data stays outside the repository: fetch
`ml-100k/u.data` from jeremy-ma/lenskit-diffusion (commit 3851a086) and `u.user`, `u.item`, `u.genre`
from tule2236/Item-based-CF-with-PySpark (commit 9687bc4e) into one folder, then

    python benchmarks/movielens.py --raw RAW_DIR --out ml100k.csv
    autoias-data prepare --format csv --input ml100k.csv --label click --output data/ml100k \
        --categorical user,item,age,gender,occupation,zip3,genre,year,hour,weekday

Label: rating >= 4 (55.4% positive). Fields: user, item, age decade, gender, occupation, zip3 (first
three zip characters), first genre, release year, hour and weekday of the timestamp (UTC). A line with
stray whitespace around a value (u.data's first line has a space after its rating) is read as its
stripped value; a malformed line stops the build with its file and line number.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

COLUMNS = ["click", "user", "item", "age", "gender", "occupation", "zip3", "genre", "year", "hour", "weekday"]


def _rows(path: Path, sep: str, width: int, encoding: str = "latin-1"):
    """(line number, stripped fields) of a `sep`-separated file whose lines have at least `width` fields."""
    with open(path, encoding=encoding) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.rstrip("\n").split(sep)]
            if len(parts) < width:
                raise ValueError(f"{path}:{n}: expected {width} fields separated by {sep!r}, got {len(parts)}")
            yield n, parts


def build(raw: Path) -> list[list[str]]:
    """The CTR rows of MovieLens-100K in u.data's order."""
    genres = {p[1]: p[0] for _, p in _rows(raw / "u.genre", "|", 2)}  # index -> name
    users = {p[0]: (f"{int(p[1]) // 10 * 10}", p[2], p[3], p[4][:3].upper()) for _, p in _rows(raw / "u.user", "|", 5)}
    items = {}
    for _, p in _rows(raw / "u.item", "|", 24):
        flags = p[5:24]
        first = next((genres[str(i)] for i, f in enumerate(flags) if f == "1"), "none")
        items[p[0]] = (first, p[2][-4:] if p[2] else "none")
    out = []
    for n, (user, item, rating, ts) in ((n, p[:4]) for n, p in _rows(raw / "u.data", "\t", 4)):
        if user not in users or item not in items or not rating.isdigit() or not ts.isdigit():
            raise ValueError(f"{raw / 'u.data'}:{n}: unknown user/item or non-integer rating/timestamp")
        t = datetime.fromtimestamp(int(ts), tz=UTC)
        out.append([str(int(int(rating) >= 4)), user, item, *users[user], *items[item], str(t.hour), str(t.weekday())])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw", type=Path, required=True, help="folder with u.data, u.user, u.item, u.genre")
    p.add_argument("--out", type=Path, required=True, help="the CSV to write (header: " + ",".join(COLUMNS) + ")")
    args = p.parse_args()
    try:
        rows = build(args.raw)
    except (OSError, ValueError) as e:
        sys.exit(f"movielens.py: error: {e}")
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    os.replace(tmp, args.out)
    pos = sum(r[0] == "1" for r in rows) / len(rows)
    print(f"{args.out}: {len(rows)} rows, {pos:.3f} positive")


if __name__ == "__main__":
    main()
