"""One error convention for every command line (`autoias`, `autoias-data`, `autoias-serve`, demo, compare,
ablations): a known error is one line `<prog>: error: <what, where>` on stderr and exit status 2; anything
else keeps its traceback. A closed pipe (`autoias-data inspect DIR | head -1`) ends quietly.

A leaf module: it imports nothing of the package, so every layer may base its errors on `AutoIASError`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
EXIT_ERROR = 2  # argparse's status for a usage error: the same for every known error
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE


class AutoIASError(Exception):
    """Base of the project's own errors: bad input a user can fix (a file, line, field or option at fault)."""


class ConfigError(AutoIASError, ValueError):
    """A bad option or setting (a non-positive size, fractions that do not sum to 1): names the option."""


# what a user can fix: the project's errors, a missing input, an existing output
KNOWN_ERRORS: tuple[type[BaseException], ...] = (AutoIASError, FileNotFoundError, FileExistsError)


def run_main(prog: str, fn: Callable[[], T], known: tuple[type[BaseException], ...] = ()) -> T:
    """Run `fn()` (a command's body) under the convention; returns its value.

    A `KNOWN_ERRORS` (or `known`) error prints `<prog>: error: <message>` and exits 2; a closed stdout exits
    quietly (141, as after SIGPIPE); any other exception propagates with its traceback.
    """
    try:
        result = fn()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit (where it is a traceback)
        return result
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # the exit flush must not fail again
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_BROKEN_PIPE) from None
    except KNOWN_ERRORS + known as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def main_status(prog: str, fn: Callable[[], object], known: tuple[type[BaseException], ...] = ()) -> int:
    """`run_main` for an entry point that returns its exit status (`sys.exit(main())`): 0 or the status."""
    try:
        run_main(prog, fn, known)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0
