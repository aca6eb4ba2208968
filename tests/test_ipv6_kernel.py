"""IPv6 dual stack on the real kernel (issue 14).

"Outside" is a namespace the test creates (`<project>-up`), wired to the host by a veth on
the documentation prefix 2001:db8:51::/64; no test traffic leaves the machine."""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netcompose.drivers import processes
from netcompose.probe import listener, ping, tcp_connect, tcp_peer

from .conftest import needs_root, run_cli
from .test_kernel import ip
from .test_nft import make_upstream

pytestmark = [needs_root, pytest.mark.kernel]

HOST6, UPSTREAM6 = "2001:db8:51::1", "2001:db8:51::2"


@pytest.fixture
def upstream6(project_name):
    return make_upstream(project_name, HOST6, UPSTREAM6, 64)


def both(ns: str, v4: str, v6: str, probe=ping, *args) -> tuple[bool, bool]:
    return probe(ns, v4, *args), probe(ns, v6, *args)


DUAL = """
networks:
  front: {subnet: 10.231.0.0/24, subnet6: "fd00:91::/64"}
  v6only: {subnet6: "fd00:92::/64"}
containers:
  web:
    networks:
      front: {ipv4_address: 10.231.0.10, ipv6_address: "fd00:91::10"}
      v6only: {ipv6_address: "fd00:92::10"}
  db: {networks: {front: {ipv4_address: 10.231.0.20, ipv6_address: "fd00:91::20"}}}
  solo: {networks: {v6only: {ipv6_address: "fd00:92::30"}}}
links:
  - endpoints: ["web:p2p0", "db:p2p0"]
    addresses: [10.239.9.1/30, 10.239.9.2/30]
    addresses6: ["fd00:9a::1/64", "fd00:9a::2/64"]
"""


def test_dual_stack_and_v6_only_networks(topo, project_name, blocks):
    web, db, solo = (f"{project_name}-{c}" for c in ("web", "db", "solo"))
    project = topo(blocks(DUAL))
    project.up()
    assert both(db, blocks("10.231.0.10"), blocks("fd00:91::10")) == (True, True)
    assert ping(solo, blocks("fd00:92::10")) and ping(solo, blocks("fd00:92::1"))          # IPv6-only: peer and gateway
    assert both(web, blocks("10.239.9.2"), blocks("fd00:9a::2")) == (True, True)           # a dual-stack wire
    with listener(web, 80):
        assert tcp_peer(db, blocks("10.231.0.10"), 80) == blocks("10.231.0.20")
        assert tcp_peer(db, blocks("fd00:91::10"), 80) == blocks("fd00:91::20")
        assert tcp_peer(solo, blocks("fd00:92::10"), 80) == blocks("fd00:92::30")
    # No address left tentative by DAD, no link-local, router advertisements off.
    for ns in (web, db, solo):
        assert ip("-6", "addr", "show", "tentative", ns=ns).strip() == ""
        assert "fe80" not in ip("-6", "addr", ns=ns)
    assert ip("-6", "addr", "show", "tentative").count(project_name) == 0
    with open(f"/proc/sys/net/ipv6/conf/all/forwarding") as f:
        assert f.read().strip() == "1"
    assert subprocess.run(["ip", "netns", "exec", solo, "sysctl", "-n", "net.ipv6.conf.eth0.accept_ra"],
                          capture_output=True, text=True).stdout.strip() == "0"
    assert blocks("default via fd00:92::1 dev eth0 proto 157") in ip("-6", "route", ns=solo)
    assert "default" not in ip("-4", "route", ns=solo)                      # no IPv4 at all
    hosts = open(f"/etc/netns/{solo}/hosts").read()
    assert blocks("fd00:92::10\tweb") in hosts and blocks("10.231.0.10") not in hosts
    rows = {(r["container"], r["network"]): r for r in project.ps()}
    assert rows[("web", "front")]["ipv6"] == blocks("fd00:91::10/64") and rows[("solo", "v6only")]["ipv4"] is None
    assert all(r["state"] == "up" for r in rows.values())
    assert not project.plan().plan                                          # converged, both families

    # Drift: a flushed v6 address and a deleted v6 default route are planned and repaired.
    ip("-6", "addr", "flush", "dev", "eth0", "scope", "global", ns=solo)
    ip("-6", "route", "del", "default", ns=db)
    changes = {(a.op, a.kind, a.cause) for a in project.plan().plan.changes}
    assert ("create", "address", "drift") in changes and ("create", "route", "drift") in changes
    project.up()
    assert ping(solo, blocks("fd00:92::10")) and blocks("default via fd00:91::1") in ip("-6", "route", ns=db)
    assert not project.plan().plan


PARITY = """
networks:
  front: {subnet: 10.233.0.0/24, subnet6: "fd00:93::/64"}
  back: {subnet: 10.234.0.0/24, subnet6: "fd00:94::/64"}
containers:
  web:
    networks: {front: {ipv4_address: 10.233.0.10, ipv6_address: "fd00:93::10"}}
    firewall:
      ingress:
        - {from: client, proto: tcp, ports: [80]}
        - {from: 10.233.0.0/24, proto: tcp, ports: [81]}
  client: {networks: {front: {ipv4_address: 10.233.0.20, ipv6_address: "fd00:93::20"}}}
  db: {networks: {back: {ipv4_address: 10.234.0.10, ipv6_address: "fd00:94::10"}}}
policies:
  - {from: front, to: back, proto: tcp, ports: [5432]}
expect:
  - {from: client, to: "web:80", reachable: true}
  - {from: web, to: "db:5432", reachable: true}
  - {from: web, to: "db:22", reachable: false}
"""


def test_isolation_policies_and_firewalls_match_in_both_families(topo, project_name, tmp_path, blocks):
    web, client, db = (f"{project_name}-{c}" for c in ("web", "client", "db"))
    project = topo(blocks(PARITY))
    project.up()
    with listener(db, 5432), listener(db, 22), listener(web, 80), listener(web, 81):
        # Between networks: the policy's one port, one way, for both families alike.
        assert both(web, blocks("10.234.0.10"), blocks("fd00:94::10"), tcp_connect, 5432) == (True, True)
        assert both(web, blocks("10.234.0.10"), blocks("fd00:94::10"), tcp_connect, 22, 0.5) == (False, False)
        assert both(web, blocks("10.234.0.10"), blocks("fd00:94::10"), ping, 0.5) == (False, False)
        assert both(db, blocks("10.233.0.10"), blocks("fd00:93::10"), tcp_connect, 80, 0.5) == (False, False)
        # A container peer matches both families; a v4 CIDR peer matches v4 only.
        assert both(client, blocks("10.233.0.10"), blocks("fd00:93::10"), tcp_connect, 80) == (True, True)
        assert both(client, blocks("10.233.0.10"), blocks("fd00:93::10"), tcp_connect, 81, 0.5) == (True, False)
        assert both(client, blocks("10.233.0.10"), blocks("fd00:93::10"), ping, 0.5) == (False, False)
    probes = project.check()
    assert {p.family for p in probes} == {4, 6} and all(p.ok for p in probes), [p for p in probes if not p.ok]
    pairs = {(p.source, p.target, p.proto, p.port, p.family): p.actual for p in probes}
    for (source, target, proto, port, family), actual in pairs.items():
        if family == 4:
            assert pairs[(source, target, proto, port, 6)] == actual        # the same matrix
    result = run_cli("check", "-f", str(tmp_path / "topo.yaml"), "-p", project_name, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p["family"] for p in json.loads(result.stdout)["probes"]} == {4, 6}


NAT = """
networks:
  ula: {subnet6: "fd00:95::/64"}
  global: {subnet6: "2001:db8:96::/64"}
  sealed: {subnet6: "fd00:97::/64", internal: true}
containers:
  a: {networks: {ula: {ipv6_address: "fd00:95::10"}}}
  b: {networks: {global: {ipv6_address: "2001:db8:96::10"}}}
  c: {networks: {sealed: {ipv6_address: "fd00:97::10"}}}
"""


def test_nat66_on_for_ula_off_for_global(topo, project_name, upstream6, blocks):
    a, b, c = (f"{project_name}-{n}" for n in "abc")
    topo(blocks(NAT)).up()
    ip("-6", "route", "add", "2001:db8:96::/64", "via", HOST6, ns=upstream6)
    with listener(upstream6, 9000):
        assert tcp_peer(a, UPSTREAM6, 9000) == HOST6                   # ULA: masqueraded
        assert tcp_peer(b, UPSTREAM6, 9000) == "2001:db8:96::10"      # global: routed as is
        assert not tcp_connect(c, UPSTREAM6, 9000, 0.5)               # internal: nothing leaves
    with listener(b, 22):
        assert not tcp_connect(upstream6, "2001:db8:96::10", 22, 0.5)  # routed, but no unsolicited inbound


PORTS = """
networks:
  front: {subnet: 10.238.0.0/24, subnet6: "fd00:98::/64"}
containers:
  web:
    networks: {front: {ipv4_address: 10.238.0.10, ipv6_address: "fd00:98::10"}}
    ports: ["8080:80", "0.0.0.0:8081:81", "[::]:8082:82", "[::1]:8083:83"]
"""


def _from_host(address: str, port: int) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=1) as conn:
            return conn.recv(64).decode()
    except OSError:
        return None


def test_published_ports_per_family(topo, project_name, upstream6, blocks):
    web = f"{project_name}-web"
    project = topo(blocks(PORTS))
    project.up()
    with listener(web, 80), listener(web, 81), listener(web, 82), listener(web, 83):
        assert tcp_peer(upstream6, HOST6, 8080) == UPSTREAM6          # both families; the real source
        assert tcp_peer(upstream6, HOST6, 8082) == UPSTREAM6          # [::]
        assert not tcp_connect(upstream6, HOST6, 8081, 0.5)           # 0.0.0.0 never opens IPv6
        assert _from_host(HOST6, 8080) == "2001:db8:51::1"            # from the host itself
        # [::1]: the host only, through the relay (the container sees the host's address on its network).
        assert _from_host("::1", 8083) == blocks("fd00:98::1")
        assert not tcp_connect(upstream6, HOST6, 8083, 0.5) and not tcp_connect(upstream6, "::1", 8083, 0.5)
        # A relay that died is drift: planned, and started again.
        [record] = glob.glob(f"/run/netcompose/{project_name}/proxies/*.json")
        relay = json.loads(Path(record).read_text())
        assert processes.read_environ(relay["pid"])["NETCOMPOSE_RELAY"].startswith(f"{project_name}/")  # its mark
        os.kill(relay["pid"], signal.SIGTERM)
        while processes.alive(relay["pid"], relay["start"]):
            time.sleep(0.01)
        assert [(a.op, a.kind, a.cause) for a in project.plan().plan.changes] == [("create", "port_proxy", "drift")]
        project.up()
        assert _from_host("::1", 8083) == blocks("fd00:98::1")
    project.down()
    assert _from_host("::1", 8083) is None


def test_ovs_network_with_ipv6(topo, project_name, private_ovs, blocks):
    a1, a2 = f"{project_name}-a1", f"{project_name}-a2"
    project = topo(blocks(f"""
networks:
  lab:
    driver: ovs
    subnet: 10.239.0.0/24
    subnet6: "fd00:99::/64"
    ovs: {{bridge: {project_name}-br, datapath_type: netdev}}
containers:
  a1: {{networks: {{lab: {{ipv6_address: "fd00:99::11"}}}}}}
  a2: {{networks: {{lab: {{ipv6_address: "fd00:99::12", type: ovs-internal}}}}}}
"""), ovsdb=private_ovs.remote)
    project.up()
    assert ping(a1, blocks("fd00:99::12")) and ping(a2, blocks("fd00:99::11"))
    assert ping(a1, blocks("fd00:99::1"))   # gateway port
    assert ping(a1, blocks("10.239.0.3"))                                            # and IPv4 beside it
    with listener(a2, 80):
        assert tcp_peer(a1, blocks("fd00:99::12"), 80) == blocks("fd00:99::11")
    assert ip("-6", "addr", "show", "tentative", ns=a2).strip() == ""
    assert not project.plan().plan
