"""What the three CLIs share: one-line errors with exit code 2, and argument types.

Every mistake a user can make — a bad argument, a config or checkpoint the library refuses
(:class:`~shan.errors.ShanError`), a path that cannot be read or written (``OSError``) — ends the
program with exactly one line ``prog: error: <message>`` on stderr and exit code 2. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from shan.errors import ShanError

EXIT_USAGE = 2


def one_line(err: BaseException, limit: int = 500) -> str:
    """``err``'s message on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (argparse prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def run(prog: str, work: Callable[[], int]) -> int:
    """Run ``work()``; a :class:`ShanError` or ``OSError`` becomes one line and exit code 2."""
    try:
        return work()
    except (ShanError, OSError) as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


__all__ = ["EXIT_USAGE", "Parser", "one_line", "positive_int", "run"]
