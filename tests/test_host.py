"""Trust at the edges, against the real kernel: adopted namespaces left exactly as they were,
the host's namespace refused, address space checked against a (simulated) host and other
projects, sticky addresses, crash recovery, truthful failure and preflight checks."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netcompose.drivers import namespaces
from netcompose.errors import ApplyError, ConflictError

from .conftest import REPO, interrupt_at, needs_root, run_cli

pytestmark = [needs_root, pytest.mark.kernel]


def sh(*args: str, ns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def namespace_snapshot(ns: str) -> dict[str, str]:
    """What `down` must leave byte-identical in an adopted namespace."""
    return {"addr": sh("ip", "-d", "addr", ns=ns), "route": sh("ip", "route", ns=ns),
            "route6": sh("ip", "-6", "route", ns=ns),
            "sysctl": sh("sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", ns=ns)}


@pytest.fixture
def lived_in(project_name):
    """A namespace someone else made and uses: an interface, addresses, a default route and a
    static route of its own."""
    ns = f"{project_name}-legacy"
    namespaces.create(ns)
    sh("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", ns=ns)   # no "tentative" to wait out
    sh("ip", "link", "add", f"{project_name}a", "type", "veth", "peer", "name", f"{project_name}b", ns=ns)
    sh("ip", "addr", "add", "192.168.77.2/24", "dev", f"{project_name}a", ns=ns)
    for dev in ("lo", f"{project_name}a", f"{project_name}b"):
        sh("ip", "link", "set", dev, "up", ns=ns)
    sh("ip", "route", "add", "default", "via", "192.168.77.1", ns=ns)
    sh("ip", "route", "add", "10.250.0.0/24", "via", "192.168.77.3", ns=ns)
    for _ in range(200):  # the veth's carrier comes up asynchronously: snapshots before it say "linkdown"
        if "linkdown" not in sh("ip", "route", ns=ns):
            break
        time.sleep(0.01)
    return ns


ADOPT = """
networks: {{n: {{subnet: 10.161.0.0/24{internal}}}}}
containers:
  mine: {{networks: [n]}}
  old:
    {how}
    networks: [n]
{extra}
"""


def adopt(ns: str, internal: bool = True, extra: str = "", pid: int | None = None) -> str:
    how = f"pid: {pid}" if pid else f"netns: {ns}"
    return ADOPT.format(internal=", internal: true" if internal else "", how=how, extra=extra)


@pytest.mark.parametrize("clash", ["default", "static"])
def test_a_route_the_adopted_namespace_has_is_a_conflict(topo, lived_in, project_name, clash):
    extra = "    routes: [{to: 10.250.0.0/24, via: 10.161.0.1}]" if clash == "static" else ""
    project = topo(adopt(lived_in, internal=clash == "static", extra=extra))
    before = namespace_snapshot(lived_in)
    with pytest.raises(ConflictError, match="route:.*another tool"):
        project.up()
    assert namespace_snapshot(lived_in) == before
    assert f"{project_name}-mine" not in namespaces.list_named()
    result = run_cli("up", "-f", str(project.spec.doc.file), "-p", project_name)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "route:" in result.stderr


def test_down_leaves_an_adopted_namespace_exactly_as_it_was(topo, lived_in, project_name):
    """Our endpoint, address and route come and go; its own routes and sysctls stay."""
    before = namespace_snapshot(lived_in)
    extra = ("    routes: [{to: 10.251.0.0/24, via: 10.161.0.1}]\n"
             "    sysctls: {net.ipv4.ip_forward: '1', net.ipv4.conf.all.rp_filter: '2'}")
    project = topo(adopt(lived_in, extra=extra))
    project.up()
    during = namespace_snapshot(lived_in)
    assert "10.251.0.0/24 via 10.161.0.1" in during["route"] and "10.250.0.0/24 via 192.168.77.3" in during["route"]
    assert "default via 192.168.77.1" in during["route"] and "= 1" in during["sysctl"]
    assert not project.plan().plan
    # A sysctl the file stops setting goes back at once; the rest on down.
    project = topo(adopt(lived_in, extra=extra.replace(", net.ipv4.conf.all.rp_filter: '2'", "")))
    project.up()
    assert "rp_filter = " + before["sysctl"].split("rp_filter = ")[1] in namespace_snapshot(lived_in)["sysctl"]
    project.down()
    assert namespace_snapshot(lived_in) == before
    assert not project.plan(down=True).plan


def test_pid_adoption_of_a_lived_in_namespace(topo, lived_in, project_name):
    sleeper = subprocess.Popen(["ip", "netns", "exec", lived_in, "sleep", "60"])
    try:
        before = namespace_snapshot(lived_in)
        project = topo(adopt(lived_in, pid=sleeper.pid))
        project.up()
        assert "10.161.0.0/24" in namespace_snapshot(lived_in)["route"]
        project.down()
        assert namespace_snapshot(lived_in) == before
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("how", ["pid: HOLDER", "pid: SELF", "netns: HOST"])
def test_the_hosts_own_namespace_is_refused(tmp_path, project_name, how):
    """Inside a simulated host: a process of the host (the simulation's holder), netcompose's
    own pid, and a name bound to the host's namespace; each is refused before any change."""
    with SimulatedHost(project_name) as host:
        host.run("ip", "netns", "attach", f"{project_name}-h", str(host.holder.pid))
        path = tmp_path / "topo.yaml"
        path.write_text("networks: {n: {subnet: 10.161.0.0/24, internal: true}}\n"
                        f"containers:\n  old:\n    {how}\n    networks: [n]\n".replace("HOST", f"{project_name}-h")
                        .replace("HOLDER", str(host.holder.pid)))
        before = host.snapshot()
        # $$ of the shell is the pid of the netcompose process it execs.
        script = f'sed -i "s/SELF/$$/" {path} && exec {sys.executable} -m netcompose up -f {path} -p {project_name}'
        result = host.run("sh", "-c", script, check=False)
        assert result.returncode == 3, result.stderr
        assert "host's own network namespace" in result.stderr and result.stderr.count("\n") == 1
        assert host.snapshot() == before


def test_up_without_nft_changes_nothing(topo, project_name, tmp_path):
    text = "networks: {n: {subnet: 10.162.0.0/24}}\ncontainers: {c: {networks: [n], ports: ['8080:80']}}\n"
    topo(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "sysctl"):  # a PATH with everything but nft
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(bin_dir)}
    result = subprocess.run([sys.executable, "-m", "netcompose", "up", "-f", str(tmp_path / "topo.yaml"),
                             "-p", project_name], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 1 and "nft" in result.stderr and result.stderr.count("\n") == 1
    assert not [n for n in namespaces.list_named() if n.startswith(project_name)]
    assert project_name not in sh("ip", "-d", "link") and not list(Path("/etc/netns").glob(f"{project_name}*"))


@pytest.mark.parametrize("bad", ["metric", "lo"])
def test_any_exception_inside_apply_rolls_back(topo, project_name, monkeypatch, bad):
    """Not only OSErrors: a value the wire format cannot carry, a driver bug."""
    text = "networks: {n: {subnet: 10.166.0.0/24}}\ncontainers: {c: {networks: [n]}, d: {networks: [n]}}\n"
    project = topo(text)
    from netcompose.drivers import rtnl
    if bad == "metric":
        real = rtnl.new_route

        def huge_metric(dst, oif, via, metric=None):
            return real(dst, oif, via, 2 ** 40)   # struct.error, not an OSError
        monkeypatch.setattr(rtnl, "new_route", huge_metric)
    else:
        monkeypatch.setattr(rtnl, "no_ipv6_autoconf", lambda name: 1 / 0)
    with pytest.raises(ApplyError, match="rolled back: the host is as it was before"):
        project.up()
    assert not [n for n in namespaces.list_named() if n.startswith(project_name)]
    assert project_name not in sh("ip", "-o", "link")


def test_address_space_is_checked_against_the_host_and_other_projects(tmp_path, project_name):
    p = project_name
    with SimulatedHost(p) as host:
        def up(project: str, text: str) -> subprocess.CompletedProcess:
            path = tmp_path / f"{project}.yaml"
            path.write_text(text)
            return host.netcompose("up", "-f", str(path), "-p", project)
        one = "networks: {{n: {{subnet: {}}}}}\ncontainers: {{c: {{networks: [n]}}}}\n"
        before = host.snapshot()
        for subnet, named in (("198.51.100.0/25", f"198.51.100.0/24, a route of the host (dev {p}up)"),
                              ("172.31.5.0/24", "172.31.0.0/16, a route of the host"),
                              ("203.0.113.0/24", f"203.0.113.7/32, an address of the host (dev {p}up)"),
                              ("127.0.0.0/24", "the loopback range"), ("0.0.0.0/0", "the 'this network' range"),
                              ("224.1.0.0/24", "the multicast range")):
            result = up(f"{p}a", one.format(subnet))
            assert result.returncode == 3 and result.stderr.count("\n") == 1, result.stderr
            assert f"subnet {subnet} of network 'n' overlaps {named}" in result.stderr
        assert host.snapshot() == before
        assert up(f"{p}a", one.format("10.161.0.0/24")).returncode == 0
        result = up(f"{p}b", one.format("10.161.0.128/25"))
        assert result.returncode == 3 and f"of project '{p}a'" in result.stderr
        # Projects allocating from the same pool at once get a subnet each.
        pool = "networks: {n: {}}\ncontainers:\n" + "".join(f"  c{i}: {{networks: [n]}}\n" for i in range(10))
        runs = []
        for i in range(4):
            path = tmp_path / f"pool{i}.yaml"
            path.write_text(pool)
            runs.append(subprocess.Popen(["nsenter", "-t", str(host.holder.pid), "-n", "-m", sys.executable, "-m",
                                          "netcompose", "up", "-f", str(path), "-p", f"{p}x{i}"], cwd=REPO,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True))
        assert all(run.wait(timeout=120) == 0 for run in runs), [run.stderr.read() for run in runs]
        gateways = [line.split()[3] for line in host.run("ip", "-o", "-4", "addr").stdout.splitlines()
                    if " 10.128." in line]   # the default pool
        assert len(gateways) == 4 and len({g.rsplit(".", 1)[0] for g in gateways}) == 4, gateways


LAB = """
networks:
  front: {subnet: 10.171.0.0/24}
  back: {subnet: 10.172.0.0/24, mtu: 1400}
containers:
  web: {networks: [front], ports: ["8080:80"], dns: [10.171.0.1]}
  app:
    networks: [front, back]
    routes: [{to: 10.174.0.0/24, via: 10.172.0.1}]
    sysctls: {net.ipv4.ip_forward: "1"}
    firewall: {ingress: [{from: front, proto: tcp, ports: [8000]}]}
  db: {networks: [back]}
links:
  - endpoints: ["app:p2p0", "db:p2p0"]
    addresses: ["10.175.0.1/30", "10.175.0.2/30"]
"""


def leftovers(prefix: str) -> list[str]:
    """Everything of a project on the host, by its test prefix."""
    found = [n for n in namespaces.list_named() if n.startswith(prefix)]
    found += [line.split(":")[1].strip() for line in sh("ip", "-o", "link").splitlines() if prefix in line]
    found += [str(p) for p in Path("/etc/netns").glob(f"{prefix}*")]
    found += [line for line in sh("nft", "list", "tables").splitlines() if prefix in line]
    return found


def test_any_sequence_of_kill_9_during_up_and_down_then_one_run_converges(topo, project_name, tmp_path):
    project = topo(LAB)
    rng = random.Random(int(os.environ.get("SEED", 4321)))
    command = [sys.executable, "-m", "netcompose", "-f", str(tmp_path / "topo.yaml"), "-p", project_name]
    for round_no in range(int(os.environ.get("ROUNDS", 8))):
        for _ in range(rng.randint(1, 3)):   # kills in a row: each run recovers from the last one's
            child = subprocess.Popen(command + [rng.choice(["up", "down"])], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=REPO)
            time.sleep(rng.uniform(0.25, 0.7))   # start-up takes ~0.25 s; an apply ~0.1-0.3 s
            child.send_signal(signal.SIGKILL)
            child.wait()
        if rng.random() < 0.5:
            result = subprocess.run(command + ["up"], capture_output=True, text=True, cwd=REPO)
            assert result.returncode == 0, f"round {round_no}: {result.stderr}"
            assert not project.plan().plan, f"round {round_no}"
            assert all(row["state"] == "up" for row in project.ps()), f"round {round_no}"
        else:
            result = subprocess.run(command + ["down"], capture_output=True, text=True, cwd=REPO)
            assert result.returncode == 0, f"round {round_no}: {result.stderr}"
            assert not leftovers(project_name), f"round {round_no}"


@pytest.mark.parametrize("journaled", [True, False])
@pytest.mark.parametrize("end", ["wire", "endpoint"])
def test_a_half_made_link_is_replaced_when_journaled_else_a_conflict(topo, project_name, journaled, end):
    """A crash between creating a veth and marking its first end leaves that end unmarked:
    the journal makes it ours (replaced), without it the name is someone else's (a conflict)."""
    import json
    from netcompose import names
    project = topo(LAB)
    project.up()
    ns, dev = (f"{project_name}-app", "p2p0") if end == "wire" else (None, names.host_ifname(project_name, "ep",
                                                                                             "web/front"))
    sh("ip", "link", "set", "dev", dev, "alias", "", ns=ns)   # as if killed before the mark
    key = f"link:{ns or ''}/{dev}"
    if journaled:
        Path(f"/run/netcompose/{project_name}/journal.json").write_text(json.dumps({"creates": [key]}))
        project.up()
        assert not project.plan().plan and "netcompose:" in sh("ip", "-d", "link", "show", dev, ns=ns)
    else:
        with pytest.raises(ConflictError, match=f"{key} already exists and belongs to another tool"):
            project.up()


def test_a_level_of_only_implicit_actions_sends_nothing():
    from netcompose.apply import execute
    from netcompose.plan import Action, Plan
    from netcompose.resources import address
    gone = address("ns", "eth0", "10.0.0.2", 24, "link:ns/eth0", owner="p")
    progress = execute(Plan([Action("delete", gone.key, "address", None, gone, implicit=True)]), {})
    assert progress.failed is None and [a.key for a in progress.done] == [gone.key]


def test_addresses_stay_through_inserts_deleted_veths_and_hand_made_changes(topo, project_name):
    from netcompose import names
    def addresses(project) -> dict:
        return {(row["container"], row["network"]): row["ipv4"] for row in project.ps()}
    project = topo("networks: {n: {}}\ncontainers: {x: {networks: [n]}, y: {networks: [n]}}\n")
    project.up()
    given = addresses(project)
    project = topo("networks: {m: {}, n: {}}\n"
                   "containers: {x: {networks: [n]}, z: {networks: [m, n]}, y: {networks: [n]}}\n")
    project.up()
    now = addresses(project)
    assert {k: now[k] for k in given} == given and now[("z", "n")] not in given.values()
    bridge = names.host_ifname(project_name, "net", "n")
    gateway = sh("ip", "-o", "-4", "addr", "show", "dev", bridge).split()[3]
    sh("ip", "link", "del", names.host_ifname(project_name, "ep", "y/n"))      # y's veth, by hand
    sh("ip", "addr", "flush", "dev", "eth0", ns=f"{project_name}-x")         # x's address moved by hand
    sh("ip", "addr", "add", given[("x", "n")].rsplit(".", 1)[0] + ".200/24", "dev", "eth0", ns=f"{project_name}-x")
    sh("ip", "addr", "flush", "dev", bridge)                                  # the bridge's subnet changed
    sh("ip", "addr", "add", "10.179.0.1/24", "dev", bridge)
    project.up()
    assert addresses(project) == now and not project.plan().plan
    # Ours is back; an address added by hand is someone else's and stays (see Ownership).
    assert f"inet {gateway} " in sh("ip", "-o", "-4", "addr", "show", "dev", bridge)


def test_ctrl_c_in_place_of_an_action_rolls_back_with_exit_130(topo, project_name):
    from netcompose.errors import Interrupted
    project = topo(LAB)
    with pytest.raises(Interrupted, match="interrupted; rolled back: the host is as it was before") as caught:
        project.up(fault=interrupt_at(7))
    assert caught.value.exit_code == 130 and not leftovers(project_name)


class SimulatedHost:
    """A private "host": its own network and mount namespaces (tmpfs over /run/netns,
    /etc/netns and /run/netcompose), with an uplink to an "outside" namespace on
    198.51.100.0/24 and a default route through it, one more route and one more address.  Everything dies with its holder."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __enter__(self) -> "SimulatedHost":
        setup = ("mount --make-rprivate / && for d in /run/netns /etc/netns /run/netcompose; do mkdir -p $d; "
                 "mount -t tmpfs tmpfs $d; done && ip link set lo up && echo ready && exec sleep 600")
        self.holder = subprocess.Popen(["unshare", "--net", "--mount", "sh", "-c", setup],
                                       stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "ready"
        p = self.prefix
        for cmd in (f"ip netns add {p}-out", f"ip link add {p}up type veth peer name {p}lan netns {p}-out",
                    f"ip addr add 198.51.100.10/24 dev {p}up", f"ip addr add 203.0.113.7/32 dev {p}up",
                    f"ip link set {p}up addrgenmode none", f"ip link set {p}up up",
                    f"ip -n {p}-out addr add 198.51.100.1/24 dev {p}lan", f"ip -n {p}-out link set {p}lan up",
                    "ip route add default via 198.51.100.1", "ip route add 172.31.0.0/16 via 198.51.100.1"):
            self.run(*cmd.split())
        return self

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        # nsenter -m leaves the working folder: PYTHONPATH keeps this checkout's netcompose.
        result = subprocess.run(["nsenter", "-t", str(self.holder.pid), "-n", "-m", *args], capture_output=True,
                                text=True, cwd=REPO, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
        if check and result.returncode:
            raise AssertionError(f"{args}: {result.stderr}")
        return result

    def netcompose(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "netcompose", *args, check=False)

    def snapshot(self) -> dict[str, str]:
        return {what: self.run(*cmd.split()).stdout for what, cmd in
                (("links", "ip -d link"), ("addr", "ip addr"), ("route", "ip route"), ("netns", "ip netns"))}

    def __exit__(self, *exc) -> None:
        self.holder.kill()
        self.holder.wait()
