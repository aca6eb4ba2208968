"""Proxies driver: the userland relays of ports published on `[::1]` (see portproxy.py).

Each relay is a process of its own (a new session, so it outlives the `up` that started
it), recorded in `/run/netcompose/<project>/proxies/`: its pid, its start time (so a
recycled pid is never taken for it, read as for declared processes) and what it relays.
The process carries its own mark too, in its environment (`NETCOMPOSE_RELAY=<project>/<name>`):
a record alone never makes netcompose signal a process.  A relay whose process is gone is
not observed, so the next `up` starts it again; `down` stops it.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from .. import resources as r
from .. import statefiles
from ..apply import STATE_DIR
from ..plan import Action
from ..resources import Resource
from . import Outcome, Scope
from .processes import alive, read_environ, stat

MARK = "NETCOMPOSE_RELAY"
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "portproxy.py")
READY_TIMEOUT = 10.0


def _start_time(pid: int) -> int | None:
    facts = stat(pid)
    return facts[2] if facts is not None else None


def _ours(record: dict, mark: str) -> bool:
    """The recorded relay still runs (same pid and start time) and carries our mark."""
    pid, start = record.get("pid"), record.get("start")
    if type(pid) is not int or type(start) is not int:
        return False
    try:
        return alive(pid, start) and read_environ(pid).get(MARK) == mark
    except OSError:
        return False


# What a relay record's attrs hold: exactly port_proxy's arguments, of these types.
RELAY_ATTRS = {"listen": str, "port": int, "protocol": str, "target": str, "target_port": int}


def _well_formed(attrs: object) -> bool:
    """A record's attrs as this version writes them (another version's, or a damaged file's,
    would make a relay of what was never asked for)."""
    return isinstance(attrs, dict) and attrs.keys() == RELAY_ATTRS.keys() and \
        all(type(attrs[k]) is kind for k, kind in RELAY_ATTRS.items())


def _reap(pid: object) -> None:
    if type(pid) is not int or pid <= 0:   # waitpid would take any child
        return
    try:   # our own child (started by this run) stays a zombie until waited for
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class ProxiesDriver:
    name = "proxies"

    def __init__(self) -> None:
        self.project: str | None = None   # set by observe, which every run does before it applies

    def close(self) -> None:
        pass

    def _folder(self) -> str:
        assert self.project is not None
        return os.path.join(STATE_DIR, self.project, "proxies")

    def _mark(self, file_name: str) -> str:
        return f"{self.project}/{file_name.removesuffix('.json')}"

    @staticmethod
    def _file_name(attrs: dict) -> str:
        return f"{attrs['protocol']}-{attrs['listen'].replace(':', '_')}-{attrs['port']}.json"

    @staticmethod
    def _named(file_name: str) -> dict | None:
        """What a record's file name says (protocol, listen address, port), else None."""
        parts = file_name.removesuffix(".json").split("-")
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        return {"listen": parts[1].replace("_", ":"), "port": int(parts[2]), "protocol": parts[0]}

    def _records(self) -> list[tuple[str, dict]]:
        found = []
        for name in sorted(statefiles.names_in(self._folder())):
            path = os.path.join(self._folder(), name)
            record = statefiles.read_json(path)
            if isinstance(record, dict):
                found.append((path, record))
        return found

    def observe(self, scope: Scope) -> list[Resource]:
        self.project = scope.project
        if not scope.sees("host"):
            return []
        out = []
        for path, record in self._records():
            name = os.path.basename(path)
            if not _ours(record, self._mark(name)):   # a relay this process started (`watch`) that died: not left a zombie
                _reap(record.get("pid"))
            elif _well_formed(record.get("attrs")):
                out.append(r.port_proxy(**record["attrs"], owner=scope.project))
            elif (named := self._named(name)) is not None:
                # Ours by the process's mark, but what it relays to is unreadable: observed with
                # no target, so `up` replaces it and `down` stops it.
                out.append(r.port_proxy(**named, target="", target_port=0, owner=scope.project))
        return out

    def apply(self, actions: list[Action]) -> Outcome:
        outcome = Outcome()
        for action in actions:
            try:
                if action.op in ("delete", "update"):
                    self._stop(action.observed.attrs if action.observed else action.resource.attrs)
                if action.op in ("create", "update"):
                    self._start(action.resource.attrs)
            except OSError as exc:
                outcome.errors[action.key] = str(exc)
        return outcome

    def _start(self, attrs: dict) -> None:
        name = self._file_name(attrs)
        path = os.path.join(self._folder(), name)
        self._stop(attrs)   # a relay that outlived its record, or a stale record
        child = subprocess.Popen([sys.executable, SCRIPT, attrs["listen"], str(attrs["port"]), attrs["protocol"],
                                  attrs["target"], str(attrs["target_port"])],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 start_new_session=True, cwd="/", env={**os.environ, MARK: self._mark(name)})
        try:   # recorded before it is awaited: a crash here leaves no orphan
            statefiles.write_json(path, {"pid": child.pid, "start": _start_time(child.pid), "attrs": attrs})
        except OSError:
            child.kill()   # our own child, started just now: no record, so no relay
            child.wait()
            raise
        ready, _, _ = select.select([child.stdout], [], [], READY_TIMEOUT)
        line = child.stdout.readline().decode().strip() if ready else "no answer"
        child.stdout.close()
        if line != "ready":
            self._stop(attrs)
            _reap(child.pid)
            raise OSError(f"relay for [{attrs['listen']}]:{attrs['port']}/{attrs['protocol']}: {line}")

    def _stop(self, attrs: dict) -> None:
        name = self._file_name(attrs)
        path = os.path.join(self._folder(), name)
        record = statefiles.read_json(path)
        if not isinstance(record, dict):
            return
        pid, start = record.get("pid", 0), record.get("start")
        if _ours(record, self._mark(name)):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while alive(pid, start) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.01)
            if alive(pid, start):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        statefiles.remove(path)
