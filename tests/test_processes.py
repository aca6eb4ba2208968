"""Declared processes and busy sandboxes, against the real kernel."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netcompose.drivers import namespaces, processes
from netcompose.plan import describe

from .conftest import needs_root, run_cli, terminate

pytestmark = needs_root

IGNORES_TERM = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(600)"]


def lab(**commands: str) -> str:
    """One network (its subnet from the pool: fixed ones may meet another test's leftovers)
    and a container per keyword, with those lines."""
    text = "networks:\n  front: {}\ncontainers:\n"
    for name, extra in commands.items():
        text += f"  {name}:\n    networks: [front]\n" + "".join(f"    {line}\n" for line in extra.splitlines())
    return text


def running(project: str) -> dict[str, processes.ProcInfo]:
    sandboxes = [ns for ns in namespaces.list_named() if ns.startswith(project + "-")]
    declared, _ = processes.declared_and_tenants(processes.scan(sandboxes), project)
    return declared


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def spawn_in(ns: str, argv: list[str]) -> subprocess.Popen:
    """A process started by hand in a sandbox (not declared): a tenant."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_start_noop_change_drift(topo, project_name):
    text = lab(web='command: ["python3", "-m", "http.server", "8080"]\n'
               'environment: {PYTHONUNBUFFERED: "1"}', idle="command: sleep 300")
    project = topo(text)
    project.up()
    first = running(project_name)
    assert set(first) == {"web", "idle"}
    assert first["idle"].argv == ["sleep", "300"]
    assert first["web"].environ["PYTHONUNBUFFERED"] == "1"
    web_ns = f"{project_name}-web"
    assert first["web"].ns == web_ns

    # A no-op up touches nothing that runs.
    assert not project.plan().plan
    project.up()
    assert {c: p.pid for c, p in running(project_name).items()} == {c: p.pid for c, p in first.items()}

    # Changing the environment restarts that process only, in place (~).
    project = topo(text.replace('"1"}', '"0"}'))
    plan = project.plan().plan
    assert [(a.op, a.key) for a in plan.actions] == [("update", f"process:{web_ns}")]
    project.up()
    second = running(project_name)
    assert second["idle"].pid == first["idle"].pid and second["web"].pid != first["web"].pid

    # Changing the network never restarts a process whose sandbox stays.
    project = topo(text.replace('"1"}', '"0"}').replace("networks: [front]\n    command: sleep",
                                                       "networks: [front]\n    sysctls: {net.ipv4.ip_forward: 1}\n"
                                                       "    command: sleep"))
    project.up()
    assert {c: p.pid for c, p in running(project_name).items()} == {c: p.pid for c, p in second.items()}

    # Drift: a process killed by hand shows in the plan and is started again.
    os.kill(second["idle"].pid, signal.SIGKILL)
    wait_for(lambda: "idle" not in running(project_name))
    lines = list(describe(project.plan().plan.actions))
    assert lines == [f"+ process:{project_name}-idle [drift]"], lines
    project.up()
    assert running(project_name)["idle"].pid != second["idle"].pid
    project.down()
    assert not running(project_name)


def test_down_stops_busy_sandboxes(topo, project_name):
    """A declared process that ignores SIGTERM and a tenant started by hand: down deletes the
    interfaces, stops both (SIGKILL after --timeout) and leaves no namespace or veth behind."""
    project = topo(lab(a=f"command: [{', '.join(repr(x) for x in IGNORES_TERM)}]", b=""),
                   stop_timeout=1)
    project.up()
    stubborn = wait_for(lambda: running(project_name).get("a"))
    tenant = spawn_in(f"{project_name}-b", ["sleep", "300"])
    started = time.monotonic()
    result = run_cli("down", "-f", str(project.spec.path), "-p", project_name, "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"stopped pid {stubborn.pid}" in result.stdout and "SIGKILL after 1s" in result.stdout
    assert f"stopped pid {tenant.pid} (sleep 300) in {project_name}-b: exited on SIGTERM" in result.stdout
    assert tenant.wait(timeout=5) == -signal.SIGTERM
    assert not processes.alive(stubborn.pid, stubborn.start)
    assert not [ns for ns in namespaces.list_named() if ns.startswith(project_name)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert project_name[:6] + "-" not in links
    assert elapsed < 15  # no 10 s verify wait, no rollback


def test_up_removing_a_busy_container(topo, project_name):
    text = lab(a="", b="")
    project = topo(text)
    project.up()
    tenant = spawn_in(f"{project_name}-b", ["sleep", "300"])
    wait_for(lambda: processes.scan([f"{project_name}-b"]))
    project = topo(text.split("  b:")[0])
    report = project.up()
    assert any(f"stopped pid {tenant.pid}" in note for note in report.notes), report.notes
    assert not os.path.exists(f"/run/netns/{project_name}-b")
    assert not project.plan().plan


def test_adopted_namespace_processes_are_never_touched(topo, project_name):
    adopted = f"{project_name}-adopt"
    subprocess.run(["ip", "netns", "add", adopted], check=True)
    tenant = spawn_in(adopted, ["sleep", "300"])
    try:
        project = topo(lab(a=f"netns: {adopted}"))
        project.up()
        project.down()
        assert tenant.poll() is None
    finally:
        tenant.kill()
        tenant.wait()


@pytest.mark.parametrize("extra,words", [
    ("command: [no-such-program-xyz]", "program 'no-such-program-xyz' of container 'a' is not found on PATH"),
    ("command: [sleep, '1']\nworking_dir: missing-folder", "does not exist"),
    ("command: [sleep, '1']\nuser: no-such-user-xyz", "unknown user 'no-such-user-xyz'"),
    ("command: [sleep, '1']\nready: {exec: [no-such-probe-xyz]}", "program 'no-such-probe-xyz'"),
])
def test_unrunnable_process_is_invalid_input(tmp_path, project_name, extra, words):
    path = tmp_path / "topo.yaml"
    path.write_text(lab(a=extra))
    result = run_cli("up", "-f", str(path), "-p", project_name)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"error: {path}:") and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(f"/run/netns/{project_name}-a")


def test_wait_logs_and_lifecycle_without_the_file(tmp_path, project_name):
    """up --wait (success, then a probe that never passes), logs -f, ps, stop/start, ls, and
    down -p after the file is deleted."""
    path = tmp_path / "topo.yaml"
    path.write_text(lab(web='command: ["python3", "-u", "-m", "http.server", "8080"]\n'
                        "ready: {tcp: 8080}",
                        talker=f'command: ["{sys.executable}", "-u", "-c", "import time\\nfor i in range(600):'
                        ' print(\'tick\', i, flush=True); time.sleep(0.2)"]\nready: {delay: 0.3s}'))
    result = run_cli("up", "-f", str(path), "-p", project_name, "--wait", "--wait-timeout", "20")
    assert result.returncode == 0, result.stderr
    assert "every process is running and ready" in result.stdout

    follow = subprocess.Popen([sys.executable, "-m", "netcompose", "logs", "--file", str(path), "-p", project_name,
                               "-f", "--tail", "1", "--timestamps", "talker"], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        lines = [follow.stdout.readline() for _ in range(3)]
    finally:
        terminate(follow)
    assert all(line.startswith("talker  | 20") and " tick " in line for line in lines), lines
    ticks = [int(line.split()[-1]) for line in lines]
    assert ticks == sorted(ticks) and len(set(ticks)) == 3

    rows = {row["container"]: row for row in json_of(run_cli("ps", "--json", "-f", str(path), "-p", project_name))}
    assert rows["web"]["process"] == "running" and rows["web"]["pid"] and rows["web"]["restarts"] == 0

    stopped = run_cli("stop", "-f", str(path), "-p", project_name, "web")
    assert stopped.returncode == 0 and "stopped pid" in stopped.stdout
    rows = {row["container"]: row for row in json_of(run_cli("ps", "--json", "-f", str(path), "-p", project_name))}
    assert rows["web"]["process"] == "stopped" and rows["talker"]["process"] == "running"
    assert run_cli("start", "-f", str(path), "-p", project_name).returncode == 0

    # A probe that never passes: --wait fails naming the container, in about the timeout.
    path.write_text(path.read_text().replace("ready: {tcp: 8080}", "ready: {tcp: 9999}"))
    result = run_cli("up", "-f", str(path), "-p", project_name, "--wait", "--wait-timeout", "1")
    assert result.returncode == 1 and "not ready after 1s: web (tcp 9999 not accepting)" in result.stderr

    path.unlink()
    listed = {p["name"]: p for p in json_of(run_cli("ls", "--json"))}
    assert listed[project_name]["containers"] == ["talker", "web"] and listed[project_name]["processes"] == 2
    assert listed[project_name]["file"] == str(path)
    result = run_cli("down", "-p", project_name, "--timeout", "2")
    assert result.returncode == 0, result.stderr
    assert "process:" in result.stdout and not running(project_name)
    assert not [ns for ns in namespaces.list_named() if ns.startswith(project_name)]
    assert project_name not in {p["name"] for p in json_of(run_cli("ls", "--json"))}
    assert not os.path.exists(f"{processes.LOG_ROOT}/{project_name}")


def json_of(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_watch_restarts_per_policy_with_backoff(tmp_path, project_name):
    """restart: always comes back with growing delays and shows a crash loop; restart: no stays down."""
    import json
    path = tmp_path / "topo.yaml"
    path.write_text(lab(crash="command: [sh, -c, 'exit 3']\nrestart: always",
                        once="command: [sh, -c, 'exit 0']\nrestart: 'no'"))
    watcher = subprocess.Popen([sys.executable, "-m", "netcompose", "watch", "--json", "-f", str(path),
                                "-p", project_name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        starts = []
        deadline = time.monotonic() + 30
        while len(starts) < 4 and time.monotonic() < deadline:
            event = json.loads(watcher.stdout.readline())
            if event["event"] == "reconcile" and event["trigger"] == "process":
                starts.append(time.monotonic())
        assert len(starts) == 4, starts
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert gaps[-1] > gaps[0] * 1.5, gaps            # exponential back-off
        status = processes.read_records(project_name)
        assert status["crash"]["restarts"] >= 3 and status["crash"]["exit_code"] in (3, None)
        assert status["once"]["restarts"] == 0 and status["once"]["exit_code"] == 0   # restart: no
        rows = {row["container"]: row for row in json_of(run_cli("ps", "--json", "-f", str(path),
                                                                "-p", project_name))}
        assert rows["once"]["process"] == "exited (0)"
        assert rows["crash"]["process"].startswith("restarting") or rows["crash"]["process"] == "running"
    finally:
        terminate(watcher)

    def crash_state() -> str:
        rows = json_of(run_cli("ps", "--json", "-f", str(path), "-p", project_name))
        state = next(row["process"] for row in rows if row["container"] == "crash")
        return "" if state == "running" else state
    assert wait_for(crash_state).startswith("exited")   # nothing restarts it once watch is gone


def test_routing_daemon_lab_converges(tmp_path, project_name):
    """The OSPF lab: up --wait returns once BIRD's routes are in; check passes, and the routes
    it depends on are the daemons' (proto bird), not netcompose's."""
    import shutil
    from .conftest import REPO
    if shutil.which("bird") is None:
        pytest.skip("bird2 is not installed (scripts/install-deps.sh installs it)")
    lab_dir = tmp_path / "ospf"
    shutil.copytree(REPO / "topologies" / "ospf", lab_dir)   # its own control sockets
    path = str(lab_dir / "ospf.yaml.j2")
    result = run_cli("up", "-f", path, "-p", project_name, "--wait", "--wait-timeout", "60")
    assert result.returncode == 0, result.stderr
    routes = subprocess.run(["ip", "netns", "exec", f"{project_name}-r1", "ip", "route", "show", "proto", "bird"],
                            capture_output=True, text=True).stdout
    assert "10.201.2.0/24 via 10.201.12.2" in routes and "10.201.3.0/24 via 10.201.31.1" in routes, routes
    check = run_cli("check", "-f", path, "-p", project_name)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "h1 → h3 tcp:8080" in check.stdout
    assert run_cli("down", "-f", path, "-p", project_name).returncode == 0
    assert not running(project_name)


def test_log_writer_stamps_and_rotates(tmp_path):
    """Each line gets a UTC timestamp; past the size cap the log rotates, keeping KEEP files."""
    from netcompose import logs, logwriter
    source = tmp_path / "out"
    source.write_bytes(b"".join(b"line %d\n" % i for i in range(200)) + b"partial")
    log = tmp_path / "c.log"
    with open(source, "rb") as f:
        logwriter.run(str(log), 1000, 2, f)
    kept = [tmp_path / "c.log.2", tmp_path / "c.log.1", log]
    assert all(p.exists() for p in kept) and not (tmp_path / "c.log.3").exists()
    assert all(p.stat().st_size <= 1000 for p in kept)
    lines = [logs.parse("c", raw) for p in kept for raw in p.read_bytes().splitlines(keepends=True)]
    assert lines[-1].text == "partial" and lines[-2].text == "line 199"
    assert all(line.stamp.endswith("Z") and line.stamp[:2] == "20" for line in lines)
    numbers = [int(line.text.split()[1]) for line in lines[:-1]]
    assert numbers == list(range(numbers[0], 200))   # contiguous: nothing lost inside the kept files


def test_down_of_a_sandbox_held_open_from_outside(topo, project_name):
    """A namespace held by a descriptor outside it (no process inside to stop) outlives its
    mount: its interfaces are deleted explicitly instead of waiting for it, and down succeeds."""
    project = topo(lab(a=""))
    project.up()
    holder = os.open(f"/run/netns/{project_name}-a", os.O_RDONLY)
    try:
        started = time.monotonic()
        report = project.down()
        assert time.monotonic() - started < 8
        assert any("deleted explicitly" in note for note in report.notes), report.notes
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert project_name[:6] + "-" not in links
        assert not project.plan(down=True).plan
    finally:
        os.close(holder)


def test_failed_apply_rolls_back_started_processes(topo, project_name):
    """A failure after a process started stops it again with everything else; the resolved
    topology (`config`) shows what runs."""
    from netcompose.apply import InjectedFault
    from netcompose.errors import ApplyError
    from netcompose.saved import resolved_document
    project = topo(lab(a="command: [sleep, '300']", b="command: [sleep, '301']"))
    assert resolved_document(project.resolved())["containers"]["a"]["command"] == ["sleep", "300"]

    def fail_on_b(action):
        if action.key == f"process:{project_name}-b":
            raise InjectedFault("b")
    with pytest.raises(ApplyError, match="rolled back: the host is as it was before"):
        project.up(fault=fail_on_b)
    assert not running(project_name)
    assert not [ns for ns in namespaces.list_named() if ns.startswith(project_name)]


# A leader that exits on SIGTERM, leaving two children that ignore it: one in its process
# group, one that made its own session (it still carries the mark in its environment).
LEAVES_CHILDREN = [sys.executable, "-c", "import subprocess, sys, time\n"
                   "for own_session in (False, True):\n"
                   f"    subprocess.Popen({IGNORES_TERM!r}, start_new_session=own_session)\n"
                   "time.sleep(600)"]


def test_stop_kills_what_outlives_the_leader(topo, project_name):
    """stop, restart (an edit) and removal SIGKILL after the timeout what is left of a
    declared process whose leader exited on SIGTERM: its group and its marked processes."""
    text = lab(a=f"command: {json.dumps(LEAVES_CHILDREN)}\nenvironment: {{ROUND: '1'}}", b="")
    project = topo(text, stop_timeout=1)

    def ignores_term(pid: int) -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        return bool(int(status.split("SigIgn:")[1].split()[0], 16) & 1 << (signal.SIGTERM - 1))

    def children() -> set[int]:
        """The leader's children, once both ignore SIGTERM (not merely started)."""
        leader = running(project_name).get("a")
        procs = processes.scan([f"{project_name}-a"])
        return {p.pid for p in procs if p.mark() == f"{project_name}/a" and (leader is None or p.pid != leader.pid)
                and ignores_term(p.pid)}

    def gone(pids: set[int]) -> bool:
        return not any(processes.stat(pid) and processes.stat(pid)[0] not in ("Z", "X") for pid in pids)

    for step in ("stop", "restart", "removal"):
        project.up()
        left = wait_for(lambda: len(children()) == 2 and children())
        if step == "stop":
            lines = project.stop()
        elif step == "restart":
            project = topo(text.replace("'1'", "'2'"), stop_timeout=1)
            lines = project.up().notes
        else:
            project = topo(lab(b=""), stop_timeout=1)
            lines = project.up().notes
        assert gone(left), (step, lines)
        assert any("SIGKILL after 1s to what was left of it" in line for line in lines), (step, lines)
