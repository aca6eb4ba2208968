"""Pipelines and safety: exit codes, JSON and saved plans, the lock, rollback under injected
faults at every step, kill -9 at random moments, and Ctrl-C."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netcompose import Project
from netcompose.engine import Lock
from netcompose.drivers import namespaces
from netcompose.errors import ApplyError, ConflictError, Interrupted

from .conftest import REPO, fault_at, interrupt_at, needs_root, run_cli
from .test_kernel import ip

pytestmark = [needs_root, pytest.mark.kernel]

SWEEP = """
networks:
  front: {subnet: 10.91.0.0/24}
  back: {subnet: 10.92.0.0/24, mtu: 1400}
  lab: {driver: ovs, subnet: 10.93.0.0/24, vlan: 7, ovs: {datapath_type: netdev}}
containers:
  web:
    networks: {front: {ipv4_address: 10.91.0.10}, lab: {}}
    ports: ["8080:80"]
    dns: [10.91.0.1]
  app:
    networks: [front, back]
    routes: [{to: 10.94.0.0/24, via: 10.92.0.1}]
    sysctls: {net.ipv4.ip_forward: "1"}
    firewall: {ingress: [{from: front, proto: tcp, ports: [8000]}]}
  db: {networks: [back, lab]}
links:
  - endpoints: ["app:p2p0", "db:p2p0"]
    addresses: ["10.95.0.1/30", "10.95.0.2/30"]
policies:
  - {from: front, to: back, proto: tcp, ports: [5432]}
"""

CHANGED = (SWEEP.replace("10.91.0.10", "10.91.0.11").replace("mtu: 1400", "mtu: 1300")
           .replace('ports: ["8080:80"]', 'ports: ["8080:80", "9090:90"]')
           .replace("  db: {networks: [back, lab]}", "  db: {networks: [back]}\n  extra: {networks: [front]}"))


def snapshot(project: Project) -> dict:
    state = project.plan()
    return {k: (v.kind, v.attrs) for k, v in state.observed.items() if v.owner == project.name}


@pytest.mark.parametrize("scenario", ["cold", "change"])
def test_fault_at_every_operation_rolls_back(topo, private_ovs, scenario, blocks):
    before_text = blocks(SWEEP) if scenario == "change" else None
    if before_text:
        topo(before_text, ovsdb=private_ovs.remote).up()
    target = topo(blocks(CHANGED) if scenario == "change" else blocks(SWEEP), ovsdb=private_ovs.remote)
    pre = snapshot(target)
    size = len(target.plan().plan.changes)
    assert size >= 30 or scenario == "change"
    for n in range(1, size + 1):
        hook, seen = fault_at(n)
        with pytest.raises(ApplyError, match="rolled back: the host is as it was before"):
            target.up(fault=hook)
        assert snapshot(target) == pre, f"fault at operation {n} ({seen[-1]}) left the host changed"
    target.up()
    assert not target.plan().plan


def test_a_driver_failing_beside_others_rolls_back_all_of_them(topo, project_name, blocks):
    """Netlink and files apply one level at once; a real error in one undoes both."""
    blocker = Path(f"/etc/netns/.netcompose/{project_name}/n")   # where the group's folder goes
    blocker.parent.mkdir(parents=True)
    blocker.write_text("someone's file where the shared folder goes\n")
    project = topo(blocks("networks: {n: {subnet: 10.69.0.0/24}}\ncontainers: {web: {networks: [n]}}\n"))
    pre = snapshot(project)
    with pytest.raises(ApplyError, match="rolled back: the host is as it was before"):
        project.up()
    assert snapshot(project) == pre and f"{project_name}-web" not in namespaces.list_named()
    assert blocker.read_text().startswith("someone's") and not Path(f"/etc/netns/{project_name}-web").exists()
    blocker.unlink()
    project.up()
    assert not project.plan().plan


def test_a_folder_of_someone_else_where_a_link_goes_is_a_conflict(topo, project_name, blocks):
    folder = Path(f"/etc/netns/{project_name}-web")
    folder.mkdir()
    project = topo(blocks("networks: {n: {subnet: 10.70.0.0/24}}\ncontainers: {web: {networks: [n]}}\n"))
    with pytest.raises(ConflictError, match="another tool"):
        project.up()
    assert folder.is_dir() and f"{project_name}-web" not in namespaces.list_named()


def test_no_rollback_keeps_partial_state_and_next_up_converges(topo, private_ovs, blocks):
    project = topo(blocks(SWEEP), ovsdb=private_ovs.remote)
    hook, _ = fault_at(12)
    with pytest.raises(ApplyError, match="--no-rollback"):
        project.up(rollback=False, fault=hook)
    assert snapshot(project)                       # something was left for debugging
    project.up()
    assert not project.plan().plan


def test_ctrl_c_during_apply_rolls_back(topo, private_ovs, blocks):
    project = topo(blocks(SWEEP), ovsdb=private_ovs.remote)
    pre = snapshot(project)
    with pytest.raises(Interrupted, match="interrupted; rolled back") as raised:
        project.up(fault=interrupt_at(9))
    assert snapshot(project) == pre and raised.value.exit_code == 130


def test_kill_9_at_random_moments_then_up_converges(topo, project_name, tmp_path, blocks):
    text = blocks(SWEEP.replace("  lab: {driver: ovs, subnet: 10.93.0.0/24, vlan: 7, ovs: {datapath_type: netdev}}\n", ""))
    text = text.replace(", lab: {}", "").replace("[back, lab]", "[back]")
    project = topo(text)
    path = str(tmp_path / "topo.yaml")
    rng = random.Random(1234)
    journal = f"/run/netcompose/{project_name}/journal.json"
    mid_apply = 0
    for round_no in range(20):
        project.down()
        child = subprocess.Popen([sys.executable, "-m", "netcompose", "up", "-f", path, "-p", project_name],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        deadline = time.monotonic() + 20
        while not os.path.exists(journal) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.1))         # somewhere inside the apply (it takes ~0.1 s)
        child.send_signal(signal.SIGKILL)
        child.wait()
        mid_apply += os.path.exists(journal)
        project.up()
        assert not project.plan().plan, f"round {round_no}"
        assert all(row["state"] == "up" for row in project.ps()), f"round {round_no}"
        assert not os.path.exists(journal)
    assert mid_apply >= 5, f"only {mid_apply} of 20 kills landed inside an apply"
    project.down()
    assert not project.plan().observed or all(v.owner != project_name or v.kind == "sysctl"
                                               for v in project.plan().observed.values())


def test_exit_codes_json_and_saved_plans(topo, project_name, tmp_path, blocks):
    topo(blocks(SWEEP).split("  lab:")[0] + "containers:\n  c: {networks: [front]}\n")
    path = str(tmp_path / "topo.yaml")
    args = ("-f", path, "-p", project_name)
    assert run_cli("plan", "--detailed-exitcode", *args).returncode == 2
    assert run_cli("up", "--dry-run", *args).returncode == 0
    saved = str(tmp_path / "plan.json")
    assert run_cli("plan", "-o", saved, *args).returncode == 0
    result = run_cli("up", "--plan", saved, *args)
    assert result.returncode == 0, result.stderr
    assert run_cli("plan", "--detailed-exitcode", *args).returncode == 0

    assert run_cli("plan", "-o", saved, *args).returncode == 0
    ip("link", "set", "eth0", "mtu", "1280", ns=f"{project_name}-c")      # the host changes
    result = run_cli("up", "--plan", saved, *args)
    assert result.returncode == 1 and "stale plan" in result.stderr

    doc = json.loads(run_cli("plan", "--json", *args).stdout)
    assert doc["format_version"] == "1.1" and doc["resource_changes"] == []
    assert [a["op"] for a in doc["resource_drift"]] == ["update"]

    (tmp_path / "bad.yaml").write_text("networks: {a: {mtu: 1}}\n")
    result = run_cli("plan", "-f", str(tmp_path / "bad.yaml"), "-p", project_name)
    assert result.returncode == 3 and result.stderr.count("\n") == 1

    (tmp_path / "adopt.yaml").write_text("networks: {n: {}}\ncontainers: {c: {netns: nowhere-x, networks: [n]}}\n")
    result = run_cli("up", "-f", str(tmp_path / "adopt.yaml"), "-p", project_name)
    assert result.returncode == 1 and "does not exist" in result.stderr

    with Lock(project_name, 1):
        started = time.monotonic()
        result = run_cli("up", "--lock-timeout", "0.5", *args)
    assert result.returncode == 4 and "locked by another netcompose run" in result.stderr
    assert time.monotonic() - started < 10


def test_reads_share_the_lock_and_wait_for_a_change(topo, project_name, tmp_path):
    topo("networks: {lan: {}}\ncontainers: {c: {networks: [lan]}}\n")
    args = ("-f", str(tmp_path / "topo.yaml"), "-p", project_name, "--lock-timeout", "0.5")
    with Lock(project_name, 1):                       # a run made the lock file (readers never make it)
        pass
    with Lock(project_name, 1, shared=True):          # another reader: reads run beside it, changes wait
        for command in ("plan", "ps", "config", "check"):
            assert run_cli(command, *args).returncode in (0, 1), command   # check: 1, nothing is up
        result = run_cli("up", *args)
        assert result.returncode == 4 and "locked by another netcompose run" in result.stderr
    with Lock(project_name, 1):                       # an apply in progress: reads wait for it
        for command in ("plan", "ps", "config", "check"):
            result = run_cli(command, *args)
            assert result.returncode == 4 and "locked by another netcompose run" in result.stderr, command
