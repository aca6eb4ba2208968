"""Shared fixtures.  Every kernel object a test makes carries its project's unique prefix
and is removed afterwards by that prefix, even when the test fails."""
from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import re
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
                    for p in processes.scan(mine)], timeout=0.5)
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


# Stand-ins for the 10.A.0.0/16 and fd00:G::/32 blocks a test's topology names: values no
# test names literally, and outside the default pools (10.128.0.0/9; a ULA /48 per project).
STAND_INS = {4: [*range(101, 128), *range(11, 20), *range(21, 30), *range(31, 40), *range(45, 50), *range(53, 60)],
             6: list(range(0xb101, 0xb200))}
BLOCK_LOCKS = "/run/lock/netcompose-test-blocks"
_TEN = re.compile(r"\b10\.(\d{1,3})\.")
_ULA = re.compile(r"\bfd00:([0-9a-f]{1,4}):", re.IGNORECASE)


class Blocks:
    """Rewrites the 10.A.x.y and fd00:G:... addresses of a text (a topology, an expected
    address or route) into blocks of the test's own, the same one for every A (G) within a
    test: each stand-in is held under a host-wide lock for the test's duration and was free on
    the host when taken, so a parallel run of the same test, or another project, never holds
    its subnets.  10.0.x.y (broad ranges such as 10.0.0.0/8) and the default pool's
    10.128.x.y stay."""

    def __init__(self) -> None:
        self.stand_in: dict[int, dict[int, int]] = {4: {}, 6: {}}
        self.locks: list[int] = []

    def __call__(self, text: str) -> str:
        text = _TEN.sub(lambda m: f"10.{self._of(4, int(m.group(1)))}.", text)
        return _ULA.sub(lambda m: f"fd00:{self._of(6, int(m.group(1), 16)):x}:", text)

    def _of(self, family: int, value: int) -> int:
        table = self.stand_in[family]
        if value in table.values() or (family == 4 and (value in (0, 128) or value > 255)):
            return value   # (a stand-in is no test's literal: a text moved twice stays put)
        if value not in table:
            table[value] = self._claim(family)
        return table[value]

    def _claim(self, family: int) -> int:
        os.makedirs(BLOCK_LOCKS, exist_ok=True)
        for candidate in random.sample(STAND_INS[family], len(STAND_INS[family])):
            if candidate in self.stand_in[family].values():
                continue
            fd = os.open(f"{BLOCK_LOCKS}/{family}-{candidate}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if candidate in _blocks_on_the_host(family):   # a project that is no test's holds it
                os.close(fd)
                continue
            self.locks.append(fd)
            return candidate
        raise RuntimeError(f"every IPv{family} stand-in block is taken")

    def release(self) -> None:
        for fd in self.locks:
            os.close(fd)
        self.locks.clear()


def _blocks_on_the_host(family: int) -> set[int]:
    """The blocks (second octet of 10/8, second group of fd00::/16) the host's routes and
    addresses use."""
    found = set()
    for args in (["route", "show", "table", "all"], ["addr", "show"]):
        text = subprocess.run(["ip", f"-{family}", "-o", *args], capture_output=True, text=True).stdout
        if family == 6:
            found.update(int(group, 16) for group in _ULA.findall(text))
            continue
        for prefix in re.findall(r"\b10\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:/\d{1,2})?", text):
            network = ipaddress.ip_network(prefix, strict=False)
            if network.prefixlen >= 16:
                found.add(network.network_address.packed[1])
    return found


@pytest.fixture
def blocks():
    """A Blocks of this test's (see there): `topo(blocks(TEXT))`, `ping(ns, blocks("10.10.0.2"))`."""
    held = Blocks()
    yield held
    held.release()


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


def fault_at(n: int, error=None):
    """An apply `fault` hook that raises at the n-th action: `error(action)`, else an
    InjectedFault naming it; and the keys of the actions it saw."""
    from netcompose.apply import InjectedFault
    seen = []

    def hook(action):
        seen.append(action.key)
        if len(seen) == n:
            raise error(action) if error else InjectedFault(f"operation {n} ({action.key})")
    return hook, seen


def interrupt_at(n: int):
    """A `fault` hook that presses Ctrl-C in place of the n-th action."""
    return fault_at(n, lambda action: KeyboardInterrupt())[0]


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
