"""What runs in a project's sandboxes: process status for `ps`, every process for `top`,
readiness for `up --wait`, and the projects on this host for `ls`.

Everything here is read from the host (/proc, the ownership marks, the records the
process driver keeps); nothing needs the topology file except to name containers.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from . import statefiles
from .drivers import namespaces, processes
from .drivers.processes import ProcInfo
from .inputs import STDIN


@dataclass
class Sandbox:
    container: str
    ns: str                            # named namespace or /proc/PID/ns/net
    process: dict[str, Any] | None     # the declared process: argv, env, cwd, user, ready (None: no command)


def running(project: str, sandboxes: list[Sandbox]) -> tuple[dict[str, ProcInfo], list[ProcInfo]]:
    """The declared processes by container, and every other process in the sandboxes."""
    procs = processes.scan(s.ns for s in sandboxes)
    return processes.declared_and_tenants(procs, project)


def status(project: str, sandboxes: list[Sandbox]) -> dict[str, dict[str, Any]]:
    """Per container with a command: pid, state, uptime (seconds) and restarts."""
    declared, _ = running(project, sandboxes)
    records = processes.read_records(project)
    watched = processes.supervised(project)   # only a running `watch` restarts anything
    now = time.time()
    out = {}
    for s in sandboxes:
        if s.process is None:
            continue
        record = records.get(s.container, {})
        found = declared.get(s.container)
        row = {"pid": None, "state": "not started", "uptime": None, "restarts": record.get("restarts", 0)}
        if found is not None:
            row.update(pid=found.pid, state="running", uptime=round(now - found.started_at, 1))
        elif record.get("state") == "stopped":
            row["state"] = "stopped"
        elif record.get("state") == "running":
            code = record.get("exit_code")
            if processes.wants_restart(record) and watched:
                row["state"] = "restarting" + (" (crash loop)" if row["restarts"] >= 3 else "")
            else:
                row["state"] = "exited" + (f" ({code})" if code is not None else "")
        out[s.container] = row
    return out


def uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def top(project: str, sandboxes: list[Sandbox]) -> list[dict[str, Any]]:
    """Every process in each sandbox, declared or not."""
    declared, tenants = running(project, sandboxes)
    by_ns = {s.ns: s.container for s in sandboxes}
    mine = {p.pid for p in declared.values()}
    now = time.time()
    rows = []
    for p in sorted(list(declared.values()) + tenants, key=lambda p: (by_ns[p.ns], p.pid)):
        try:
            user = pwd.getpwuid(p.uid).pw_name
        except KeyError:
            user = str(p.uid)
        rows.append({"container": by_ns[p.ns], "pid": p.pid, "user": user, "uptime": round(now - p.started_at, 1),
                     "declared": p.pid in mine, "command": " ".join(p.argv)})
    return rows


# ---- readiness (up --wait) ------------------------------------------------------------------

def _udp_bound(pid: int, port: int) -> bool:
    """A UDP socket bound to `port` in the namespace of `pid`."""
    for table in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                if any(int(line.split()[1].rpartition(":")[2], 16) == port for line in f):
                    return True
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return False


def probe_ready(sandbox: Sandbox, found: ProcInfo | None, addresses: list[str], timeout: float) -> str | None:
    """None when the container's process runs and its ready probe passes; else why not."""
    from . import probe
    ready = (sandbox.process or {}).get("ready") or {}
    if found is None:
        return "not running"
    if "tcp" in ready:
        if not any(probe.tcp_connect(sandbox.ns, ip, ready["tcp"], min(timeout, 1.0))
                   for ip in ["127.0.0.1"] + addresses):
            return f"tcp {ready['tcp']} not accepting"
    elif "udp" in ready:
        if not _udp_bound(found.pid, ready["udp"]):
            return f"udp {ready['udp']} not bound"
    elif "exec" in ready:
        process = sandbox.process
        try:
            result = subprocess.run(processes.in_sandbox(sandbox.ns, ready["exec"], process["user"]),
                                    cwd=process["cwd"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=max(timeout, 1.0),
                                    env={**os.environ, **process["env"]})
        except subprocess.TimeoutExpired:
            return "ready command timed out"
        if result.returncode != 0:
            return f"ready command exited {result.returncode}"
    elif "delay" in ready:
        if time.time() - found.started_at < ready["delay"]:
            return f"running for less than {ready['delay']:g}s"
    return None


def wait_ready(project: str, sandboxes: list[Sandbox], addresses: dict[str, list[str]],
               timeout: float) -> dict[str, str]:
    """Poll until every declared process is ready; {container: why not} for those that are
    not when `timeout` runs out (empty: all ready)."""
    deadline = time.monotonic() + timeout
    pending = {s.container: s for s in sandboxes if s.process is not None}
    why: dict[str, str] = {}
    while True:
        declared, _ = running(project, list(pending.values()))
        left = max(deadline - time.monotonic(), 0.1)
        why = {name: reason for name, s in pending.items()
               if (reason := probe_ready(s, declared.get(name), addresses.get(name, []), left)) is not None}
        pending = {name: pending[name] for name in why}
        if not pending or time.monotonic() >= deadline:
            return why
        time.sleep(0.2)


# ---- projects on this host (ls) ----------------------------------------------------------------

def projects() -> list[dict[str, Any]]:
    """Every project that has something carrying its mark on this host: its containers and
    networks, how many of its declared processes run, and the file last applied."""
    from . import names
    from .drivers import rtnl
    found: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return found.setdefault(name, {"name": name, "containers": [], "networks": [], "processes": 0,
                                       "file": None})

    host = rtnl.RtnlSocket()
    try:
        for link in host.links():
            mark = names.parse_alias(link.alias)
            if mark and mark[1] == "net":
                entry(mark[0])["networks"].append(mark[2])
    finally:
        host.close()
    for ns in namespaces.list_named():
        try:
            fd = namespaces.open_fd(namespaces.netns_path(ns))
        except OSError:
            continue
        try:
            with namespaces.entered(fd):
                sock = rtnl.RtnlSocket()
            try:
                lo = next((link for link in sock.links() if link.name == "lo"), None)
            finally:
                sock.close()
        except OSError:
            continue
        finally:
            os.close(fd)
        mark = names.parse_alias(lo.alias if lo else None)
        if mark and mark[1] == "ns":
            entry(mark[0])["containers"].append(mark[2])
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        facts = processes.stat(int(pid))
        if facts is None or facts[1] != int(pid) or facts[0] in ("Z", "X"):
            continue  # only session leaders: a declared process leads its own
        try:
            environ = processes.read_environ(int(pid))
        except OSError:
            continue
        project, _, container = environ.get(processes.MARK, "").partition("/")
        if project and container:
            entry(project)["processes"] += 1
    for name, item in found.items():
        item["containers"].sort()
        item["networks"].sort()
        declared = len(processes.read_records(name))
        item["status"] = f"running ({item['processes']}/{declared} processes)" if declared else "running"
        recorded = statefiles.read_json(os.path.join(processes.STATE_ROOT, name, "project.json"))
        if isinstance(recorded, dict):
            item["file"] = recorded.get("file")
    return sorted(found.values(), key=lambda item: item["name"])


def remember_file(project: str, path: str) -> None:
    """The file a project was last applied from, for `ls` (an annotation, never proof of ownership)."""
    statefiles.write_json(os.path.join(processes.STATE_ROOT, project, "project.json"), {"file": path if path == STDIN else os.path.abspath(path)})


def forget(project: str) -> None:
    """After `down`: the project's logs go with its containers, as Compose's do (its records
    go with its folder under /run/netcompose)."""
    import shutil
    with statefiles.folder(os.path.join(processes.LOG_ROOT, project)) as dirfd:   # no link followed
        if dirfd is not None:
            shutil.rmtree(project, dir_fd=dirfd, ignore_errors=True)
