"""Watch mode as a user runs it: a `netcompose watch --json` process, edited under its feet."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest

from netcompose.drivers import namespaces

from .conftest import REPO, needs_root, terminate
from .test_kernel import ip, link_facts

pytestmark = [needs_root, pytest.mark.kernel]

BASE = "networks:\n  lan: {subnet: 10.96.0.0/24}\ncontainers:\n  a: {networks: [lan]}\n"


@pytest.fixture
def start_watch(tmp_path, project_name):
    """start_watch(file name, text, *options) → (path, next_event, events, child)."""
    children = []

    def start(name: str, text: str, *options: str):
        path = tmp_path / name
        path.write_text(text)
        child = subprocess.Popen([sys.executable, "-m", "netcompose", "watch", "--json", "-f", str(path),
                                  "-p", project_name, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=REPO)
        children.append(child)
        events: queue.Queue = queue.Queue()

        def read() -> None:
            for line in child.stdout:
                events.put({**json.loads(line), "at": time.monotonic()})
        threading.Thread(target=read, daemon=True).start()

        def next_event(timeout: float = 10) -> dict:
            return events.get(timeout=timeout)
        return path, next_event, events, child
    try:
        yield start
    finally:
        for child in children:
            terminate(child)


def test_watch_debounces_survives_bad_edits_and_repairs_drift(start_watch, project_name, blocks):
    path, next_event, events, child = start_watch("topo.yaml", blocks(BASE))
    first = next_event(20)
    assert first["event"] == "reconcile" and first["trigger"] == "start" and first["create"] > 0

    for i in range(3):                            # three saves within 300 ms: one apply
        path.write_text(blocks(BASE) + "".join(f"  n{j}: {{networks: [lan]}}\n" for j in range(i + 1)))
        time.sleep(0.05)
    event = next_event()
    assert event["event"] == "reconcile" and event["trigger"] == "file" and event["create"] > 0
    try:
        extra = events.get(timeout=1.0)
    except queue.Empty:
        extra = None
    assert extra is None, (event["trigger"], extra["trigger"])
    assert all(f"{project_name}-n{j}" in namespaces.list_named() for j in range(3))

    path.write_text(blocks(BASE) + "  broken: {networks: [nowhere]}\n")
    event = next_event()
    assert event["event"] == "error" and "topo.yaml:5:" in event["error"] and child.poll() is None
    assert f"{project_name}-n0" in namespaces.list_named()   # last good state kept

    path.write_text(blocks(BASE))
    event = next_event()
    assert event["event"] == "reconcile" and event["delete"] > 0

    bridge = next(n for n, l in link_facts().items() if l.kind == "bridge" and n.startswith(project_name))
    started = time.monotonic()
    ip("link", "del", bridge)
    event = next_event()
    assert event["trigger"] == "netlink" and event["create"] > 0 and time.monotonic() - started < 3
    assert bridge in link_facts()


INTERVAL = 2.0


def test_interval_fires_on_time_and_repairs_drift_inside_a_sandbox(start_watch, project_name):
    # Subnets from the pool: a fixed one may meet another run's leftovers on a shared host.
    text = "networks: {lan: {}}\ncontainers: {a: {networks: [lan]}}\n"
    path, next_event, events, child = start_watch("topo.yaml", text, "--interval", str(INTERVAL))
    first = next_event(20)
    assert first["trigger"] == "start" and first["create"] > 0, first
    sandbox = f"{project_name}-a"
    address = ip("-o", "-4", "addr", "show", "dev", "eth0", ns=sandbox).split()[3]

    # 10 s without edits: watch's own reads of its files are not edits, and the interval
    # ticks on its own schedule; a flushed address inside the sandbox is back within one tick.
    quiet: list[dict] = []
    flushed_at = None
    deadline = first["at"] + 10
    while time.monotonic() < deadline:
        try:
            quiet.append(events.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
        if flushed_at is None and len(quiet) == 2:
            ip("addr", "flush", "dev", "eth0", ns=sandbox)
            flushed_at = time.monotonic()
    assert [e["trigger"] for e in quiet] == ["interval"] * len(quiet), quiet
    assert len(quiet) >= 10 / INTERVAL - 2, quiet                 # a loaded machine may be late, never early
    gaps = [b["at"] - a["at"] for a, b in zip([first, *quiet], quiet)]
    assert all(gap > INTERVAL / 2 for gap in gaps), gaps
    repair = next(e for e in quiet if e["at"] > flushed_at)
    assert repair["create"] + repair["update"] >= 1, repair
    assert repair["at"] - flushed_at < 2 * INTERVAL, repair
    assert address in ip("-o", "addr", "show", "dev", "eth0", ns=sandbox)


def test_files_a_template_includes_are_watched(start_watch, project_name, tmp_path):
    members = tmp_path / "members.yaml"
    members.write_text("  a: {networks: [lan]}\n")
    path, next_event, events, child = start_watch(
        "topo.yaml.j2", "networks:\n  lan: {}\ncontainers:\n{% include 'members.yaml' %}")
    assert next_event(20)["trigger"] == "start"
    members.write_text("  a: {networks: [lan]}\n  b: {networks: [lan]}\n")
    event = next_event()
    assert event["trigger"] == "file" and event["create"] > 0, event
    assert f"{project_name}-b" in namespaces.list_named()
