"""A private Open vSwitch: ovsdb-server and ovs-vswitchd (userspace datapath) on sockets in a
folder of the caller's, stopped by pid; the tests' `private_ovs` fixture and `bench.ovs_scale`
use it (it needs the OVS programs, not pytest).  It never touches the system OVS."""
from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path


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
