"""The process driver: containers' declared processes, observed from /proc.

A declared process runs inside its sandbox's network namespace, started through
`ip netns exec` (which also gives it a private mount namespace with the sandbox's
/etc/netns files over /etc/hosts and /etc/resolv.conf) with an argv list, never a shell.
It leads its own session, holds no terminal and outlives netcompose: there is no daemon.
Its environment carries the ownership mark (`NETCOMPOSE_PROCESS=<project>/<container>`)
and what it was launched with, which is how a later run recognises and compares it.

Every other process found in a sandbox is a tenant: never managed, but stopped (SIGTERM,
then SIGKILL after the stop timeout) when its sandbox is removed.

What `watch` needs to supervise (restarts, exit codes, back-off) is kept per container
in /run/netcompose/<project>/processes/<container>.json.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from typing import Iterable, NamedTuple

from .. import resources as r
from .. import statefiles
from ..plan import Action
from . import Outcome, Scope, namespaces

MARK = "NETCOMPOSE_PROCESS"
LAUNCH = "NETCOMPOSE_LAUNCH"
LOG_MARK = "NETCOMPOSE_LOGWRITER"
LOG_ROOT = "/var/log/netcompose"
STATE_ROOT = "/run/netcompose"
LOG_MAX_BYTES = 10 << 20
LOG_KEEP = 2
STOP_TIMEOUT = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # when netcompose has none
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_BOOT = None


def boot_time() -> float:
    global _BOOT
    if _BOOT is None:
        with open("/proc/stat") as f:
            _BOOT = float(next(line for line in f if line.startswith("btime")).split()[1])
    return _BOOT


class ProcInfo(NamedTuple):
    pid: int
    ns: str
    sid: int
    state: str
    start: int                  # clock ticks after boot: with the pid, identifies the process
    argv: list[str]
    environ: dict[str, str]
    uid: int
    pgid: int = 0

    @property
    def started_at(self) -> float:
        return boot_time() + self.start / CLOCK_TICKS

    def mark(self) -> str | None:
        return self.environ.get(MARK)


def stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, session id, start time, process group) from /proc/PID/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[3]), int(fields[19]), int(fields[2])


def alive(pid: int, start: int) -> bool:
    """The same process (pid and start time) still runs; a zombie has finished."""
    facts = stat(pid)
    return facts is not None and facts[2] == start and facts[0] not in ("Z", "X")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_environ(pid: int) -> dict[str, str]:
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in _read(f"/proc/{pid}/environ").split(b"\0") if item)


def namespace_inodes(candidates: Iterable[str]) -> dict[int, str]:
    out = {}
    for ns in dict.fromkeys(candidates):   # once each: a lab's sandboxes are both listed and named
        try:
            stat = os.stat(ns if ns.startswith("/") else namespaces.netns_path(ns))
        except OSError:
            continue
        if namespaces.on_nsfs(stat):
            out[stat.st_ino] = ns
    return out


def scan(candidates: Iterable[str]) -> list[ProcInfo]:
    """Every process whose network namespace is one of `candidates` (names, or paths of
    adopted namespaces).  This process's own namespace is the host's, never a sandbox:
    processes there are skipped unread, and when every process lives there the candidates
    are not even looked up (a stat each, a thousand on a large lab)."""
    found: list[ProcInfo] = []
    candidates = list(candidates)
    if not candidates:
        return found
    home = os.readlink("/proc/thread-self/ns/net")
    me = os.getpid()
    elsewhere: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone while we looked
        if link != home:
            elsewhere.append((int(entry), link))
    inodes = namespace_inodes(candidates) if elsewhere else {}
    for pid, link in elsewhere:
        try:
            ns = inodes.get(int(link[5:-1]))
            if ns is None:
                continue
            facts = stat(pid)
            if facts is None or facts[0] in ("Z", "X"):
                continue
            argv = [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0")[:-1]]
            environ = read_environ(pid)
            uid = os.stat(f"/proc/{pid}").st_uid
        except (OSError, ValueError):
            continue  # gone while we looked
        found.append(ProcInfo(pid, ns, facts[1], facts[0], facts[2], argv, environ, uid, facts[3]))
    return found


def declared_and_tenants(procs: list[ProcInfo], project: str) -> tuple[dict[str, ProcInfo], list[ProcInfo]]:
    """A container's declared process leads its own session and carries the mark; its
    children (same mark) belong to it; everything else is a tenant."""
    declared: dict[str, ProcInfo] = {}
    marked_sessions: set[int] = set()
    for p in sorted(procs, key=lambda p: p.start):
        mark = p.mark() or ""
        owner, _, container = mark.partition("/")
        if owner == project and container and p.pid == p.sid and container not in declared:
            declared[container] = p
            marked_sessions.add(p.sid)
    tenants = [p for p in procs if p not in declared.values() and not
               ((p.mark() or "").startswith(project + "/") and p.sid in marked_sessions)]
    return declared, tenants


# ---- records: what `watch` and `ps` know beyond /proc ---------------------------------------

def records_dir(project: str) -> str:
    return os.path.join(STATE_ROOT, project, "processes")


def read_record(project: str, container: str) -> dict | None:
    record = statefiles.read_json(os.path.join(records_dir(project), container + ".json"))
    return record if isinstance(record, dict) else None


def read_records(project: str) -> dict[str, dict]:
    out = {}
    for name in statefiles.names_in(records_dir(project)):
        if name.endswith(".json") and (record := read_record(project, name[:-5])) is not None:
            out[name[:-5]] = record
    return out


def write_record(project: str, container: str, record: dict) -> None:
    statefiles.write_json(os.path.join(records_dir(project), container + ".json"), record)


def drop_record(project: str, container: str) -> None:
    statefiles.remove(os.path.join(records_dir(project), container + ".json"))


def wants_restart(record: dict) -> bool:
    """Whether `watch` restarts a process that exited, per its restart policy."""
    if record.get("state") != "running" or record.get("restart", "no") == "no":
        return False
    return record["restart"] == "always" or record.get("exit_code") != 0


def restart_due(project: str) -> bool:
    """A declared process exited and its restart policy and back-off say: start it now."""
    now = time.time()
    return any(record.get("state") == "running" and not alive(record["pid"], record["start"])
               and wants_restart(record) and now >= record.get("next_start", 0)
               for record in read_records(project).values())


def supervisor_path(project: str) -> str:
    return os.path.join(STATE_ROOT, project, "watch.pid")


def claim_supervision(project: str) -> None:
    """Say that this process (`watch`) restarts the project's processes: `ps` tells
    `restarting` from `exited` by it."""
    facts = stat(os.getpid())
    text = f"{os.getpid()} {facts[2] if facts else 0}"
    found = statefiles.read_bytes(supervisor_path(project))
    if found is None or found[1] != text.encode():
        statefiles.write_text(supervisor_path(project), text)


def release_supervision(project: str) -> None:
    statefiles.remove(supervisor_path(project))


def supervised(project: str) -> bool:
    """A `watch` of the project is running."""
    found = statefiles.read_bytes(supervisor_path(project))
    try:
        pid, start_ticks = (int(x) for x in found[1].split())
    except (TypeError, ValueError):
        return False
    return alive(pid, start_ticks)


def backoff(restarts: int) -> float:
    return min(BACKOFF_FIRST * 2 ** max(restarts - 1, 0), BACKOFF_MAX)


def log_path(project: str, container: str) -> str:
    return os.path.join(LOG_ROOT, project, container + ".log")


def remove_logs(project: str, container: str) -> None:
    path = log_path(project, container)
    for name in [path] + [f"{path}.{i}" for i in range(1, LOG_KEEP + 1)]:
        statefiles.remove(name)
    with statefiles.folder(os.path.dirname(path)) as dirfd:
        if dirfd is not None:
            try:
                os.rmdir(project, dir_fd=dirfd)
            except OSError:
                pass  # other containers' logs are still there


# ---- starting and stopping --------------------------------------------------------------------

def _environment(attrs: dict, project: str) -> dict[str, str]:
    base = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    if attrs["user"]:
        entry = pwd.getpwnam(attrs["user"])
        base.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    else:
        base["HOME"] = os.environ.get("HOME", "/root")
    launch = {"cwd": attrs["cwd"], "user": attrs["user"], "env": sorted(attrs["env"])}
    return {**base, **attrs["env"], MARK: f"{project}/{attrs['container']}",
            LAUNCH: json.dumps(launch, separators=(",", ":"))}


def in_sandbox(ns: str, argv: list[str], user: str = "") -> list[str]:
    """An argv that runs `argv` inside the sandbox `ns`: a named namespace through
    `ip netns exec` (with its /etc/netns files), a /proc path through nsenter."""
    if user:
        entry = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *argv]
    if ns.startswith("/"):
        return ["nsenter", f"--net={ns}", "--", *argv]
    return ["ip", "netns", "exec", ns, *argv]


def start(project: str, attrs: dict, log_max_bytes: int = LOG_MAX_BYTES) -> tuple[int, int]:
    """Start a declared process and its log writer; (pid, start time)."""
    container = attrs["container"]
    log = log_path(project, container)
    statefiles.make_folder(os.path.dirname(log))
    read_end, write_end = os.pipe()
    try:
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "logwriter.py")
        writer = subprocess.Popen([sys.executable, "-I", "-S", script, log, str(log_max_bytes), str(LOG_KEEP)],
                                  stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, env={LOG_MARK: f"{project}/{container}"})
        child = subprocess.Popen(in_sandbox(attrs["ns"], attrs["argv"], attrs["user"]), stdin=subprocess.DEVNULL,
                                 stdout=write_end, stderr=write_end, cwd=attrs["cwd"],
                                 env=_environment(attrs, project), start_new_session=True)
    finally:
        os.close(read_end)
        os.close(write_end)
    _children[writer.pid] = writer
    _children[child.pid] = child
    facts = stat(child.pid)
    return child.pid, facts[2] if facts else 0


def _launching(pid: int, wrappers: list[list[str]]) -> bool:
    """Still on its way into the sandbox: running one of the wrappers that exec into it."""
    facts = stat(pid)
    if facts is None or facts[0] in ("Z", "X"):
        return False  # exited already
    try:
        argv = [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0")[:-1]]
    except OSError:
        return False
    return not argv or argv in wrappers


def settle(launched: list[tuple[int, list[list[str]]]], timeout: float = 5.0) -> None:
    """Wait until each launched process runs its own program inside its sandbox (or has
    exited), so that what is observed next is the process, not its wrapper."""
    deadline = time.monotonic() + timeout
    while launched and time.monotonic() < deadline:
        launched = [(pid, wrappers) for pid, wrappers in launched if _launching(pid, wrappers)]
        if launched:
            time.sleep(0.005)


def wrappers(attrs: dict) -> list[list[str]]:
    """The argvs a process passes through on its way into its sandbox."""
    full = in_sandbox(attrs["ns"], attrs["argv"], attrs["user"])
    return [full] + ([full[full.index("setpriv"):]] if attrs["user"] else [])


class Victim(NamedTuple):
    pid: int
    start: int
    ns: str
    argv: list[str]
    mark: str = ""       # a declared process's mark: its process group and every process in its
                         # sandbox carrying the mark go with it (children outlive their leader)


def stop(victims: list[Victim], timeout: float) -> list[str]:
    """SIGTERM, then SIGKILL to whatever still runs after `timeout` seconds (of a declared
    process: its group and its marked processes in the sandbox too, whether or not the
    leader still runs); waits until every victim is gone.  One line per victim says how it
    ended."""
    def send(v: Victim, sig: int) -> None:
        try:
            if v.mark:
                os.killpg(v.pid, sig)
            else:
                os.kill(v.pid, sig)
        except ProcessLookupError:
            pass

    ended: dict[int, float] = {}           # leader pid → seconds after SIGTERM
    killed: dict[int, set[int]] = {}       # leader pid → what was left of it and got SIGKILL

    def leftovers(pending: list[Victim]) -> dict[int, list[ProcInfo]]:
        """Of declared victims whose leader is gone: the processes of their group, or
        carrying their mark, still in their sandbox."""
        orphaned = [v for v in pending if v.mark and v.pid in ended]
        if not orphaned:
            return {}
        procs = scan({v.ns for v in orphaned})
        return {v.pid: [p for p in procs if p.ns == v.ns and (p.pgid == v.pid or p.mark() == v.mark)]
                for v in orphaned}

    def wait(pending: list[Victim], seconds: float, kill: bool) -> list[Victim]:
        deadline = time.monotonic() + seconds
        while True:
            _reap()
            for v in pending:
                if v.pid not in ended and not alive(v.pid, v.start):
                    ended[v.pid] = time.monotonic() - started
            left = leftovers(pending)
            if kill:
                for leader, procs in left.items():
                    for p in procs:
                        try:
                            os.kill(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            continue
                        killed.setdefault(leader, set()).add(p.pid)
            pending = [v for v in pending if v.pid not in ended or left.get(v.pid)]
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(0.02)

    live = [v for v in victims if alive(v.pid, v.start)]
    for v in live:
        send(v, signal.SIGTERM)
    started = time.monotonic()
    stubborn = wait(live, timeout, kill=False)
    for v in stubborn:
        if v.pid not in ended:
            send(v, signal.SIGKILL)
    left = wait(stubborn, 5.0, kill=True)
    lines = []
    for v in live:
        if v in left:
            how = "still running after SIGKILL"
        elif v.pid not in ended or ended[v.pid] >= timeout:
            how = f"SIGKILL after {timeout:g}s"
        else:
            how = f"exited on SIGTERM in {ended[v.pid]:.1f}s"
        if killed.get(v.pid):
            how += f"; SIGKILL after {timeout:g}s to what was left of it: pid {', '.join(map(str, sorted(killed[v.pid])))}"
        lines.append(f"stopped pid {v.pid} ({' '.join(v.argv)[:60]}) in {v.ns}: {how}")
    return lines


# Children this process started (declared processes, log writers), kept so that their exit
# codes are ours to collect: a dropped Popen is reaped by the subprocess module instead.
_children: dict[int, subprocess.Popen] = {}
_exit_codes: dict[int, int] = {}   # pid → exit code of children reaped but not yet recorded


def _reap() -> None:
    """Collect exited children (processes this run or this `watch` started)."""
    for pid, child in list(_children.items()):
        code = child.poll()
        if code is not None:
            _exit_codes[pid] = code
            del _children[pid]


def record_exits(project: str) -> bool:
    """Reap exited children and write their exit codes into the records; True when one of
    the project's declared processes exited."""
    _reap()
    changed = False
    for container, record in read_records(project).items():
        code = _exit_codes.pop(record.get("pid"), None)
        if code is not None and record.get("exit_code") is None:
            write_record(project, container, {**record, "exit_code": code})
            changed = True
    _exit_codes.clear()  # log writers, probes: nothing to record
    return changed


# ---- the driver ----------------------------------------------------------------------------

class ProcessDriver:
    name = "processes"

    def __init__(self, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.stop_timeout = stop_timeout
        self.log_max_bytes = LOG_MAX_BYTES
        self.supervising = False     # watch: honour restart policies and back-off
        self.project = ""
        self.stopped: list[str] = []   # what apply stopped, for the report

    def close(self) -> None:
        pass

    def sandboxes(self, scope: Scope) -> list[str]:
        if scope.focus is not None:
            return [z[3:] for z in scope.focus if z.startswith("ns:")]
        prefix = f"{scope.project}-"
        return [n for n in namespaces.list_named() if n.startswith(prefix)] + list(scope.namespaces)

    def observe(self, scope: Scope) -> list[r.Resource]:
        self.project = project = scope.project
        procs = scan(self.sandboxes(scope))
        declared, tenants = declared_and_tenants(procs, project)
        out = []
        for container, p in declared.items():
            try:
                launch = json.loads(p.environ.get(LAUNCH, "{}"))
            except ValueError:
                launch = {}
            env = {k: p.environ.get(k, "") for k in launch.get("env", [])}
            res = r.process(p.ns, container, p.argv, env, launch.get("cwd", ""), launch.get("user", ""),
                            owner=project)
            res.attrs.update(pid=p.pid, start=p.start)
            out.append(res)
        for p in tenants:
            res = r.tenant(p.ns, p.pid, p.argv)
            res.attrs["start"] = p.start
            out.append(res)
        if self.supervising:
            out.extend(self._resting(scope, set(declared)))
        return out

    def _resting(self, scope: Scope, running: set[str]) -> list[r.Resource]:
        """Exited processes that `watch` must not start yet (restart policy, back-off):
        reported as they were, so the plan leaves them be."""
        out = []
        now = time.time()
        for container, record in read_records(self.project).items():
            if container in running or not scope.sees(f"ns:{record['ns']}"):
                continue
            if record.get("state") == "running" and wants_restart(record) and now >= record.get("next_start", 0):
                continue
            out.append(r.process(record["ns"], container, record["argv"], record["env"], record["cwd"],
                                 record["user"], owner=self.project))
        return out

    def apply(self, actions: list[Action]) -> Outcome:
        outcome = Outcome()
        launched: list[tuple[int, list[list[str]]]] = []
        victims = {a.key: self._victim(a.observed) for a in actions
                   if a.op in ("delete", "update") and a.observed is not None and "pid" in a.observed.attrs}
        if victims:
            self.stopped.extend(stop(list(victims.values()), self.stop_timeout))
        for a in actions:
            if a.key in victims and alive(victims[a.key].pid, victims[a.key].start):
                outcome.errors[a.key] = f"pid {victims[a.key].pid} still runs after SIGKILL"
                continue
            attrs = a.resource.attrs
            if a.op == "delete":
                if "container" in attrs:  # the container is gone, and with it its record and logs (as Compose)
                    drop_record(self.project, attrs["container"])
                    remove_logs(self.project, attrs["container"])
                continue
            try:
                launched.append((self.launch(attrs), wrappers(attrs)))
            except (OSError, KeyError) as exc:
                outcome.errors[a.key] = f"starting {' '.join(attrs['argv'])}: {exc}"
        settle(launched)
        return outcome

    def launch(self, attrs: dict) -> int:
        previous = read_record(self.project, attrs["container"]) or {}
        now = time.time()
        restarts = 0
        if previous.get("state") == "running":  # it died: a restart
            stable = now - previous.get("started_at", now) >= STABLE_AFTER + backoff(previous.get("restarts", 0))
            restarts = 1 if stable else previous.get("restarts", 0) + 1
        pid, started = start(self.project, attrs, self.log_max_bytes)
        write_record(self.project, attrs["container"], {
            "container": attrs["container"], "ns": attrs["ns"], "pid": pid, "start": started, "started_at": now,
            "argv": attrs["argv"], "env": attrs["env"], "cwd": attrs["cwd"], "user": attrs["user"],
            "restart": attrs.get("restart") or "no", "ready": attrs.get("ready"), "state": "running",
            "exit_code": None, "restarts": restarts, "next_start": now + backoff(restarts + 1)})
        return pid

    @staticmethod
    def _victim(res: r.Resource) -> Victim:
        a = res.attrs
        return Victim(a["pid"], a.get("start", 0), a["ns"], a["argv"],
                      mark=f"{res.owner}/{a['container']}" if "container" in a else "")
