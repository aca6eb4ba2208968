"""Isolation, NAT, published ports and firewalls, proved with real traffic both ways.

"Outside" is a namespace the test creates (`<project>-up`), wired to the host by a veth
on 198.51.100.0/24; no test traffic leaves the machine."""
from __future__ import annotations

import json
import socket
import struct
import subprocess

import pytest

from netcompose.drivers import namespaces, nftables
from netcompose.errors import ApplyError
from netcompose.probe import listener, ping, socket_in, tcp_connect, tcp_peer, udp_exchange

from .conftest import needs_root, run_cli
from .test_kernel import ip, link_facts

pytestmark = [needs_root, pytest.mark.kernel]

HOST_SIDE, UPSTREAM = "198.51.100.1", "198.51.100.2"


def make_upstream(project_name: str, host_side: str, upstream: str, prefixlen: int) -> str:
    """The namespace `<project>-up`, wired to the host by a veth: the host's end has
    `host_side`, the namespace's `upstream` and a default route through the host."""
    ns, host_end = f"{project_name}-up", f"{project_name}-upl"
    nodad = ["nodad"] if ":" in upstream else []   # usable at once, not `tentative`
    namespaces.create(ns)
    ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("addr", "add", f"{host_side}/{prefixlen}", "dev", host_end, *nodad)
    ip("link", "set", host_end, "up")
    ip("addr", "add", f"{upstream}/{prefixlen}", "dev", "eth0", *nodad, ns=ns)
    ip("link", "set", "eth0", "up", ns=ns)
    ip("link", "set", "lo", "up", ns=ns)
    ip("route", "add", "default", "via", host_side, ns=ns)
    return ns


@pytest.fixture
def upstream(project_name):
    return make_upstream(project_name, HOST_SIDE, UPSTREAM, 24)


POLICY_TOPO = """
networks:
  front: {subnet: 10.81.0.0/24}
  back: {subnet: 10.82.0.0/24}
containers:
  web: {networks: {front: {ipv4_address: 10.81.0.10}}}
  db: {networks: {back: {ipv4_address: 10.82.0.10}}}
"""


def test_networks_isolated_until_a_policy_allows_one_port(topo, project_name, blocks):
    web, db = f"{project_name}-web", f"{project_name}-db"
    topo(blocks(POLICY_TOPO)).up()
    with listener(db, 5432), listener(db, 22), listener(web, 80):
        assert not tcp_connect(web, blocks("10.82.0.10"), 5432, 0.5) and not ping(web, blocks("10.82.0.10"), 0.5)
        assert not tcp_connect(db, blocks("10.81.0.10"), 80, 0.5) and not ping(db, blocks("10.81.0.10"), 0.5)
        topo(blocks(POLICY_TOPO) + "policies:\n  - {from: front, to: back, proto: tcp, ports: [5432]}\n").up()
        assert tcp_peer(web, blocks("10.82.0.10"), 5432) == blocks("10.81.0.10")     # replies pass (conntrack)
        assert not tcp_connect(web, blocks("10.82.0.10"), 22, 0.5) and not ping(web, blocks("10.82.0.10"), 0.5)
        assert not tcp_connect(db, blocks("10.81.0.10"), 80, 0.5)             # policies are one-way


def test_icc_false_blocks_peers_but_not_the_gateway(topo, project_name, blocks):
    topo(blocks("""
networks: {back: {subnet: 10.84.0.0/24, icc: false}}
containers:
  a: {networks: {back: {ipv4_address: 10.84.0.11}}}
  b: {networks: {back: {ipv4_address: 10.84.0.12}}}
""")).up()
    a = f"{project_name}-a"
    assert ping(a, blocks("10.84.0.1"))
    assert not ping(a, blocks("10.84.0.12"), 0.5) and not ping(f"{project_name}-b", blocks("10.84.0.11"), 0.5)
    with listener(f"{project_name}-b", 7000):
        assert not tcp_connect(a, blocks("10.84.0.12"), 7000, 0.5)


NAT_TOPO = """
networks:
  front: {subnet: 10.85.0.0/24}
  sealed: {subnet: 10.86.0.0/24, internal: true}
containers:
  web:
    networks: {front: {ipv4_address: 10.85.0.10}}
    ports: ["8080:80", "127.0.0.1:5353:53/udp", "5300:53/udp"]
  vault: {networks: {sealed: {ipv4_address: 10.86.0.10}}}
"""


def test_nat_out_and_internal_network(topo, project_name, upstream, blocks):
    web, vault = f"{project_name}-web", f"{project_name}-vault"
    topo(blocks(NAT_TOPO)).up()
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"
    with listener(upstream, 9000):
        assert tcp_peer(web, UPSTREAM, 9000) == HOST_SIDE        # masqueraded to the host's address
        assert not tcp_connect(vault, UPSTREAM, 9000, 0.5)        # internal: nothing leaves
    assert not ping(vault, UPSTREAM, 0.5)
    ip("route", "add", blocks("10.86.0.0/24"), "via", HOST_SIDE, ns=upstream)
    assert not ping(upstream, blocks("10.86.0.10"), 0.5)                  # ... and nothing enters
    with listener(vault, 22):
        assert not tcp_connect(upstream, blocks("10.86.0.10"), 22, 0.5)
        assert not tcp_connect(web, blocks("10.86.0.10"), 22, 0.5)        # nor from the project's other networks
        # As with Docker's internal networks, the host and the members reach each other.
        assert tcp_connect("/proc/self/ns/net", blocks("10.86.0.10"), 22, 1.0)
    assert ping(vault, blocks("10.86.0.1")) and ping("/proc/self/ns/net", blocks("10.86.0.10"))


def _udp_frame(src_mac: bytes, dst_mac: bytes, src: str, dst: str, dport: int) -> bytes:
    payload = b"netcompose"
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return dst_mac + src_mac + b"\x08\x00" + header + udp


def test_published_ports_keep_source_and_loopback_ports_stay_local(topo, project_name, upstream, blocks):
    web = f"{project_name}-web"
    topo(blocks(NAT_TOPO)).up()
    with listener(web, 80):
        assert tcp_peer(upstream, HOST_SIDE, 8080) == UPSTREAM        # DNAT, no proxy: real source
    # From the host itself: to a non-loopback host address, and the loopback-only port.
    with listener(web, 80):
        with socket.create_connection((HOST_SIDE, 8080), timeout=1) as conn:
            assert conn.recv(64)
    with listener(web, 53, "udp"):
        for port in (5353, 5300):      # published on 127.0.0.1, and on all addresses
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1)
                sock.sendto(b"netcompose-probe", ("127.0.0.1", port))
                assert sock.recv(64) == b"netcompose-probe"
    with listener(web, 80):            # as with Docker, a port on all addresses answers at 127.0.0.1
        assert tcp_peer("/proc/self/ns/net", "127.0.0.1", 8080) == blocks("10.85.0.1")
    # A LAN host aiming at 127.0.0.1 through the host's MAC (moby#45610), even with
    # route_localnet on its way in, never reaches the container.
    ip("link", "set", f"{project_name}-upl", "up")
    subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{project_name}-upl.route_localnet=1"], check=True)
    host_mac = bytes.fromhex(link_facts()[f"{project_name}-upl"].mac.replace(":", ""))
    up_mac = bytes.fromhex(link_facts(upstream)["eth0"].mac.replace(":", ""))
    catcher = socket_in(web, socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("0.0.0.0", 53))
    catcher.settimeout(0.7)
    raw = socket_in(upstream, socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind(("eth0", 0))
    with raw, catcher:
        for port in (5353, 5300):
            raw.send(_udp_frame(up_mac, host_mac, UPSTREAM, "127.0.0.1", port))
        with pytest.raises(socket.timeout):
            catcher.recv(64)
    assert not udp_exchange(upstream, HOST_SIDE, 5353, 0.5)


FIREWALL_TOPO = """
networks: {lan: {subnet: 10.87.0.0/24}}
containers:
  web:
    networks: {lan: {ipv4_address: 10.87.0.10}}
    firewall:
      ingress: [{from: client, proto: tcp, ports: [80]}]
      egress: [{to: db, proto: tcp, ports: [5432]}]
  client: {networks: {lan: {ipv4_address: 10.87.0.20}}}
  db: {networks: {lan: {ipv4_address: 10.87.0.30}}}
expect:
  - {from: client, to: "web:80", reachable: true}
  - {from: client, to: "web:81", reachable: false}
  - {from: web, to: "db:5432", reachable: true}
  - {from: web, to: "db:22", reachable: false}
"""


def test_container_firewall_both_directions(topo, project_name, blocks):
    web, client, db = (f"{project_name}-{c}" for c in ("web", "client", "db"))
    topo(blocks(FIREWALL_TOPO)).up()
    with listener(web, 80), listener(web, 81), listener(db, 5432), listener(db, 22):
        assert tcp_connect(client, blocks("10.87.0.10"), 80)
        assert not tcp_connect(client, blocks("10.87.0.10"), 81, 0.5)
        assert not tcp_connect(db, blocks("10.87.0.10"), 80, 0.5)           # ingress names the client only
        assert not ping(client, blocks("10.87.0.10"), 0.5)
        assert tcp_connect(web, blocks("10.87.0.30"), 5432)
        assert not tcp_connect(web, blocks("10.87.0.30"), 22, 0.5)
        assert not ping(web, blocks("10.87.0.20"), 0.5)
        assert ping(client, blocks("10.87.0.30"))                            # others are unaffected
    # An edit that drops the firewall removes web's table (found through the last apply's record).
    opened = blocks(FIREWALL_TOPO).replace("""    firewall:
      ingress: [{from: client, proto: tcp, ports: [80]}]
      egress: [{to: db, proto: tcp, ports: [5432]}]
""", "").split("expect:")[0]
    topo(opened).up()
    assert ping(client, blocks("10.87.0.10")) and ping(web, blocks("10.87.0.20"))
    assert not subprocess.run(["ip", "netns", "exec", web, "nft", "list", "tables"], capture_output=True,
                              text=True, check=True).stdout.strip()


def test_check_passes_then_names_the_broken_pair(topo, project_name, tmp_path, blocks):
    project = topo(blocks(FIREWALL_TOPO))
    project.up()
    probes = project.check()
    assert probes and all(p.ok for p in probes), [p for p in probes if not p.ok]
    result = run_cli("check", "-f", str(tmp_path / "topo.yaml"), "-p", project_name, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["mismatches"] == 0
    # Break the egress rule by hand: web may no longer reach db:5432.
    rules = json.loads(subprocess.run(["ip", "netns", "exec", f"{project_name}-web", "nft", "-j", "list", "chain",
                                       "inet", f"netcompose-{project_name}", "output"],
                                      capture_output=True, text=True, check=True).stdout)["nftables"]
    handle = next(item["rule"]["handle"] for item in rules
                  if "rule" in item and "egress[0]" in item["rule"].get("comment", ""))
    subprocess.run(["ip", "netns", "exec", f"{project_name}-web", "nft", "delete", "rule", "inet",
                    f"netcompose-{project_name}", "output", "handle", str(handle)], check=True)
    result = run_cli("check", "-f", str(tmp_path / "topo.yaml"), "-p", project_name)
    assert result.returncode == 1
    assert "FAIL web → db tcp:5432" in result.stdout


def test_sandbox_table_listed_again_only_after_its_ruleset_changed(topo, project_name, blocks, monkeypatch):
    """A no-op plan runs no nft where the namespace's ruleset generation is the one listed
    last; a hand edit changes the generation, so it is listed and seen."""
    web = f"{project_name}-web"
    project = topo(blocks(FIREWALL_TOPO))
    project.up()
    listed = []
    run = nftables.NftablesDriver.run

    def counted(self, ns, args, stdin=None):
        listed.append(ns)
        return run(self, ns, args, stdin)
    monkeypatch.setattr(nftables.NftablesDriver, "run", counted)
    assert not project.plan().plan and web not in listed
    table = f"netcompose-{project_name}"
    rules = json.loads(subprocess.run(["ip", "netns", "exec", web, "nft", "-j", "list", "chain", "inet", table,
                                       "output"], capture_output=True, text=True, check=True).stdout)["nftables"]
    handle = next(item["rule"]["handle"] for item in rules
                  if "rule" in item and "egress[0]" in item["rule"].get("comment", ""))
    subprocess.run(["ip", "netns", "exec", web, "nft", "delete", "rule", "inet", table, "output", "handle",
                    str(handle)], check=True)
    assert [(a.op, a.key) for a in project.plan().plan.changes] == [("update", f"nft:{web}/inet/{table}")]
    assert web in listed
    project.up()
    assert not project.plan().plan


def test_table_drift_is_repaired_and_port_changes_touch_only_nft(topo, project_name, blocks):
    project = topo(blocks(NAT_TOPO))
    project.up()
    subprocess.run(["nft", "delete", "table", "inet", f"netcompose-{project_name}"], check=True)
    plan = project.plan().plan
    assert [(a.op, a.kind) for a in plan.changes] == [("create", "nft_table")]
    project.up()
    before = link_facts()
    changed = topo(blocks(NAT_TOPO).replace('"8080:80"', '"8080:80", "9090:90"'))
    assert {a.kind for a in changed.plan().plan.changes} == {"nft_table"}
    changed.up()
    after = link_facts()
    # This project's host links (other runs on the machine make and remove theirs meanwhile).
    ours = {n: l.index for n, l in before.items() if n.startswith(f"{project_name}-")}
    assert ours and ours == {n: l.index for n, l in after.items() if n.startswith(f"{project_name}-")}
    listing = subprocess.run(["nft", "list", "table", "inet", f"netcompose-{project_name}"],
                             capture_output=True, text=True).stdout
    assert blocks("dnat ip to 10.85.0.10:90") in listing


def test_failed_nft_transaction_keeps_old_table(topo, project_name, monkeypatch, blocks):
    project = topo(blocks(NAT_TOPO))
    project.up()
    table = ["nft", "list", "table", "inet", f"netcompose-{project_name}"]
    before = subprocess.run(table, capture_output=True, text=True).stdout
    broken = nftables.NftablesDriver._commands

    def poisoned(action):
        commands = broken(action)
        return commands + [{"add": {"rule": {"family": "inet", "table": action.resource.attrs["name"],
                                             "chain": "no-such-chain", "expr": [{"accept": None}]}}}]
    monkeypatch.setattr(nftables.NftablesDriver, "_commands", staticmethod(poisoned))
    with pytest.raises(ApplyError, match="rolled back"):
        topo(blocks(NAT_TOPO).replace('"8080:80"', '"8081:80"')).up()
    assert subprocess.run(table, capture_output=True, text=True).stdout == before


def test_foreign_rules_are_byte_identical_after_up_and_down(topo, project_name, blocks):
    decoy = f"{project_name}-decoy"
    subprocess.run(["nft", "add", "table", "inet", decoy], check=True)
    subprocess.run(["nft", "add", "chain", "inet", decoy, "forward",
                    "{ type filter hook forward priority 10; policy accept; }"], check=True)
    subprocess.run(["nft", "add", "rule", "inet", decoy, "forward", "ip", "saddr", blocks("10.88.0.0/24"), "counter",
                    "accept", "comment", f'"{decoy}"'], check=True)
    chain = f"{project_name.upper()}-DECOY"
    # iptables-nft creates its `ip filter` table on first use; remove it after only if we caused it.
    had_filter = subprocess.run(["nft", "list", "table", "ip", "filter"], capture_output=True).returncode == 0
    subprocess.run(["iptables", "-N", chain], check=True)
    subprocess.run(["iptables", "-A", chain, "-s", blocks("10.89.0.0/24"), "-j", "ACCEPT"], check=True)
    try:
        def snapshot() -> tuple[str, str]:
            return (subprocess.run(["nft", "list", "table", "inet", decoy], capture_output=True, text=True).stdout,
                    subprocess.run(["iptables", "-S", chain], capture_output=True, text=True).stdout)
        before = snapshot()
        project = topo(blocks(NAT_TOPO))
        project.up()
        assert snapshot() == before
        project.down()
        assert snapshot() == before
    finally:
        subprocess.run(["iptables", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-X", chain], capture_output=True)
        if not had_filter:
            subprocess.run(["nft", "delete", "table", "ip", "filter"], capture_output=True)
