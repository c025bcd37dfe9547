"""Damaged copies of a parquet shard (truncated, a junk footer, junk data pages): each must be one error line."""

from __future__ import annotations

from pathlib import Path


def truncate(path: Path) -> Path:
    """Keep the first half of the file's bytes (a copy that stopped half way)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def break_footer(path: Path) -> Path:
    """Overwrite the footer's metadata (between the data pages and `<length>PAR1`) with junk."""
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[-8:-4], "little")
    data[-8 - length : -8] = b"\xab" * length
    path.write_bytes(bytes(data))
    return path


def break_pages(path: Path) -> Path:
    """Overwrite the first data pages (the footer stays valid: the damage shows only when rows are read)."""
    data = bytearray(path.read_bytes())
    data[4:400] = b"\x07" * 396
    path.write_bytes(bytes(data))
    return path


DAMAGE = {"truncated": truncate, "footer": break_footer, "pages": break_pages}
