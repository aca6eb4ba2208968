"""Shared fixtures.  Every kernel object a test makes carries its project's unique prefix
and is removed afterwards by that prefix, even when the test fails."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.private_ovs import PrivateOvs
from netcompose import Project
from netcompose.drivers import namespaces, rtnl

REPO = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def remove_by_prefix(prefix: str) -> None:
    from netcompose.drivers import processes
    mine = [ns for ns in namespaces.list_named() if ns.startswith(prefix)]
    processes.stop([processes.Victim(p.pid, p.start, p.ns, p.argv)
                    for p in processes.scan(processes.namespace_inodes(mine))], timeout=0.5)
    shutil.rmtree(f"{processes.LOG_ROOT}/{prefix}", ignore_errors=True)
    for ns in namespaces.list_named():
        if ns.startswith(prefix):
            namespaces.delete(ns)
    sock = rtnl.RtnlSocket()
    try:
        for _ in range(100):
            mine = [link.name for link in sock.links() if link.name.startswith(prefix)]
            if not mine:
                break
            sock.execute([rtnl.del_link(name) for name in mine])
            time.sleep(0.05)
    finally:
        sock.close()
    for entry in [*Path("/etc/netns").glob(f"{prefix}*"), *Path("/etc/netns/.netcompose").glob(f"{prefix}*")]:
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        else:
            shutil.rmtree(entry, ignore_errors=True)
    try:
        os.rmdir("/etc/netns/.netcompose")  # when no other project's folder is left in it
    except OSError:
        pass
    for folder in Path("/run/netcompose").glob(f"{prefix}*"):   # the test's projects, "<prefix>b" too
        shutil.rmtree(folder, ignore_errors=True)
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
        for line in tables:
            parts = line.split()
            if len(parts) == 3 and prefix in parts[2]:
                subprocess.run(["nft", "delete", "table", parts[1], parts[2]], capture_output=True)


@pytest.fixture
def project_name():
    name = "t" + secrets.token_hex(3)[:5]
    yield name
    remove_by_prefix(name)


@pytest.fixture
def topo(tmp_path, project_name):
    """Write a topology file and load it as a Project of the test's unique name."""

    def make(text: str, name: str = "topo.yaml", **options) -> Project:
        path = tmp_path / name
        path.write_text(text)
        return Project.load(path, project=project_name, **options)

    return make


def terminate(child: subprocess.Popen) -> None:
    """SIGTERM a CLI we started (watch, logs -f), SIGKILL if it does not exit in 10 s."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", "-m", "netcompose", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(scope="session")
def ovn_lab():
    """One OVN lab (central databases, ovn-northd, three simulated hosts h1..h3) shared by the
    session's OVN tests; each test removes its own logical rows and sandboxes."""
    from bench.ovn_lab import OvnLab, missing_programs
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if missing_programs():
        pytest.skip(f"OVN lab needs {', '.join(missing_programs())} (scripts/install-deps.sh)")
    with OvnLab() as lab:
        yield lab


@pytest.fixture(scope="session")
def private_ovs(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ovs = PrivateOvs(tmp_path_factory.mktemp("ovs"))
    try:
        ovs.start()
        yield ovs
    finally:
        ovs.stop()
