"""A rows / MB progress bar for long preparation passes: rich on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from types import TracebackType


class Progress:
    """Context manager: `update(rows, bytes_done)` advances a bar over `total_bytes` of raw input."""

    def __init__(self, description: str, total_bytes: int, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.description, self.total_bytes = description, total_bytes
        self.rows = 0
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f} MB"),
                TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(), transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total_bytes / 1e6, rows=0)
        return self

    def update(self, rows: int, bytes_done: int) -> None:
        """Add `rows` processed rows; `bytes_done` is the absolute count of raw bytes consumed."""
        self.rows += rows
        if self._bar is not None:
            self._bar.update(self._task, completed=bytes_done / 1e6, rows=self.rows)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
