"""netcompose's own files: records under /run/netcompose, logs under /var/log/netcompose.

Read and written without following a symbolic link anywhere below netcompose's own top
folder: every folder is opened with O_DIRECTORY|O_NOFOLLOW and used by descriptor, files
with O_NOFOLLOW, temporary copies under random names with O_EXCL.  A link planted at one
of these paths (or at a temporary name) is never followed: reads see nothing, writes fail.
The system's part of a path (/run, /var/log) is followed as the system made it.
"""
from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

TOP = "netcompose"          # our top folder's name: /run/netcompose, /var/log/netcompose
# A folder of ours, never a link in its place (the files driver opens /etc/netns alike).
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _split(path: str) -> tuple[str, list[str]]:
    """(the system's part, our folders below it) of a file's folder."""
    parts = os.path.abspath(os.path.dirname(path)).split("/")[1:]
    top = parts.index(TOP) if TOP in parts else len(parts)
    return "/" + "/".join(parts[:top]), parts[top:]


def _private(fd: int) -> bool:
    """A folder of this user that nobody else may write."""
    st = os.fstat(fd)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


@contextmanager
def folder(path: str, create: bool = False, mode: int = 0o755, private: bool = False) -> Iterator[int | None]:
    """A descriptor of `path`'s folder, or None when it (or a link in its place) is not a
    folder we can use; `private`: nor when one of our folders on the way belongs to someone
    else or others may write it (what is read from there is trusted)."""
    base, ours = _split(path)
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        for part in ours:
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:
                child = -1
            os.close(fd)
            fd = child
            if fd >= 0 and private and not _private(fd):
                os.close(fd)
                fd = -1
            if fd < 0:
                yield None
                return
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)


def open_file(path: str, private: bool = False) -> BinaryIO | None:
    """Our regular file at `path`, open for reading; None when it is missing, or a link,
    FIFO or device is in its place; `private` as for `folder`."""
    with folder(path, private=private) as dirfd:
        if dirfd is None:
            return None
        try:
            fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dirfd)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")


def read_bytes(path: str) -> tuple[os.stat_result, bytes] | None:
    f = open_file(path)
    if f is None:
        return None
    with f:
        return os.fstat(f.fileno()), f.read()


def read_json(path: str) -> Any:
    """The file's JSON, or None when it is missing, unreadable, a link or not JSON."""
    found = read_bytes(path)
    if found is None:
        return None
    try:
        return json.loads(found[1])
    except ValueError:
        return None


def write_text(path: str, text: str | bytes, sync: bool = False, mode: int = 0o644, private: bool = False) -> None:
    """Replace the file at once (a temporary copy renamed over it); `sync` makes it durable
    before the rename, for records a crash must not lose; `private` as for `folder`."""
    with folder(path, create=True, mode=0o700 if private else 0o755, private=private) as dirfd:
        if dirfd is None:
            raise OSError(f"{os.path.dirname(path)} is not a folder of netcompose's (a link or a file is there)")
        name = os.path.basename(path)
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dirfd)
        try:
            with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
                f.write(text)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dirfd)
            except OSError:
                pass
            raise


def write_json(path: str, data: Any, sync: bool = False) -> None:
    # The data has no cycles to look for; json.dumps is the C encoder, json.dump is not.
    write_text(path, json.dumps(data, check_circular=False), sync=sync)


def remove(path: str) -> None:
    with folder(path) as dirfd:
        if dirfd is not None:
            try:
                os.unlink(os.path.basename(path), dir_fd=dirfd)
            except FileNotFoundError:
                pass


def make_folder(path: str, mode: int = 0o755) -> None:
    """Create `path` (and our folders above it) as real folders, or fail."""
    with folder(os.path.join(path, "."), create=True, mode=mode) as dirfd:
        if dirfd is None:
            raise OSError(f"{path} is not a folder of netcompose's (a link or a file is there)")


def names_in(path: str) -> list[str]:
    """The entries of our folder `path` (none when it is missing or a link)."""
    with folder(os.path.join(path, ".")) as dirfd:
        return [] if dirfd is None else os.listdir(dirfd)
