"""Shared fixtures.  Every kernel object a test makes carries its project's unique prefix
and is removed afterwards by that prefix, even when the test fails."""
from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from netcompose import Project
from netcompose.drivers import namespaces, rtnl

REPO = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def remove_by_prefix(prefix: str) -> None:
    from netcompose.drivers import processes
    mine = [ns for ns in namespaces.list_named() if ns.startswith(prefix)]
    processes.stop([processes.Victim(p.pid, p.start, p.ns, p.argv, group=False)
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
    shutil.rmtree(f"/run/netcompose/{prefix}", ignore_errors=True)
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


class PrivateOvs:
    """ovsdb-server and ovs-vswitchd (userspace datapath) on sockets in a temp dir."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.remote = f"unix:{folder}/db.sock"
        self.env = {**os.environ, "OVS_RUNDIR": str(folder), "OVS_LOGDIR": str(folder),
                    "OVS_DBDIR": str(folder), "OVS_SYSCONFDIR": str(folder)}
        self.pids: list[int] = []

    def start(self) -> None:
        f = self.folder
        # The userspace datapath's device (ovs-netdev) is one per host: two private OVS
        # instances at once (parallel test runs on a shared machine) would fight over it.
        self.lock_fd = os.open("/run/netcompose-test-ovs.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        # The userspace datapath leaves its device behind; remove it only if we made it.
        self.made_datapath_device = not Path("/sys/class/net/ovs-netdev").exists()
        subprocess.run(["ovsdb-tool", "create", f"{f}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"],
                       check=True, env=self.env)
        for name, args in (("ovsdb-server", [f"{f}/conf.db", f"--remote=punix:{f}/db.sock"]),
                           ("ovs-vswitchd", [self.remote])):
            subprocess.run([name, *args, f"--pidfile={f}/{name}.pid", f"--unixctl={f}/{name}.ctl",
                            f"--log-file={f}/{name}.log", "--detach"], check=True, env=self.env)
            self.pids.append(int(Path(f"{f}/{name}.pid").read_text()))
            if name == "ovsdb-server":
                self.vsctl("--no-wait", "init")

    def vsctl(self, *args: str) -> str:
        return subprocess.run(["ovs-vsctl", f"--db={self.remote}", "--timeout=10", *args], check=True,
                              capture_output=True, text=True, env=self.env).stdout.strip()

    def stop(self) -> None:
        import signal
        # --cleanup makes ovs-vswitchd remove its datapath device (ovs-netdev) on exit.
        subprocess.run(["ovs-appctl", "-t", f"{self.folder}/ovs-vswitchd.ctl", "exit", "--cleanup"],
                       capture_output=True, env=self.env, timeout=20)
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        if getattr(self, "made_datapath_device", False) and Path("/sys/class/net/ovs-netdev").exists():
            subprocess.run(["ip", "link", "del", "ovs-netdev"], capture_output=True)
        if getattr(self, "lock_fd", None) is not None:
            os.close(self.lock_fd)


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
