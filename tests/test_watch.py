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
def watch(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text(BASE)
    child = subprocess.Popen([sys.executable, "-m", "netcompose", "watch", "--json", "-f", str(path),
                              "-p", project_name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO)
    events: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [events.put(json.loads(line)) for line in child.stdout], daemon=True).start()

    def next_event(timeout: float = 10) -> dict:
        return events.get(timeout=timeout)
    try:
        yield path, next_event, events, child
    finally:
        terminate(child)


def test_watch_debounces_survives_bad_edits_and_repairs_drift(watch, project_name):
    path, next_event, events, child = watch
    first = next_event(20)
    assert first["event"] == "reconcile" and first["trigger"] == "start" and first["create"] > 0

    for i in range(3):                            # three saves within 300 ms: one apply
        path.write_text(BASE + "".join(f"  n{j}: {{networks: [lan]}}\n" for j in range(i + 1)))
        time.sleep(0.05)
    event = next_event()
    assert event["event"] == "reconcile" and event["trigger"] == "file" and event["create"] > 0
    try:
        extra = events.get(timeout=1.0)
    except queue.Empty:
        extra = None
    assert extra is None, (event["trigger"], extra["trigger"])
    assert all(f"{project_name}-n{j}" in namespaces.list_named() for j in range(3))

    path.write_text(BASE + "  broken: {networks: [nowhere]}\n")
    event = next_event()
    assert event["event"] == "error" and "topo.yaml:5:" in event["error"] and child.poll() is None
    assert f"{project_name}-n0" in namespaces.list_named()   # last good state kept

    path.write_text(BASE)
    event = next_event()
    assert event["event"] == "reconcile" and event["delete"] > 0

    bridge = next(n for n, l in link_facts().items() if l.kind == "bridge" and n.startswith(project_name))
    started = time.monotonic()
    ip("link", "del", bridge)
    event = next_event()
    assert event["trigger"] == "netlink" and event["create"] > 0 and time.monotonic() - started < 3
    assert bridge in link_facts()
