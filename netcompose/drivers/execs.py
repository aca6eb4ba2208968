"""`exec:` commands, run inside a sandbox once per change of the list (or per new sandbox).

What ran is recorded in /run/netcompose/<project>/exec/<container>.json with the inode of
the namespace it ran in: a record of another namespace (the sandbox was recreated) no longer
counts, so the commands run again.  A command that fails does not fail `up` (containerlab
carries on too): its exit status and first line of error output become a note of `up`.
"""
from __future__ import annotations

import os
import subprocess

from .. import resources as r
from .. import statefiles
from ..plan import Action
from . import Outcome, Scope, namespaces
from .processes import STATE_ROOT, in_sandbox

TIMEOUT = 120.0   # seconds per command


def records_dir(project: str) -> str:
    return os.path.join(STATE_ROOT, project, "exec")


def _inode(ns: str) -> int | None:
    try:
        return os.stat(ns if ns.startswith("/") else namespaces.netns_path(ns)).st_ino
    except OSError:
        return None


class ExecDriver:
    name = "execs"

    def __init__(self) -> None:
        self.project = ""
        self.notes: list[str] = []   # what the commands said when they failed, for the report

    def close(self) -> None:
        pass

    def observe(self, scope: Scope) -> list[r.Resource]:
        self.project = scope.project
        out = []
        for name in sorted(statefiles.names_in(records_dir(scope.project))):
            record = statefiles.read_json(os.path.join(records_dir(scope.project), name))
            if not isinstance(record, dict) or not {"ns", "container", "commands", "inode"} <= record.keys():
                continue
            if scope.sees(f"ns:{record['ns']}") and _inode(record["ns"]) == record["inode"]:
                out.append(r.exec_commands(record["ns"], record["container"], record["commands"],
                                           owner=scope.project))
        return out

    def apply(self, actions: list[Action]) -> Outcome:
        folder = records_dir(self.project)
        for action in actions:
            a = action.resource.attrs
            path = os.path.join(folder, a["container"] + ".json")
            if action.op == "delete":
                statefiles.remove(path)
                continue
            for argv in a["commands"]:
                self._run(a["container"], a["ns"], argv)
            statefiles.write_json(path, {"ns": a["ns"], "container": a["container"], "commands": a["commands"],
                                         "inode": _inode(a["ns"])})
        return Outcome()

    def _run(self, container: str, ns: str, argv: list[str]) -> None:
        shown = " ".join(argv)
        try:
            done = subprocess.run(in_sandbox(ns, argv), capture_output=True, text=True, errors="replace",
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.notes.append(f"exec in {container}: {shown}: still running after {TIMEOUT:.0f}s, stopped")
            return
        except OSError as exc:
            self.notes.append(f"exec in {container}: {shown}: {exc.strerror}")
            return
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            self.notes.append(f"exec in {container}: {shown}: exit {done.returncode}"
                              + (f": {said[0][:200]}" if said else ""))
