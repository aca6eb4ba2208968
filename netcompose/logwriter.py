"""Writes one container's output to its log, a timestamp on every line, rotating by size.

Run as its own small process (`python3 -I -S logwriter.py LOG MAX_BYTES KEEP`) reading the
container process's stdout and stderr from a pipe: it exits when the process and all its
children have closed the pipe.  Imports nothing from netcompose, so it starts in
milliseconds and holds little memory.
"""
from __future__ import annotations

import os
import sys
import time


def stamp() -> bytes:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode() + b".%06dZ " % int(now % 1 * 1e6)


def rotate(path: str, keep: int) -> None:
    """LOG → LOG.1 → ... → LOG.KEEP; the oldest is dropped."""
    for i in range(keep, 0, -1):
        older = f"{path}.{i - 1}" if i > 1 else path
        if os.path.exists(older):
            os.replace(older, f"{path}.{i}")


def open_log(path: str):
    """Appending, never through a link planted where the log goes (this runs apart from
    netcompose, with nothing but the standard library)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    return os.fdopen(fd, "ab", buffering=0)


def run(path: str, max_bytes: int, keep: int, source) -> None:
    log = open_log(path)
    size = log.tell()
    pending = b""
    while True:
        chunk = os.read(source.fileno(), 65536)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        now = stamp()
        out = b""
        for line in lines:
            entry = now + line + b"\n"
            if size + len(out) + len(entry) > max_bytes and size + len(out):
                log.write(out)
                log.close()
                rotate(path, keep)
                log, size, out = open_log(path), 0, b""
            out += entry
        log.write(out)
        size += len(out)
    if pending:
        log.write(stamp() + pending + b"\n")
    log.close()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.stdin)
