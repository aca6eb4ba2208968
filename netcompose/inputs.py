"""Reading the files a topology is built from, bounded and confined.

netcompose runs as root, so a file name in a topology (an include, a template's include)
must not become a way to read the rest of the host: such files resolve, symbolic links
included, inside the topology's folder.  Every input is a regular file (never a FIFO, a
device such as /dev/zero, or a folder) of at most MAX_FILE_BYTES, checked before reading.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import Position, SpecError, excerpt

MAX_FILE_BYTES = 4 << 20      # one topology, fragment, template, .env, vars or plan file


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, symbolic links resolved, is `folder` or below it."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def read_text(path: Path | str, at: Position | None = None, confined_to: Path | None = None,
              limit: int = MAX_FILE_BYTES, name: str | None = None) -> str:
    """The text of a small regular file.  With `confined_to`, the file (after every
    symbolic link) must lie inside that folder.  `name` is how the user wrote it."""
    path = Path(path)
    shown = excerpt(name if name is not None else str(path), 80)
    if confined_to is not None and not inside(path, confined_to):
        raise SpecError(at, f"{shown} is outside the topology's folder",
                        "keep included files inside the folder of the topology (no absolute paths, '..', "
                        "or symbolic links leading out)")
    try:
        # stat before open: opening a device (a watchdog, a tape) may already do something.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SpecError(at, f"{shown} is not a regular file", "name a plain file, not a FIFO, device or folder")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError(at, f"{shown}: no such file", "check the path (-f FILE names the topology)") from None
    except OSError as exc:
        raise SpecError(at, f"{shown}: cannot read: {exc.strerror}", "check the path and permissions") from None
    try:
        info = os.fstat(fd)   # the file opened may not be the one stat saw
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(at, f"{shown} is not a regular file", "name a plain file, not a FIFO, device or folder")
        if confined_to is not None and not inside(Path(f"/proc/self/fd/{fd}"), confined_to):
            raise SpecError(at, f"{shown} is outside the topology's folder", "keep included files inside it")
        if info.st_size > limit:
            raise SpecError(at, f"{shown} is {info.st_size} bytes, more than the limit of {limit}",
                            "split it, or generate it with a template")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise SpecError(at, f"{shown} grew past the limit of {limit} bytes while being read", "retry")
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(at, f"{shown} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
