"""Specification of `prepare`: encodings, vocabularies, splits, raw-format checks, atomic output."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoias_pl.data import prepare as prepare_module
from autoias_pl.data.prepare import Encoder, ProvisionalDictionary, prepare, resolve_protocol, string_keys
from autoias_pl.data.readers import (
    AVAZU_COLUMNS,
    BadRowError,
    EmptyInputError,
    MissingInputError,
    UnknownColumnError,
    avazu_format,
    criteo_format,
    csv_format,
    hour_codes,
    numeric_codes,
)
from autoias_pl.data.schema import SPLITS, Schema
from tests.helpers.raw import AVAZU_HEAD, AVAZU_OK, criteo_row, write

ALL_TRAIN = (1.0, 0.0, 0.0)


def decode(directory: Path, split: str) -> dict[str, list[str | None]]:
    """Every field of a split's shards mapped back to raw values through vocab.parquet (None = OOV)."""
    vocab = pq.read_table(directory / "vocab.parquet").to_pylist()
    names = {(v["field"], v["id"]): v["value"] for v in vocab}
    shards = sorted((directory / split).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(s) for s in shards])
    return {c: [names.get((c, i)) for i in table[c].to_pylist()] for c in table.column_names if c != "label"}


def shard_matrix(directory: Path, split: str) -> np.ndarray:
    """(R, n + 1) int64: ids of every field, then the label."""
    shards = sorted((directory / split).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(s) for s in shards])
    return np.stack([table[c].to_numpy().astype(np.int64) for c in table.column_names], axis=1)


def test_numeric_buckets_match_hand_computed_values() -> None:
    x = np.array([0, 1, 2, 3, 1000, -5])
    # codes: 0 empty, 1 negative, else bucket + 2; floor(ln(3)^2) = 1, floor(ln(1000)^2) = 47
    assert numeric_codes(x).tolist() == [2, 3, 4, 3, 49, 1]


def test_numeric_buckets_end_to_end(tmp_path: Path) -> None:
    values = [""] * 7 + ["0"] * 6 + ["2"] * 5 + ["1", "3", "1", "3"] + ["1000"] * 3 + ["-5"]
    raw = write(tmp_path / "c.tsv", [criteo_row(ints={1: v}) for v in values])
    prepare(tmp_path / "out", criteo_format(), [raw], min_count=1, split=ALL_TRAIN)
    ids = shard_matrix(tmp_path / "out", "train")[:, 0]
    # ids by descending count: '' 7 -> 1, '0' 6 -> 2, '2' 5 -> 3, bucket 1 (x=1 and x=3) 4 -> 4, 47 -> 5, <0 -> 6
    expected = [1] * 7 + [2] * 6 + [3] * 5 + [4] * 4 + [5] * 3 + [6]
    assert ids.tolist() == expected
    assert decode(tmp_path / "out", "train")["I1"][-4:] == ["47", "47", "47", "<0"]


def test_min_count_edge_keeps_count_equal_and_drops_one_less(tmp_path: Path) -> None:
    values = ["aa"] * 3 + ["bb"] * 2 + ["cc"] * 4
    raw = write(tmp_path / "c.tsv", [criteo_row(cats={1: v}) for v in values])
    schema = prepare(tmp_path / "out", criteo_format(), [raw], min_count=3, split=ALL_TRAIN)
    ids = shard_matrix(tmp_path / "out", "train")[:, 13]  # C1
    assert ids.tolist() == [2] * 3 + [0] * 2 + [1] * 4  # cc (4) -> 1, aa (3) -> 2, bb (2 < 3) -> OOV 0
    assert schema.fields[13].vocab_size == 3


def test_empty_categorical_is_a_token_and_ties_go_by_value(tmp_path: Path) -> None:
    values = [""] * 2 + ["zz"] * 2 + ["yy"] * 2
    raw = write(tmp_path / "c.tsv", [criteo_row(cats={2: v}) for v in values])
    prepare(tmp_path / "out", criteo_format(), [raw], min_count=2, split=ALL_TRAIN)
    assert shard_matrix(tmp_path / "out", "train")[:, 14].tolist() == [1, 1, 3, 3, 2, 2]


def test_avazu_hour_fields_for_known_dates(tmp_path: Path) -> None:
    hours = {"14102100": (0, 1, 0), "14102523": (23, 5, 1), "14102610": (10, 6, 1)}  # Tue, Sat, Sun
    h = np.array([int(k) for k in hours])
    assert np.stack(hour_codes(h), axis=1).tolist() == [list(v) for v in hours.values()]
    rows = [",".join(["1e3", "1", hour, *["x"] * 21]) + "\n" for hour in hours]
    raw = write(tmp_path / "a.csv", [",".join(AVAZU_COLUMNS) + "\n", *rows])
    schema = prepare(tmp_path / "out", avazu_format(), [raw], min_count=1, split=ALL_TRAIN)
    assert "id" not in schema.field_names and "hour" not in schema.field_names
    assert schema.field_names[-3:] == ["hour_of_day", "weekday", "is_weekend"]
    got = decode(tmp_path / "out", "train")
    assert got["hour_of_day"] == ["0", "23", "10"] and got["weekday"] == ["1", "5", "6"]
    assert got["is_weekend"] == ["0", "1", "1"]


def test_split_row_counts_follow_the_seeded_draw(tmp_path: Path) -> None:
    raw = write(tmp_path / "c.tsv", [criteo_row(str(i % 2), cats={1: str(i % 7)}) for i in range(1000)])
    schema = prepare(tmp_path / "out", criteo_format(), [raw], min_count=1, split=(0.8, 0.1, 0.1), seed=7)
    draw = np.searchsorted([0.8, 0.9], np.random.default_rng(7).random(1000), side="right")
    assert schema.rows == {s: int((draw == i).sum()) for i, s in enumerate(SPLITS)}


def test_same_seed_same_output_other_seed_differs(tmp_path: Path) -> None:
    raw = write(tmp_path / "c.tsv", [criteo_row(str(i % 2), cats={1: str(i % 7)}) for i in range(500)])
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare(tmp_path / name, criteo_format(), [raw], min_count=1, seed=seed)
    a, b, c = (shard_matrix(tmp_path / n, "test") for n in "abc")
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_block_boundaries_do_not_change_the_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [criteo_row(str(rng.integers(2)), {3: str(rng.integers(-3, 50))}, {5: f"{rng.integers(40):x}"})
             for _ in range(400)]
    raw = write(tmp_path / "c.tsv", lines)
    prepare(tmp_path / "big", criteo_format(), [raw], min_count=2)
    prepare(tmp_path / "small", criteo_format(), [raw], min_count=2, chunk_bytes=700)  # ~6 rows per chunk
    for split in SPLITS:
        assert np.array_equal(shard_matrix(tmp_path / "big", split), shard_matrix(tmp_path / "small", split))


def test_presplit_vocabulary_comes_from_train_only(tmp_path: Path) -> None:
    train = write(tmp_path / "tr.tsv", [criteo_row(cats={1: "seen"})] * 3)
    test = write(tmp_path / "te.tsv", [criteo_row(cats={1: "seen"}), criteo_row(cats={1: "only_in_test"})])
    schema = prepare(tmp_path / "out", criteo_format(), train=[train], test=[test], min_count=1)
    assert schema.rows == {"train": 3, "val": 0, "test": 2}
    assert decode(tmp_path / "out", "test")["C1"] == ["seen", None]


def test_encoder_reencodes_the_test_file_like_the_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    def rows(n: int) -> list[str]:
        return [criteo_row(str(rng.integers(2)), {1: str(rng.integers(-2, 300)), 2: ""},
                           {4: f"{rng.integers(30):x}", 9: ""}) for _ in range(n)]
    train, test = write(tmp_path / "tr.tsv", rows(300)), write(tmp_path / "te.tsv", rows(100))
    prepare(tmp_path / "out", criteo_format(), train=[train], test=[test], min_count=3)
    feats, labels = zip(*Encoder(tmp_path / "out").encode_file(test), strict=True)
    again = np.concatenate([np.concatenate(feats), np.concatenate(labels)[:, None]], axis=1)
    assert np.array_equal(again, shard_matrix(tmp_path / "out", "test"))


def test_gzip_input_gives_the_same_dataset(tmp_path: Path) -> None:
    lines = [criteo_row(str(i % 2), cats={1: str(i % 5)}) for i in range(200)]
    plain = write(tmp_path / "c.tsv", lines)
    with gzip.open(tmp_path / "c.tsv.gz", "wt") as f:
        f.write("".join(lines))
    prepare(tmp_path / "a", criteo_format(), [plain], min_count=1)
    prepare(tmp_path / "b", criteo_format(), [tmp_path / "c.tsv.gz"], min_count=1)
    for split in SPLITS:
        assert np.array_equal(shard_matrix(tmp_path / "a", split), shard_matrix(tmp_path / "b", split))


def test_csv_format_keeps_named_columns_only(tmp_path: Path) -> None:
    raw = write(tmp_path / "l.csv", ["y;junk;city;age\n", "1;x;paris;30\n", "0;y;\"ro;me\";-1\n", "1;z;paris;\n"])
    fmt = csv_format("y", ["city"], ["age"], delimiter=";")
    schema = prepare(tmp_path / "out", fmt, [raw], min_count=1, split=ALL_TRAIN)
    assert schema.field_names == ["age", "city"]
    got = decode(tmp_path / "out", "train")
    assert got["city"] == ["paris", "ro;me", "paris"] and got["age"] == ["11", "<0", ""]  # floor(ln 30^2) = 11
    assert shard_matrix(tmp_path / "out", "train")[:, -1].tolist() == [1, 0, 1]


def test_csv_unknown_column_names_column_and_file(tmp_path: Path) -> None:
    raw = write(tmp_path / "l.csv", ["y,city\n", "1,paris\n"])
    with pytest.raises(UnknownColumnError, match=r"l\.csv:1: no column 'town'"):
        prepare(tmp_path / "out", csv_format("y", ["town"], []), [raw])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fmt", "lines", "match"),
    [
        ("criteo", [criteo_row(), criteo_row(), criteo_row()[:-4] + "\n"], r"c\.raw:3: expected 40 columns, got 39"),
        ("criteo", [criteo_row(), criteo_row("2")], r"c\.raw:2: label 'label' is '2', not 0 or 1"),
        ("criteo", [criteo_row(ints={4: "1.5"})], r"c\.raw:1: column 'I4' is '1.5', not an integer"),
        ("criteo", [criteo_row(), "\n", criteo_row(ints={1: "x"})], r"c\.raw:3: column 'I1'"),
        ("avazu", [AVAZU_HEAD, AVAZU_OK, AVAZU_OK.replace("x", '"a,b"', 1), AVAZU_OK[:-3] + "\n"],
         r"c\.raw:4: expected 24 columns, got 23"),
        ("avazu", [AVAZU_HEAD, AVAZU_OK, AVAZU_OK.replace(",0,", ",yes,", 1)],
         r"c\.raw:3: label 'click' is 'yes'"),
        ("avazu", [AVAZU_HEAD, AVAZU_OK.replace("14102100", "141021")], r"c\.raw:2: column 'hour'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, fmt: str, lines: list[str], match: str) -> None:
    raw = write(tmp_path / "c.raw", lines)
    raw_format = criteo_format() if fmt == "criteo" else avazu_format()
    with pytest.raises(BadRowError, match=match):
        prepare(tmp_path / "out", raw_format, [raw])
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.raw"]  # no temporary folder left either


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match=r"e\.tsv: empty file"):
        prepare(tmp_path / "out", criteo_format(), [write(tmp_path / "e.tsv", [])])
    with pytest.raises(EmptyInputError, match=r"h\.csv: no data rows"):
        prepare(tmp_path / "out", avazu_format(), [write(tmp_path / "h.csv", [AVAZU_HEAD])])
    with pytest.raises(MissingInputError, match=r"nope\.tsv: no such file"):
        prepare(tmp_path / "out", criteo_format(), [tmp_path / "nope.tsv"])
    assert not (tmp_path / "out").exists()


def test_skip_mode_counts_bad_rows(tmp_path: Path) -> None:
    lines = [criteo_row(), criteo_row("7"), criteo_row(), "a\tb\n", criteo_row(ints={2: "q"}), criteo_row()]
    raw = write(tmp_path / "c.tsv", lines)
    schema = prepare(tmp_path / "out", criteo_format(), [raw], min_count=1, split=ALL_TRAIN, skip_bad=True)
    assert schema.bad_rows_skipped == 3 and schema.rows["train"] == 3
    assert Schema.load(tmp_path / "out").bad_rows_skipped == 3


def test_skip_mode_counts_malformed_rows_in_chunks_without_good_rows(tmp_path: Path) -> None:
    raw = write(tmp_path / "c.tsv", [criteo_row()] * 20 + ["a\tb\n"] * 30)
    schema = prepare(tmp_path / "out", criteo_format(), [raw], min_count=1, skip_bad=True, chunk_bytes=64)
    assert schema.bad_rows_skipped == 30 and sum(schema.rows.values()) == 20


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = write(tmp_path / "c.tsv", [criteo_row(cats={1: str(i)}) for i in range(50)])

    def boom(self: object, features: np.ndarray, labels: np.ndarray) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module.ShardWriter, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "out", criteo_format(), [raw], min_count=1)
    assert [p.name for p in tmp_path.iterdir()] == ["c.tsv"]


def test_existing_output_refused_unless_overwrite(tmp_path: Path) -> None:
    raw = write(tmp_path / "c.tsv", [criteo_row()] * 5)
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare(tmp_path / "out", criteo_format(), [raw], min_count=1)
    prepare(tmp_path / "out", criteo_format(), [raw], min_count=1, overwrite=True)
    assert Schema.load(tmp_path / "out").format == "criteo"


def test_presets_and_overrides() -> None:
    assert resolve_protocol("paper", "criteo", None, None) == (20, (0.72, 0.08, 0.2))
    assert resolve_protocol("bars", "avazu", None, None) == (2, (0.8, 0.1, 0.1))
    assert resolve_protocol("bars", "criteo", 5, (0.5, 0.25, 0.25)) == (5, (0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="split"):
        resolve_protocol("bars", "criteo", None, (0.5, 0.5, 0.5))


def test_provisional_ids_are_first_seen_order_across_blocks() -> None:
    d = ProvisionalDictionary()
    first = d.encode(pa.array(["b", "a", "b", ""]).dictionary_encode())
    second = d.encode(pa.array(["c", "a", "", "d"]).dictionary_encode())
    assert first.tolist() == [0, 1, 0, 2] and second.tolist() == [3, 1, 2, 4]
    assert d.values().to_pylist() == ["b", "a", "", "c", "d"]
    words = ["", "a", "ab", "ba", "abcdefgh", "abcdefghi", "a" * 40, "b" * 40, "é"]
    keys = string_keys(pa.array(words))
    assert len(set(keys.tolist())) == len(words)
    assert np.array_equal(string_keys(pa.array(words[::-1])), keys[::-1])  # a function of the value only
    assert np.array_equal(string_keys(pa.array(["x", *words]).slice(1)), keys)
    eights = ["", "abcdefgh", "", "01234567"]  # the all-8-bytes fast path gives the general path's keys
    assert np.array_equal(string_keys(pa.array(["x", *eights]).slice(1)), string_keys(pa.array([*eights, "a"]))[:4])
