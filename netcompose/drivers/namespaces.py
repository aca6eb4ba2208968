"""Named network namespaces, created and entered in-process.

`ip netns add` and pyroute2's NetNS cost a process each; unshare/setns in the calling
thread cost microseconds.  Only the calling thread changes namespace, and every entry
returns to the original namespace before control leaves this module.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_SHARED, MNT_DETACH = 4096, 16384, 1 << 20, 2
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def own_netns_fd() -> int:
    return os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace open at `fd`."""
    home = own_netns_fd()
    try:
        setns(fd)
        yield
    finally:
        setns(home)
        os.close(home)


def made_in_each(fds: dict[str, int], make: Callable[[], T]) -> dict[str, T]:
    """`make()` called inside each namespace open in `fds` (name → fd), by name.  The thread
    goes from one namespace straight to the next and home once at the end: one setns per
    namespace instead of two (and one descriptor of home, not one each), for the sockets of
    a thousand sandboxes.  A namespace that cannot be entered is left out."""
    made: dict[str, T] = {}
    home = own_netns_fd()
    try:
        for name, fd in fds.items():
            try:
                setns(fd)
                made[name] = make()
            except OSError:
                continue
    finally:
        setns(home)
        os.close(home)
    return made


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so bind mounts propagate."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None),
           "bind /run/netns")
    _check(_libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")


_run_dir_ready = False


def create(name: str, mark: str = "") -> None:
    """A named namespace: a file in /run/netns with the namespace bind-mounted on it.  The
    file holds `mark` (hidden by the mount), so a file left by a create that died before its
    mount is known as ours; any other file there is someone else's and stays."""
    global _run_dir_ready
    if not _run_dir_ready:
        _ensure_run_dir()
        _run_dir_ready = True
    path = netns_path(name)
    if os.path.lexists(path) and not is_namespace(path):
        if not mark or _placeholder_text(path) != mark:
            raise FileExistsError(errno.EEXIST, f"{path} is a file netcompose did not make; remove it or rename "
                                  "the container")
        os.unlink(path)
    _place_marked_file(path, mark)
    home = own_netns_fd()
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            _check(_libc.mount(source, path.encode(), b"none", MS_BIND, None), f"mount {path}")
        finally:
            setns(home)
    except OSError:
        os.unlink(path)
        raise
    finally:
        os.close(home)


def _place_marked_file(path: str, mark: str) -> None:
    """Make the placeholder file at `path` already holding `mark`: it is written unnamed
    (O_TMPFILE) and then linked in, so a kill -9 at any moment leaves either no file or a
    marked one, never an empty file nobody can prove ours.  Fails if `path` exists."""
    try:
        fd = os.open(os.path.dirname(path), os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o444)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd = None   # a file system without unnamed files: create, then write (a small window)
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        try:
            os.write(fd, mark.encode())
        finally:
            os.close(fd)
        return
    try:
        os.write(fd, mark.encode())
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the unnamed file; os.link takes
        # that path only when given a directory descriptor (else it calls plain link()).
        fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(fd), path, src_dir_fd=fds, follow_symlinks=True)
        finally:
            os.close(fds)
    finally:
        os.close(fd)


def _placeholder_text(path: str) -> str | None:
    """What a bare regular file in /run/netns says (at most a mark's length)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 512).decode(errors="replace")
    finally:
        os.close(fd)


_nsfs_dev: int | None = None


def is_namespace(path: str) -> bool:
    """True when `path` is a namespace (on nsfs), not a bare file."""
    return on_nsfs(os.stat(path))


def on_nsfs(stat: os.stat_result) -> bool:
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    return stat.st_dev == _nsfs_dev


def delete(name: str) -> None:
    """Unmount and remove a named namespace; the kernel frees its devices asynchronously."""
    path = netns_path(name)
    _libc.umount2(path.encode(), MNT_DETACH)
    os.unlink(path)


def list_named() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def open_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def inode(path: str) -> int:
    return os.stat(path).st_ino
