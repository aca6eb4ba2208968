"""Files driver: /etc/netns/<ns> (a symbolic link to a shared folder of hosts and
resolv.conf), those shared folders, and per-namespace sysctls (/proc/sys)."""
from __future__ import annotations

import os
import re

from .. import names
from .. import resources as r
from ..plan import Action
from ..resources import HOST, Resource
from . import Outcome, Scope, namespaces

_MARKER = re.compile(r"^# netcompose project=(\S+) ")
NETNS_ETC = "/etc/netns"


_TMP = ".netcompose-tmp"


def _write_atomically(path: str, content: str | None, link_to: str | None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + _TMP
    if link_to is not None:
        try:
            os.symlink(link_to, path)  # atomic by itself when nothing is there yet
            return
        except FileExistsError:
            pass
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(link_to, tmp)
    else:
        with open(tmp, "w") as f:
            f.write(content)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


class FilesDriver:
    name = "files"

    def __init__(self, nss) -> None:
        self.nss = nss  # netlink.Namespaces: sysctls are read and written from inside the namespace

    def close(self) -> None:
        pass

    def observe(self, scope: Scope) -> list[Resource]:
        shared = names.shared_etc_dir(scope.project)
        paths = {z[5:] for z in scope.focus or () if z.startswith("file:")}
        if scope.focus is not None:
            entries = [f"{NETNS_ETC}/{z[3:]}" for z in scope.focus if z.startswith(f"ns:{scope.project}-")]
        else:
            entries = [path for name in _listdir(NETNS_ETC) if name.startswith(f"{scope.project}-")
                       and (path := f"{NETNS_ETC}/{name}") != shared]
            paths.update(f"{shared}/{group}/{name}" for group in _listdir(shared) if not group.endswith(_TMP)
                         for name in _listdir(f"{shared}/{group}") if not name.endswith(_TMP))
        paths.update(entries)
        out: list[Resource] = []
        for path in sorted(paths):
            try:
                if os.path.islink(path):  # ours when it points into our shared folder
                    target = os.readlink(path)
                    owner = scope.project if target.startswith(shared + "/") else None
                    out.append(r.file(path, owner=owner, link_to=target))
                    continue
                with open(path) as f:
                    content = f.read()
            except IsADirectoryError:  # a folder someone made where our link goes: a conflict
                out.append(r.file(path))
                continue
            except (FileNotFoundError, NotADirectoryError):
                continue
            mark = _MARKER.match(content)
            out.append(r.file(path, content, owner=mark.group(1) if mark else None))
        return out

    def observe_named(self, wanted: list[Resource], project: str) -> list[Resource]:
        """Sysctls cannot be listed as ours; read the ones the topology names."""
        out = []
        for res in wanted:
            if res.kind == "sysctl":
                value = self._read_sysctl(res.attrs["ns"], res.attrs["name"])
                if value is not None:
                    out.append(r.sysctl(res.attrs["ns"], res.attrs["name"], value, owner=project))
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
        for action in actions:
            a = action.resource.attrs
            try:
                if action.kind == "file":
                    self._apply_file(action.op, a)
                elif action.op != "delete":  # a sysctl has no "absent"; its namespace takes it away
                    self._in_ns(a["ns"], lambda: _write_sysctl(a["name"], a["value"]))
            except OSError as exc:
                outcome.errors[action.key] = f"{exc.strerror or exc} ({a.get('path') or a.get('name')})"
        return outcome

    @staticmethod
    def _apply_file(op: str, a: dict) -> None:
        if op == "delete":
            os.unlink(a["path"])
            try:  # a write that died halfway leaves its temporary file
                os.unlink(a["path"] + _TMP)
            except FileNotFoundError:
                pass
            folder = os.path.dirname(a["path"])
            while folder.startswith(NETNS_ETC + "/") and not os.listdir(folder):  # a shared folder emptied
                os.rmdir(folder)
                folder = os.path.dirname(folder)
        else:
            _write_atomically(a["path"], a["content"], a["link_to"])


def _write_sysctl(name: str, value: str) -> None:
    path = _sysctl_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"no sysctl {name} in this kernel", path)
    with open(path, "w") as f:
        f.write(value)
