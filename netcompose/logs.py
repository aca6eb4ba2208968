"""`netcompose logs`: the containers' logs, Compose-style, one colour-coded prefix each.

Every line in a log starts with the time the log writer read it (see logwriter.py), so
the logs of several containers interleave in time order.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import statefiles
from .drivers.processes import LOG_KEEP, log_path

COLOURS = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]   # Compose's order, as ANSI codes


@dataclass
class Line:
    container: str
    stamp: str
    text: str


def parse(container: str, raw: bytes) -> Line:
    stamp, _, text = raw.decode(errors="replace").rstrip("\n").partition(" ")
    return Line(container, stamp, text)


def history(project: str, container: str) -> list[Line]:
    """Every kept line of a container, oldest first (rotated files included)."""
    path = log_path(project, container)
    lines: list[Line] = []
    for name in [f"{path}.{i}" for i in range(LOG_KEEP, 0, -1)] + [path]:
        f = statefiles.open_file(name)   # a link planted in the log folder is never followed
        if f is not None:
            with f:
                lines.extend(parse(container, raw) for raw in f)
    return lines


@dataclass
class _Followed:
    container: str
    path: str
    inode: int | None = None
    offset: int = 0
    pending: bytes = field(default=b"")

    def read(self) -> list[Line]:
        """Complete lines written since the last read; starts over when the log rotated."""
        f = statefiles.open_file(self.path)
        if f is None:
            return []
        with f:
            stat = os.fstat(f.fileno())
            if stat.st_ino != self.inode or stat.st_size < self.offset:
                self.inode, self.offset, self.pending = stat.st_ino, 0, b""
            if stat.st_size == self.offset:
                return []
            f.seek(self.offset)
            data = self.pending + f.read(stat.st_size - self.offset)
        self.offset = stat.st_size
        *complete, self.pending = data.split(b"\n")
        return [parse(self.container, raw) for raw in complete]


def follow(project: str, containers: list[str], stop: Callable[[], bool], interval: float = 0.2) -> Iterator[Line]:
    """New lines as they are written, until `stop()`."""
    followed = []
    for container in containers:
        f = _Followed(container, log_path(project, container))
        opened = statefiles.open_file(f.path)
        if opened is not None:   # from the end of what is there already
            with opened:
                stat = os.fstat(opened.fileno())
                f.inode, f.offset = stat.st_ino, stat.st_size
        followed.append(f)
    while not stop():
        batch = sorted((line for f in followed for line in f.read()), key=lambda line: line.stamp)
        yield from batch
        if not batch:
            time.sleep(interval)


class Printer:
    def __init__(self, containers: list[str], timestamps: bool, colour: bool, out=sys.stdout) -> None:
        self.width = max((len(c) for c in containers), default=0)
        self.colours = {c: COLOURS[i % len(COLOURS)] for i, c in enumerate(containers)}
        self.timestamps, self.colour, self.out = timestamps, colour, out

    def __call__(self, line: Line) -> None:
        prefix = f"{line.container:<{self.width}}  |"
        if self.colour:
            prefix = f"\033[{self.colours[line.container]}m{prefix}\033[0m"
        text = f"{line.stamp} {line.text}" if self.timestamps else line.text
        self.out.write(f"{prefix} {text}\n")
        self.out.flush()


def show(project: str, containers: list[str], *, tail: int | None, timestamps: bool, colour: bool,
         follow_until: Callable[[], bool] | None = None) -> None:
    """Print the logs (the last `tail` lines of each container), then follow them while
    `follow_until` is given and returns False."""
    printer = Printer(containers, timestamps, colour)
    lines: list[Line] = []
    for container in containers:
        kept = history(project, container)
        lines.extend(kept[-tail:] if tail is not None and tail > 0 else [] if tail == 0 else kept)
    for line in sorted(lines, key=lambda line: line.stamp):
        printer(line)
    if follow_until is not None:
        for line in follow(project, containers, follow_until):
            printer(line)
