"""Files driver: /etc/netns/<ns> (a symbolic link to a shared folder of hosts and
resolv.conf), those shared folders, and per-namespace sysctls (/proc/sys).

Nothing under /etc/netns is reached through a symbolic link netcompose did not make:
folders are opened one component at a time with O_DIRECTORY|O_NOFOLLOW and used through
their descriptors (openat-style calls), files are opened with O_NOFOLLOW, and a file is
written to a temporary name made with O_EXCL (a random name: nothing can be planted at
it) in the project's own folder, then renamed into place, which replaces a link instead
of following it.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from contextlib import contextmanager
from typing import Iterator

from .. import resources as r
from .. import statefiles
from ..apply import STATE_DIR
from ..compile import FILE_MARKER
from ..errors import ConflictError
from ..names import NETNS_ETC, SHARED_ETC, shared_etc_dir
from ..plan import Action
from ..resources import HOST, Resource
from . import Outcome, Scope, namespaces

_MARKER = re.compile(r"^# netcompose project=(\S+) ")
_TMP = ".tmp-"   # temporary files, in the project's folder (no group or namespace starts with ".")
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)


class Folders:
    """Descriptors of folders under /etc/netns, opened without following links, for one batch."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def open(self, path: str, create: bool) -> int | None:
        """The folder `path` (/etc/netns or below); None when absent and not `create`.
        OSError ELOOP/ENOTDIR when a component is a link or a file."""
        fd = self.fds.get(path)
        if fd is not None:
            return fd
        if path == NETNS_ETC:
            parent, name = os.open("/etc", statefiles.DIR_FLAGS & ~os.O_NOFOLLOW), "netns"
        else:
            parent_path, _, name = path.rpartition("/")
            parent = self.open(parent_path, create)
            if parent is None:
                return None
        try:
            for _attempt in range(3):  # another project may remove an empty shared folder meanwhile
                try:
                    fd = os.open(name, statefiles.DIR_FLAGS, dir_fd=parent)
                    break
                except FileNotFoundError:
                    if not create:
                        return None
                    try:
                        os.mkdir(name, 0o755, dir_fd=parent)
                    except FileExistsError:
                        pass
            else:
                raise OSError(errno.ENOENT, f"{path} keeps disappearing")
        except OSError as exc:
            if exc.errno in _NOT_A_FOLDER:
                raise OSError(exc.errno, f"{path} is a symbolic link or a file, not a folder netcompose made; "
                                         "netcompose never writes through it: remove it") from None
            raise
        finally:
            if path == NETNS_ETC:
                os.close(parent)
        self.fds[path] = fd
        return fd

    def forget(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)


@contextmanager
def _folders() -> Iterator[Folders]:
    folders = Folders()
    try:
        yield folders
    finally:
        folders.close()


def _observed_folder(folders: Folders, path: str) -> int | None:
    """A folder to read; a link or file in its place is a conflict, reported before any change."""
    try:
        return folders.open(path, create=False)
    except OSError as exc:
        if exc.errno in _NOT_A_FOLDER:
            raise ConflictError(exc.strerror) from None
        raise


def _read(folders: Folders, path: str, project: str) -> Resource | None:
    """The file, link or foreign entry at `path`, read without following links."""
    folder, _, name = path.rpartition("/")
    fd = _observed_folder(folders, folder)
    if fd is None:
        return None
    try:
        target = os.readlink(name, dir_fd=fd)  # ours when it points into our shared folder
        ours = target.startswith(shared_etc_dir(project) + "/") or _made_before_the_move(folders, target, project)
        return r.file(path, owner=project if ours else None, link_to=target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a link
            raise
    try:
        file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):  # a folder where our link goes, a FIFO, ...
        os.close(file_fd)                            # someone else's: a conflict if we need the name
        return r.file(path)
    with os.fdopen(file_fd, "rb") as f:
        try:
            content = f.read().decode()
        except UnicodeDecodeError:
            return r.file(path)
    mark = _MARKER.match(content)
    return r.file(path, content, owner=mark.group(1) if mark else None)


def legacy_etc_dir(project: str) -> str:
    """Where netcompose kept a project's shared files before `.netcompose/` (see names.shared_etc_dir)."""
    return f"{NETNS_ETC}/{project}-.etc"


def _made_before_the_move(folders: Folders, target: str, project: str) -> bool:
    """A link an older netcompose made: it points at one group folder of the project's old
    shared folder (a real folder), which holds a file of ours that names that group."""
    folder, _, group = target.rpartition("/")
    if folder != legacy_etc_dir(project) or not group or group.startswith("."):
        return False
    entries = _legacy_listdir(folders, target)
    marker = FILE_MARKER.format(project=project, group=group) + "\n"
    return any(res.owner == project and (res.attrs.get("content") or "").startswith(marker)
               for name in entries if (res := _read(folders, f"{target}/{name}", project)) is not None)


def _listdir(folders: Folders, path: str) -> list[str]:
    """Entries of a folder (without following a link at its place); [] when absent."""
    fd = _observed_folder(folders, path)
    return os.listdir(fd) if fd is not None else []


def _legacy_listdir(folders: Folders, path: str) -> list[str]:
    """Entries of an older netcompose's folder; none when a link or a file is there (not ours)."""
    try:
        return _listdir(folders, path)
    except ConflictError:
        return []


def _sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


class SysctlRecord:
    """The value each sysctl of an adopted namespace had before netcompose first set it
    (`<state>/<project>/sysctls.json`), written before the sysctl is: `down` puts it back."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[tuple[str, str], str]:
        try:
            return {(ns, name): value for ns, name, value in statefiles.read_json(self.path) or ()}
        except (ValueError, TypeError):
            return {}

    def write(self, entries: dict[tuple[str, str], str]) -> None:
        if entries:
            statefiles.write_json(self.path, sorted([ns, name, value] for (ns, name), value in entries.items()),
                                  sync=True)
        else:
            statefiles.remove(self.path)


class FilesDriver:
    name = "files"

    def __init__(self, nss) -> None:
        self.nss = nss  # netlink.Namespaces: sysctls are read and written from inside the namespace
        self.record: SysctlRecord | None = None   # of the project observed last

    def close(self) -> None:
        pass

    def observe(self, scope: Scope) -> list[Resource]:
        out = self._observe_files(scope)
        self.record = SysctlRecord(os.path.join(STATE_DIR, scope.project, "sysctls.json"))
        for (ns, name) in self.record.read():
            if ns != HOST and scope.sees(f"ns:{ns}") and (value := self._read_sysctl(ns, name)) is not None:
                out.append(r.sysctl(ns, name, value, owner=scope.project, restore=True))
        return out

    def _observe_files(self, scope: Scope) -> list[Resource]:
        shared = shared_etc_dir(scope.project)
        paths = {z[5:] for z in scope.focus or () if z.startswith("file:")}
        with _folders() as folders:
            if scope.focus is not None:
                paths.update(f"{NETNS_ETC}/{z[3:]}" for z in scope.focus if z.startswith(f"ns:{scope.project}-"))
            else:
                legacy = legacy_etc_dir(scope.project)
                paths.update(f"{NETNS_ETC}/{name}" for name in _listdir(folders, NETNS_ETC)
                             if name.startswith(f"{scope.project}-") and f"{NETNS_ETC}/{name}" != legacy)
                _observed_folder(folders, SHARED_ETC)  # a link or file there is a conflict
                # An older netcompose's shared files: those with our marker are ours, and go.
                for group in _legacy_listdir(folders, legacy):
                    paths.update(f"{legacy}/{group}/{name}" for name in _legacy_listdir(folders, f"{legacy}/{group}"))
                for group in _listdir(folders, shared):
                    folder = f"{shared}/{group}"
                    if group.startswith(_TMP) or stat.S_ISREG(os.lstat(group, dir_fd=folders.fds[shared]).st_mode):
                        continue  # a file where a group's folder goes: not ours; writing there fails
                    paths.update(f"{folder}/{name}" for name in _listdir(folders, folder))
            return [res for path in sorted(paths) if (res := _read(folders, path, scope.project)) is not None]

    def observe_named(self, wanted: list[Resource], project: str) -> list[Resource]:
        """Sysctls cannot be listed as ours; read the ones the topology names."""
        out = []
        for res in wanted:
            if res.kind == "sysctl":
                value = self._read_sysctl(res.attrs["ns"], res.attrs["name"])
                if value is not None:
                    out.append(r.sysctl(res.attrs["ns"], res.attrs["name"], value, owner=project,
                                        device=r.sysctl_device(res), restore=res.attrs.get("restore", False)))
        return out

    def _in_ns(self, ns: str, fn):
        if ns == HOST:
            return fn()
        with namespaces.entered(self.nss.fd(ns)):
            return fn()

    def _read_sysctl(self, ns: str, name: str) -> str | None:
        if ns != HOST and not self.nss.exists(ns):
            return None

        def read() -> str | None:
            try:
                with open(_sysctl_path(name)) as f:
                    return f.read().strip()
            except FileNotFoundError:
                return None
        return self._in_ns(ns, read)

    def apply(self, actions: list[Action]) -> Outcome:
        outcome = Outcome()
        with _folders() as folders:
            for action in actions:
                a = action.resource.attrs
                try:
                    if action.kind == "file":
                        self._apply_file(folders, action.op, a)
                    elif a.get("restore"):
                        self._apply_restorable(action)
                    elif action.op != "delete":  # a sysctl has no "absent"; its namespace takes it away
                        self._in_ns(a["ns"], lambda: _write_sysctl(a["name"], a["value"]))
                except OSError as exc:
                    outcome.errors[action.key] = f"{exc.strerror or exc} ({a.get('path') or a.get('name')})"
        return outcome

    def _apply_restorable(self, action: Action) -> None:
        """A sysctl of an adopted namespace: record the value found before the first write;
        deleting it writes that value back."""
        a = action.resource.attrs
        assert self.record is not None   # set by observe, which every plan starts with
        entries, where = self.record.read(), (a["ns"], a["name"])
        if action.op == "delete":
            if where in entries:
                self._in_ns(a["ns"], lambda: _write_sysctl(a["name"], entries[where]))
                del entries[where]
                self.record.write(entries)
            return
        if where not in entries:
            previous = self._read_sysctl(a["ns"], a["name"])
            if previous is not None:
                entries[where] = previous
                self.record.write(entries)
        self._in_ns(a["ns"], lambda: _write_sysctl(a["name"], a["value"]))

    @staticmethod
    def _apply_file(folders: Folders, op: str, a: dict) -> None:
        path = a["path"]
        folder, _, name = path.rpartition("/")
        if op == "delete":
            fd = folders.open(folder, create=False)
            if fd is not None:
                os.unlink(name, dir_fd=fd)
                _remove_emptied(folders, folder)
            return
        fd = folders.open(folder, create=True)
        if a["link_to"] is not None:
            try:
                os.symlink(a["link_to"], name, dir_fd=fd)  # atomic by itself when nothing is there yet
                return
            except FileExistsError:
                pass
        # Temporary copies go in the project's folder: the parent of a file's group folder,
        # or of the group folder a link points to.
        tmp_folder = os.path.dirname(a["link_to"] if a["link_to"] is not None else folder)
        if _project_folder_of(tmp_folder) != tmp_folder:
            raise OSError(errno.EINVAL, f"{path}: no project folder for its temporary copy")
        _replace(folders, tmp_folder, a["content"], a["link_to"], fd, name)


def _replace(folders: Folders, tmp_folder: str, content: str | None, link_to: str | None,
             fd: int, name: str) -> None:
    """Write a temporary file (or link) under a random name made with O_EXCL, then rename it
    over `name` in the folder `fd`: atomic, and a link found at `name` is replaced, not followed."""
    import secrets   # only a write needs it (a start-up spares its imports)
    tmp_fd = folders.open(tmp_folder, create=True)
    tmp = f"{_TMP}{secrets.token_hex(8)}"
    if link_to is not None:
        os.symlink(link_to, tmp, dir_fd=tmp_fd)
    else:
        file_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                          dir_fd=tmp_fd)
        try:
            with os.fdopen(file_fd, "w") as f:
                f.write(content or "")
        except OSError:
            os.unlink(tmp, dir_fd=tmp_fd)
            raise
    try:
        os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=fd)
    except OSError:
        os.unlink(tmp, dir_fd=tmp_fd)
        raise


def _project_folder_of(path: str) -> str | None:
    """The project's folder that `path` is or is in: `.netcompose/<project>`, or the
    `<project>-.etc` of an older netcompose."""
    parts = path[len(NETNS_ETC) + 1:].split("/") if path.startswith(NETNS_ETC + "/") else []
    if len(parts) >= 2 and f"{NETNS_ETC}/{parts[0]}" == SHARED_ETC:
        return f"{SHARED_ETC}/{parts[1]}"
    if parts and parts[0].endswith("-.etc"):
        return f"{NETNS_ETC}/{parts[0]}"
    return None


def _remove_emptied(folders: Folders, folder: str) -> None:
    """Remove the shared folders a delete left empty: the group's, then the project's (with
    temporary files a killed run left there), then /etc/netns/.netcompose."""
    top = _project_folder_of(folder)
    if top is None:
        return
    while True:
        fd = folders.open(folder, create=False)
        if fd is None:
            return
        left = os.listdir(fd)
        if folder == top:
            for name in [n for n in left if n.startswith(_TMP)]:
                os.unlink(name, dir_fd=fd)
                left.remove(name)
        if left:
            return
        folders.forget(folder)
        parent, _, name = folder.rpartition("/")
        os.rmdir(name, dir_fd=folders.open(parent, create=False))
        if folder == top:
            break
        folder = parent
    if parent == SHARED_ETC:
        try:
            os.rmdir(".netcompose", dir_fd=folders.open(NETNS_ETC, create=False))
        except OSError as exc:  # another project's folder is there
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        folders.forget(SHARED_ETC)


def remove_empty_folders(project: str) -> None:
    """After the project's last file is gone: its empty folders under /etc/netns/.netcompose
    (a run killed between making a group's folder and writing its file leaves one that no
    file resource stands for).  A folder holding anything but our temporary files stays."""
    shared = shared_etc_dir(project)
    with _folders() as folders:
        try:
            groups = _listdir(folders, shared)
        except ConflictError:
            return   # a link or file where the project's folder goes: not ours
        for group in groups:
            mode = os.lstat(group, dir_fd=folders.fds[shared]).st_mode
            if stat.S_ISDIR(mode) and not group.startswith(_TMP):
                _remove_emptied(folders, f"{shared}/{group}")
        if folders.open(shared, create=False) is not None:
            _remove_emptied(folders, shared)


def _write_sysctl(name: str, value: str) -> None:
    path = _sysctl_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"no sysctl {name} in this kernel", path)
    with open(path, "w") as f:
        f.write(value)
