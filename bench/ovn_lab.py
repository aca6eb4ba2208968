"""An OVN lab on this one machine: the central Northbound and Southbound ovsdb-servers and
ovn-northd in an "underlay" network namespace, and simulated hosts (chassis), each a process
holding its own network and mount namespaces with its own ovsdb-server, ovs-vswitchd
(userspace datapath, so no kernel module) and ovn-controller.  The tests' `ovn_lab` fixture
and `bench.ovn_scale` use it; `python3 -m bench.ovn_lab` starts one and waits (Ctrl-C stops it).

    underlay namespace: bridge <prefix>ul 10.240.0.1/16, NB tcp:10.240.0.1:6641, SB :6642
       |  veth <prefix>u<i> (underlay) -- <prefix>e<i> (host), TX checksum offload off
    host h<i>: br-phy (netdev) holding <prefix>e<i> and the tunnel address 10.240.0.1<i>/16
               (userspace tunnelling routes and resolves through an OVS bridge), br-int made
               by ovn-controller (system-id h<i>, Geneve, encap-ip = that address)

A host's namespaces have tmpfs over netcompose's state folders (/run/netns, /etc/netns,
/run/netcompose, /var/log/netcompose, /var/cache/netcompose), so hosts do not see each
other's sandboxes, and the machine's are not touched.  Each host's ovs-vswitchd makes its own
`ovs-netdev` device in its own namespace.  The 10.240.0.0/16 addresses exist only inside the
lab's namespaces.  Every daemon is started detached with a pidfile in the lab's folder and
stopped by that pid; the namespaces die with their holders; the folder is removed.

`<folder>/on-host HOST ARGV...` runs ARGV inside a host from a shell, with that host's
NETCOMPOSE_OVSDB, NETCOMPOSE_HOST and NETCOMPOSE_OVN_NB (the command template a cross-host
`check`/`ps` takes: `--via '<folder>/on-host {host} python3 -m netcompose'`).
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVN_SCHEMAS = {"nb": "/usr/share/ovn/ovn-nb.ovsschema", "sb": "/usr/share/ovn/ovn-sb.ovsschema"}
PROGRAMS = ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ovn-northd", "ovn-controller", "ovn-nbctl",
            "unshare", "nsenter")
LAB_FOLDER_MIDDLE = "-ovnlab-"   # a lab's temp folder: <prefix>-ovnlab-<random>
LAB_FOLDER_GLOB = f"*{LAB_FOLDER_MIDDLE}*"
UNDERLAY = "10.240.0.{}"
UNDERLAY_PREFIX_LEN = 16
# netcompose's state folders: a host's private copies, so each host has its own sandboxes.
HOST_FOLDERS = ("/run/netns", "/etc/netns", "/run/netcompose", "/var/log/netcompose", "/var/cache/netcompose")


ON_HOST = """#!/bin/sh
# on-host HOST ARGV...: run ARGV inside the OVN lab's simulated host HOST, in this folder.
case "$1" in ''|*/*|.*) echo "on-host: no host '$1' in this lab" >&2; exit 2;; esac
folder={folder}
[ -f "$folder/$1/holder.pid" ] || {{ echo "on-host: no host '$1' in this lab" >&2; exit 2; }}
. "$folder/$1/env"
pid=$(cat "$folder/$1/holder.pid")
shift
exec nsenter -t "$pid" -n -m --wd="$PWD" -- "$@"
"""


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if not shutil.which(p)] + [s for s in (VSWITCH_SCHEMA, *OVN_SCHEMAS.values())
                                                           if not Path(s).exists()]


def wait_for(what: str, probe, timeout: float = 30.0, interval: float = 0.05):
    """Poll probe() until it returns something true; that value, or TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Holder:
    """A process holding new namespaces (network, and mount when `folders` are given, with a
    tmpfs over each of them); commands enter them with nsenter.  Everything in the namespaces
    dies with the holder, once the daemons started in them are stopped."""

    def __init__(self, folders: tuple[str, ...] = ()) -> None:
        self.folders = folders
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        setup = "ip link set lo up"
        kinds = ["--net"]
        if self.folders:
            kinds.append("--mount")
            # Private propagation: the tmpfs mounts (and the netns bind mounts netcompose
            # makes under them later) stay in this namespace.
            setup = ("mount --make-rprivate / && for d in " + " ".join(self.folders) +
                     "; do mkdir -p $d && mount -t tmpfs tmpfs $d || exit 1; done && " + setup)
        # The holder dies with us (SIGKILL on its parent's death), so a killed run leaves no namespace
        # held by it; its daemons are reaped by the next lab (see reap_abandoned).
        self.process = subprocess.Popen(["unshare", *kinds, "sh", "-c", setup + " && echo ready && exec setpriv "
                                         "--pdeathsig KILL -- sleep infinity"],
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"could not make namespaces (unshare {' '.join(kinds)}): exit {self.process.wait()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def argv(self, argv: list[str], cwd: str | Path | None = None) -> list[str]:
        kinds = ["-n", "-m"] if self.folders else ["-n"]
        # nsenter -m moves to the namespace's root folder unless told where to work.
        return ["nsenter", "-t", str(self.pid), *kinds, f"--wd={cwd or os.getcwd()}", "--", *argv]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


class Daemons:
    """Detached daemons started inside a Holder's namespaces, each with its pidfile, control
    socket and log in `folder`, stopped by pid."""

    def __init__(self, holder: Holder, folder: Path, env: dict[str, str]) -> None:
        self.holder, self.folder, self.env = holder, folder, env
        self.pids: list[int] = []

    def run(self, argv: list[str], check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(self.holder.argv(argv), capture_output=True, text=True, env=self.env, timeout=timeout,
                                **kwargs)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    def start(self, name: str, *args: str, program: str | None = None) -> None:
        """Start a daemon; its control socket is <folder>/<name>.ctl, except ovn-controller's
        (it takes no --unixctl: <folder>/ovn-controller.<pid>.ctl)."""
        pidfile = self.folder / f"{name}.pid"
        control = [] if name == "ovn-controller" else [f"--unixctl={self.folder / name}.ctl"]
        self.run([program or name, *args, f"--pidfile={pidfile}", *control, f"--log-file={self.folder / name}.log",
                  "--detach"])
        self.pids.append(int(pidfile.read_text()))

    def stop(self) -> None:
        """SIGTERM every daemon, newest first, and SIGKILL what is still there after 5 s."""
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for pid in reversed(self.pids):
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids.clear()


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first), or [] when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    # A detached daemon is not our child, so nobody reaps it here: a zombie counts as gone.
    return _stat(pid)[:1] not in ([], ["Z"])


def identity(pid: int) -> str:
    """pid and start time: a pid the kernel gave to another process since is told apart."""
    return f"{pid} {_stat(pid)[19]}"


def reap_abandoned(top: Path) -> None:
    """Labs whose owner died without stopping them (SIGKILL, a timeout): stop their daemons,
    each by the pid in its pidfile and only if its command line names that lab's folder,
    and remove the folder."""
    for folder in top.glob(LAB_FOLDER_GLOB):
        try:
            owner = (folder / "owner").read_text().strip()
        except OSError:
            continue   # a lab being made, or not one of ours
        pid = int(owner.split()[0])
        if alive(pid) and identity(pid) == owner:
            continue
        for pidfile in folder.rglob("*.pid"):
            try:
                daemon = int(pidfile.read_text())
                if str(folder) in Path(f"/proc/{daemon}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(daemon, signal.SIGKILL)
            except (OSError, ValueError):
                continue
        shutil.rmtree(folder, ignore_errors=True)


def daemon_env(folder: Path) -> dict[str, str]:
    """The environment that keeps OVS and OVN tools on `folder` (never the system's /run/openvswitch)."""
    env = dict(os.environ)
    for tool in ("OVS", "OVN"):
        for part in ("RUNDIR", "LOGDIR", "DBDIR", "SYSCONFDIR"):
            env[f"{tool}_{part}"] = str(folder)
    return env


class Host:
    """A simulated chassis: own network and mount namespaces, ovsdb-server, ovs-vswitchd
    (netdev), br-phy with the underlay port and tunnel address, and ovn-controller."""

    def __init__(self, lab: "OvnLab", name: str, index: int) -> None:
        self.lab, self.name, self.index = lab, name, index
        self.folder = lab.folder / name
        self.folder.mkdir()
        self.holder = Holder(HOST_FOLDERS)
        self.daemons = Daemons(self.holder, self.folder, daemon_env(self.folder))
        self.ovsdb = f"unix:{self.folder}/db.sock"
        self.address = UNDERLAY.format(10 + index)
        self.underlay_port = f"{lab.prefix}e{index}"

    def start(self) -> None:
        self.holder.start()
        # Its end of the underlay wire, made straight in the host's namespace.
        subprocess.run(["ip", "link", "add", f"{self.lab.prefix}u{self.index}", "netns", str(self.lab.underlay.pid),
                        "type", "veth", "peer", "name", self.underlay_port, "netns", str(self.holder.pid)],
                       check=True, capture_output=True)
        self.lab.central.run(["ip", "link", "set", f"{self.lab.prefix}u{self.index}", "master", self.lab.bridge, "up"])
        self.lab.central.run(["ethtool", "-K", f"{self.lab.prefix}u{self.index}", "tx", "off"])
        d, f = self.daemons, self.folder
        d.run(["ovsdb-tool", "create", f"{f}/conf.db", VSWITCH_SCHEMA])
        d.start("ovsdb-server", f"{f}/conf.db", f"--remote=punix:{f}/db.sock")
        self.vsctl("--no-wait", "init")
        d.start("ovs-vswitchd", self.ovsdb)
        self.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
                   "--", "add-port", "br-phy", self.underlay_port)
        for argv in (["ethtool", "-K", self.underlay_port, "tx", "off"],
                     ["ip", "link", "set", self.underlay_port, "up"],
                     ["ip", "addr", "add", f"{self.address}/{UNDERLAY_PREFIX_LEN}", "dev", "br-phy"],
                     ["ip", "link", "set", "br-phy", "up"]):
            d.run(argv)
        self.vsctl("set", "open_vswitch", ".", f"external_ids:system-id={self.name}",
                   f"external_ids:ovn-remote={self.lab.southbound}", "external_ids:ovn-encap-type=geneve",
                   f"external_ids:ovn-encap-ip={self.address}", "external_ids:ovn-bridge-datapath-type=netdev",
                   f"external_ids:hostname={self.name}")
        d.start("ovn-controller", self.ovsdb)
        (self.folder / "holder.pid").write_text(f"{self.holder.pid}\n")
        (self.folder / "env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items()
                                                 if k.startswith("NETCOMPOSE_") or k == "PYTHONPATH"))

    def vsctl(self, *args: str) -> str:
        return self.daemons.run(["ovs-vsctl", f"--db={self.ovsdb}", "--timeout=30", *args]).stdout.strip()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What netcompose on this host reads: its OVS, its name, the lab's Northbound."""
        return {**self.daemons.env, "NETCOMPOSE_OVSDB": self.ovsdb, "NETCOMPOSE_HOST": self.name,
                "NETCOMPOSE_OVN_NB": self.lab.northbound, "PYTHONPATH": str(REPO), **(extra or {})}

    def run(self, argv: list[str], env: dict[str, str] | None = None, check: bool = False, timeout: float = 120,
            cwd: str | Path | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run argv inside this host (its network and mount namespaces), with `env` over
        the host's environment (see env())."""
        result = subprocess.run(self.holder.argv(argv, cwd or REPO), capture_output=True, text=True,
                                env=self.env(env), timeout=timeout, **kwargs)
        if check and result.returncode:
            raise RuntimeError(f"{self.name}: {' '.join(map(str, argv))}: exit {result.returncode}: {result.stderr}")
        return result

    def netcompose(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """`python3 -m netcompose ARGS` on this host, from this checkout."""
        return self.run([sys.executable, "-m", "netcompose", *args], env=env, timeout=timeout)

    def stop(self) -> None:
        try:
            self.daemons.stop()
        finally:
            self.holder.stop()


class OvnLab:
    """The whole lab: start() builds it, stop() removes everything it made (also after a
    failed start); a context manager does both."""

    def __init__(self, hosts: int = 3, prefix: str | None = None, folder: Path | None = None) -> None:
        self.prefix = prefix or "oh" + secrets.token_hex(2)
        self.made_folder = folder is None
        if folder is None:
            reap_abandoned(Path(tempfile.gettempdir()))
        self.folder = Path(folder or tempfile.mkdtemp(prefix=f"{self.prefix}{LAB_FOLDER_MIDDLE}"))
        self.bridge = f"{self.prefix}ul"
        self.underlay = Holder()
        self.central = Daemons(self.underlay, self.folder, daemon_env(self.folder))
        address = UNDERLAY.format(1)
        self.northbound, self.southbound = f"tcp:{address}:6641", f"tcp:{address}:6642"
        # The tests and tools on this machine reach the central databases by their sockets.
        self.nb_socket, self.sb_socket = f"unix:{self.folder}/nb.sock", f"unix:{self.folder}/sb.sock"
        self.hosts = {f"h{i}": Host(self, f"h{i}", i) for i in range(1, hosts + 1)}
        self.on_host = self.folder / "on-host"
        self.counting_transactions: int | None = None   # where the NB log was when counting began

    def __enter__(self) -> "OvnLab":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        (self.folder / "owner").write_text(identity(os.getpid()) + "\n")
        self.underlay.start()
        c, f = self.central, self.folder
        for argv in (["ip", "link", "add", self.bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"{UNDERLAY.format(1)}/{UNDERLAY_PREFIX_LEN}", "dev", self.bridge],
                     ["ip", "link", "set", self.bridge, "up"]):
            c.run(argv)
        for db, port in (("nb", 6641), ("sb", 6642)):
            c.run(["ovsdb-tool", "create", f"{f}/{db}.db", OVN_SCHEMAS[db]])
            c.start(f"ovsdb-server-{db}", f"{f}/{db}.db", f"--remote=punix:{f}/{db}.sock",
                    f"--remote=ptcp:{port}:{UNDERLAY.format(1)}", program="ovsdb-server")
        c.start("ovn-northd", f"--ovnnb-db={self.nb_socket}", f"--ovnsb-db={self.sb_socket}")
        for host in self.hosts.values():
            host.start()
        self.on_host.write_text(ON_HOST.format(folder=shlex.quote(str(self.folder))))
        self.on_host.chmod(0o755)
        wait_for("every host's chassis in the Southbound DB",
                 lambda: set(self.sbctl("--bare", "--columns=name", "list", "chassis").split()) >= set(self.hosts))
        # The userspace datapath drops a tunnelled packet whose next hop it has not resolved
        # yet: hosts that have talked on the underlay (as real ones have) lose no first packets.
        for host in self.hosts.values():
            for other in self.hosts.values():
                if other is not host:
                    host.run(["ping", "-c1", "-W2", other.address])

    def nb_transactions(self) -> int:
        """Transactions the hosts sent the Northbound DB (over TCP; ovn-northd's own, on the
        socket, are not counted) since the first call, which turns on the server's jsonrpc
        debug log that they are counted in."""
        log = self.folder / "ovsdb-server-nb.log"
        if self.counting_transactions is None:
            subprocess.run(["ovs-appctl", "-t", f"{self.folder}/ovsdb-server-nb.ctl", "vlog/set", "jsonrpc:file:dbg"],
                           check=True, capture_output=True, env=self.central.env)
            self.counting_transactions = log.stat().st_size
        with log.open("rb") as f:
            f.seek(self.counting_transactions)
            return sum(1 for line in f if b'|tcp:' in line and b'received request, method="transact"' in line)

    def nbctl(self, *args: str) -> str:
        return self._ctl("ovn-nbctl", self.nb_socket, args)

    def sbctl(self, *args: str) -> str:
        return self._ctl("ovn-sbctl", self.sb_socket, args)

    def _ctl(self, program: str, db: str, args: tuple[str, ...]) -> str:
        return subprocess.run([program, f"--db={db}", "--timeout=30", *args], check=True, capture_output=True,
                              text=True, env=self.central.env).stdout.strip()

    def stop(self) -> None:
        """Stop every daemon by pid, then the holders (their namespaces, with the veths and
        everything netcompose made in them, go too); remove the folder.  Safe to call twice."""
        try:
            for host in self.hosts.values():
                try:
                    host.stop()
                except Exception:   # one host's failure must not leave the others running
                    pass
            self.central.stop()
        finally:
            self.underlay.stop()
            if self.made_folder:
                shutil.rmtree(self.folder, ignore_errors=True)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description="Start an OVN lab (central + simulated hosts) and wait.")
    parser.add_argument("--hosts", type=int, default=3)
    args = parser.parse_args()
    # SIGTERM stops the lab as Ctrl-C does (the default action would leave its daemons running).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with OvnLab(hosts=args.hosts) as lab:
        print(f"OVN lab {lab.prefix}: Northbound {lab.northbound} (here: {lab.nb_socket}), folder {lab.folder}")
        print(f"hosts {', '.join(lab.hosts)}: run a command on one with {lab.on_host} HOST COMMAND..., e.g.\n"
              f"  {lab.on_host} h1 python3 -m netcompose up -f FILE")
        print("Ctrl-C or SIGTERM stops it.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
