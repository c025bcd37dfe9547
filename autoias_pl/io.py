"""Files a run writes, in one place: atomic writers (temp path, then rename) and the run folder.

Temporary files and folders are created with the user's usual permissions (the umask's, as `open` and
`mkdir` give them), not `tempfile`'s private 0600/0700: a renamed result is as readable as any other file.
A leaf module: it imports nothing from the package and no Lightning, so every layer may use it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _fresh(parent: Path, prefix: str, make: Callable[[Path], None]) -> Path:
    """`make(parent / <prefix><random>)` (it must fail with FileExistsError on a taken name); the new path."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            make(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no free temporary name {prefix}*")


def temp_file(parent: Path, prefix: str) -> Path:
    """A new empty file in `parent`, mode 0666 less the umask (tempfile.mkstemp's is 0600)."""
    return _fresh(parent, prefix, lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder in `parent`, mode 0777 less the umask (tempfile.mkdtemp's is 0700)."""
    return _fresh(parent, prefix, os.mkdir)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path` (the umask's mode).

    A failed or interrupted write leaves nothing at `path` and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent, f".{path.name}.")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


@contextmanager
def atomic_output_dir(output: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `output`; rename it to `output` only if the block completes.

    An interrupted or failed run leaves nothing at `output` (the temporary folder is removed), so a later
    step can never mistake a half-written dataset for a finished one.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(output.parent, f".{output.name}.tmp-")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)


def atomic_write_parquet(path: str | Path, table: Any) -> None:
    """Write the pyarrow `table` to `path` through a temporary file in the same folder and a rename."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """The JSON value in `path`; invalid JSON raises `error("<path>:<line>: invalid JSON (<why>)")`."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


def run_dir(trainer: Any) -> Path:
    """The folder a run writes its files to: the logger's log_dir, else the trainer's default_root_dir.

    Call it on every rank: `trainer.log_dir` is a broadcast under DDP (rank 0 alone would hang)."""
    return Path(trainer.log_dir or trainer.default_root_dir)
