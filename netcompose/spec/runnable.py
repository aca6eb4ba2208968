"""Checks of declared processes against this host, made when planning (not when tearing
down: `down` must work after a program was uninstalled): the program is found on PATH,
the working directory exists, the user is known."""
from __future__ import annotations

import os
import pwd

from ..drivers.processes import DEFAULT_PATH
from ..errors import SpecError
from .loader import Document
from .resolve import RProcess, Resolved


def search_path(process: RProcess) -> str:
    """The PATH the process gets (see drivers.processes): its own, else netcompose's."""
    return process.env.get("PATH") or os.environ.get("PATH") or DEFAULT_PATH


def find_program(program: str, cwd: str, path: str) -> str | None:
    """Where execvp would find `program`, or None."""
    candidates = [os.path.join(cwd, program)] if "/" in program else \
        [os.path.join(folder or ".", program) for folder in path.split(":")]
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def check(res: Resolved, doc: Document) -> None:
    for c in res.containers.values():
        process = c.process
        if process is None:
            continue
        base = ("containers", c.name)
        if not os.path.isdir(process.cwd):
            raise SpecError(doc.where(base + ("working_dir",)), f"working_dir {process.cwd} of container "
                            f"'{c.name}' does not exist", "create the folder or fix the path")
        if process.user:
            try:
                pwd.getpwnam(process.user)
            except KeyError:
                raise SpecError(doc.where(base + ("user",)), f"unknown user '{process.user}'",
                                "use a user that exists on this host (see /etc/passwd)") from None
        path = search_path(process)
        probes = [("command", process.argv[0])]
        if process.ready and "exec" in process.ready:
            probes.append(("ready", process.ready["exec"][0]))
        for key, program in probes:
            if find_program(program, process.cwd, path) is None:
                where = "in " + process.cwd if "/" in program else "on PATH"
                raise SpecError(doc.where(base + (key,)), f"program '{program}' of container '{c.name}' is "
                                f"not found {where}", "install it or fix the command")
