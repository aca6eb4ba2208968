"""Errors users see.  Each carries its exit code; the CLI prints one line, no traceback."""
from __future__ import annotations

from typing import NamedTuple

EXIT_OK, EXIT_FAILURE, EXIT_CHANGES, EXIT_INVALID, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as shells report a process Ctrl-C ended


EXCERPT_CHARS = 40


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A value quoted for an error message, cut short: a message never carries a whole
    line of a file (which may not even be the user's: an include pointing elsewhere)."""
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text[:limit])
    return shown[:-1] + "..." + shown[-1] if len(text) > limit else shown


def shorten(text: str, limit: int = 80) -> str:
    """Free text (a parser's complaint) cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


class NetcomposeError(Exception):
    exit_code = EXIT_FAILURE


class Position(NamedTuple):  # a tuple: the loader makes one per node of the file
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(NetcomposeError):
    """Invalid input: a file position, what is wrong, and how to fix it."""

    exit_code = EXIT_INVALID

    def __init__(self, position: Position | None, problem: str, fix: str = ""):
        # Bounded, whatever a caller quoted: a message never carries a whole file.
        problem, fix = shorten(problem, 400), shorten(fix, 300)
        self.position, self.problem, self.fix = position, problem, fix
        where = f"{position}: " if position else ""
        text = f"{where}{problem}" + (f"; {fix}" if fix else "")
        # Values from the file may hold line breaks; the error stays on one line.
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))


class ConflictError(NetcomposeError):
    """A host object with one of our names exists and is not ours."""


class ApplyError(NetcomposeError):
    pass


class Interrupted(ApplyError):
    """Ctrl-C during an apply: rolled back (exit 130, as a shell reports SIGINT)."""

    exit_code = EXIT_INTERRUPTED


class LockTimeout(NetcomposeError):
    exit_code = EXIT_LOCKED


class StalePlan(NetcomposeError):
    pass


class UnsupportedError(NetcomposeError):
    """The kernel or a service lacks a feature the topology asks for."""
