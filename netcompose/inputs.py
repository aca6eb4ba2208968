"""Reading the files a topology is built from, bounded and confined.

netcompose runs as root, so a file name in a topology (an include, a template's include)
must not become a way to read the rest of the host: such files resolve, symbolic links
included, inside the topology's folder.  Every input is a regular file (never a FIFO, a
device such as /dev/zero, or a folder) of at most MAX_FILE_BYTES, checked before reading.

`-f -` names standard input (STDIN): read once, within the same bound; its position in
messages is `<stdin>:line:col`, and the files it pulls in are confined to the current folder
(as a topology's are to its own).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import Position, SpecError, excerpt

MAX_FILE_BYTES = 4 << 20      # one topology, fragment, template, .env, vars or plan file
STDIN = "<stdin>"             # the topology of `-f -`: a relative name, so its folder is the current one
_stdin_text: str | None = None   # read once: detection, loading and a reload all see the same text


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, symbolic links resolved, is `folder` or below it."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def read_text(path: Path | str, at: Position | None = None, confined_to: Path | None = None,
              limit: int = MAX_FILE_BYTES, name: str | None = None) -> str:
    """The text of a small regular file.  With `confined_to`, the file (after every
    symbolic link) must lie inside that folder.  `name` is how the user wrote it."""
    path = Path(path)
    if str(path) == STDIN and confined_to is None:   # an include is never standard input
        return _read_stdin(at, limit)
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
        data = _read_upto(fd, limit)
        if len(data) > limit:
            raise SpecError(at, f"{shown} grew past the limit of {limit} bytes while being read", "retry")
    finally:
        os.close(fd)
    return _decode(data, shown, at)


def _read_upto(fd: int, limit: int) -> bytes:
    """What fd holds, up to one byte past `limit` (the sign that there is more)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(data: bytes, shown: str, at: Position | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(at, f"{shown} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None


def _read_stdin(at: Position | None, limit: int) -> str:
    global _stdin_text
    if _stdin_text is None:
        if os.isatty(0):
            raise SpecError(at, "-f - reads the topology from standard input, which is a terminal",
                            "pipe or redirect the file in: netcompose plan -f - < topo.yaml")
        data = _read_upto(0, limit)
        if len(data) > limit:
            raise SpecError(at, f"{STDIN} is more than the limit of {limit} bytes",
                            "split it, or generate it with a template")
        _stdin_text = _decode(data, STDIN, at)
    return _stdin_text
