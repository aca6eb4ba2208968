"""Open vSwitch networks against a private ovsdb-server and ovs-vswitchd (userspace datapath)."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from netcompose.drivers import namespaces, ovsdb
from netcompose.errors import NetcomposeError
from netcompose.probe import listener, ping, socket_in, tcp_peer

from .conftest import needs_root
from .test_kernel import ip, link_facts

pytestmark = [needs_root, pytest.mark.kernel]


def tenants(project: str, vlan_b: int = 20, extra: str = "") -> str:
    return f"""
networks:
  ta:
    driver: ovs
    subnet: 10.71.0.0/24
    vlan: 10
    ovs: {{bridge: {project}-lab, datapath_type: netdev}}
  tb:
    driver: ovs
    subnet: 10.72.0.0/24
    vlan: {vlan_b}
    ovs: {{bridge: {project}-lab, datapath_type: netdev}}
  trunk:
    driver: ovs
    subnet: 10.73.0.0/24
    ovs: {{bridge: {project}-lab, datapath_type: netdev}}
containers:
  a1: {{networks: {{ta: {{ipv4_address: 10.71.0.11}}}}}}
  a2: {{networks: {{ta: {{ipv4_address: 10.71.0.12, type: ovs-internal, ifname: eth0}}}}}}
  b1: {{networks: {{tb: {{ipv4_address: 10.72.0.11}}}}}}
  router: {{networks: {{trunk: {{ipv4_address: 10.73.0.2, trunks: [10, 20]}}}}}}
{extra}"""


@pytest.fixture
def ovs_topo(topo, private_ovs, blocks):
    def make(text: str):
        return topo(blocks(text), ovsdb=private_ovs.remote)
    return make


def l2_reachable(src_ns: str, dst_ip: str) -> bool:
    """Ping over the local segment only (an on-link route), so routing cannot help."""
    ip("route", "replace", dst_ip, "dev", "eth0", ns=src_ns)
    try:
        return ping(src_ns, dst_ip, timeout=0.5)
    finally:
        ip("route", "del", dst_ip, "dev", "eth0", ns=src_ns)


def test_same_network_reachable_vlans_isolated_and_retag_in_place(ovs_topo, project_name, private_ovs, blocks):
    a1, a2, b1 = (f"{project_name}-{c}" for c in ("a1", "a2", "b1"))
    project = ovs_topo(tenants(project_name))
    project.up()
    assert ping(a1, blocks("10.71.0.12")) and ping(a2, blocks("10.71.0.11")) and ping(a1, blocks("10.71.0.1"))
    with listener(a2, 8080):  # TCP needs TX checksum offload off on the OVS veths
        assert tcp_peer(a1, blocks("10.71.0.12"), 8080) == blocks("10.71.0.11")
    assert not l2_reachable(a1, blocks("10.72.0.11"))

    host_end = project.resolved().containers["b1"].endpoints[0].host_ifname
    uuid_before = private_ovs.vsctl("get", "Interface", host_end, "_uuid")
    index_before = link_facts()[host_end].index
    moved = ovs_topo(tenants(project_name, vlan_b=30))
    plan = moved.plan().plan
    assert {(a.op, a.kind) for a in plan.changes} == {("update", "ovs_port")}
    moved.up()
    assert private_ovs.vsctl("get", "Interface", host_end, "_uuid") == uuid_before
    assert link_facts()[host_end].index == index_before
    assert private_ovs.vsctl("get", "Port", host_end, "tag") == "30"
    assert ping(b1, blocks("10.72.0.1")) and not l2_reachable(a1, blocks("10.72.0.11"))


def test_second_up_makes_no_ovsdb_transaction(ovs_topo, project_name, monkeypatch):
    project = ovs_topo(tenants(project_name))
    project.up()
    calls = []
    original = ovsdb.OvsdbDriver.apply
    monkeypatch.setattr(ovsdb.OvsdbDriver, "apply", lambda self, actions: calls.append(actions)
                        or original(self, actions))
    assert not project.up().plan and calls == []


def test_one_transaction_for_all_ovs_changes(ovs_topo, project_name, monkeypatch):
    calls = []
    original = ovsdb.OvsdbDriver.apply
    monkeypatch.setattr(ovsdb.OvsdbDriver, "apply", lambda self, actions: calls.append(actions)
                        or original(self, actions))
    ovs_topo(tenants(project_name)).up()
    assert len(calls) == 1 and len(calls[0]) >= 8


def _capture_vlans(ns: str, stop: threading.Event, seen: set[int]) -> socket.socket:
    sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
    sock.bind(("eth0", 0))
    sock.settimeout(0.1)

    def run() -> None:
        while not stop.is_set():
            try:
                _data, ancdata, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(20))
            except OSError:
                continue
            for level, kind, payload in ancdata:
                if level == 263 and kind == 8:
                    status, _len, _snap, _mac, _net, tci, _tpid = struct.unpack("IIIHHHH", payload[:20])
                    if status & 0x10:  # TP_STATUS_VLAN_VALID
                        seen.add(tci & 0x0FFF)
    threading.Thread(target=run, daemon=True).start()
    return sock


def test_trunk_carries_both_tags_both_ways(ovs_topo, project_name, blocks):
    router, a1 = f"{project_name}-router", f"{project_name}-a1"
    ovs_topo(tenants(project_name)).up()
    stop, seen = threading.Event(), set()
    sock = _capture_vlans(router, stop, seen)
    try:
        # Broadcast ARP from each tenant reaches the trunk with the tenant's tag.
        ping(a1, blocks("10.71.0.99"), timeout=0.3)
        ping(f"{project_name}-b1", blocks("10.72.0.99"), timeout=0.3)
        # The router reaches tenant a with a frame it tags itself: an ARP request for a1.
        router_mac = bytes.fromhex(link_facts(router)["eth0"].mac.replace(":", ""))
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, router_mac, socket.inet_aton(blocks("10.71.0.200")),
                          b"\0" * 6, socket.inet_aton(blocks("10.71.0.11")))
        frame = b"\xff" * 6 + router_mac + struct.pack("!HHH", 0x8100, 10, 0x0806) + arp
        sock.send(frame)
        time.sleep(0.5)
        assert blocks("10.71.0.200") in ip("neigh", ns=a1)   # a1 learnt the router from the tagged request
    finally:
        stop.set()
        time.sleep(0.2)
        sock.close()
    assert {10, 20} <= seen


def test_drift_foreign_ports_and_down(ovs_topo, project_name, private_ovs, blocks):
    bridge = f"{project_name}-lab"
    project = ovs_topo(tenants(project_name))
    project.up()
    a1_port = project.resolved().containers["a1"].endpoints[0].host_ifname
    private_ovs.vsctl("del-port", bridge, a1_port)
    assert ("create", f"ovsport:{a1_port}") in {(a.op, a.key) for a in project.plan().plan.changes}
    project.up()
    assert ping(f"{project_name}-a1", blocks("10.71.0.12"))

    foreign = f"{project_name}-frn"
    private_ovs.vsctl("add-port", bridge, foreign, "--", "set", "Interface", foreign, "type=internal")
    project.up()
    project.down()
    assert private_ovs.vsctl("list-ports", bridge).split() == [foreign]   # ours gone, theirs kept
    private_ovs.vsctl("del-port", bridge, foreign)
    project.down()
    assert bridge not in private_ovs.vsctl("list-br").split()


def test_mixed_bridge_and_ovs_endpoints(ovs_topo, project_name, blocks):
    project = ovs_topo(blocks("""
networks:
  lan: {subnet: 10.74.0.0/24}
  ovsnet: {driver: ovs, subnet: 10.75.0.0/24, ovs: {datapath_type: netdev}}
containers:
  both: {networks: {lan: {ipv4_address: 10.74.0.2}, ovsnet: {ipv4_address: 10.75.0.2}}}
  left: {networks: {lan: {ipv4_address: 10.74.0.3}}}
  right: {networks: {ovsnet: {ipv4_address: 10.75.0.3}}}
"""))
    project.up()
    both = f"{project_name}-both"
    assert ping(both, blocks("10.74.0.3")) and ping(both, blocks("10.75.0.3"))
    with listener(f"{project_name}-right", 9000):
        assert tcp_peer(both, blocks("10.75.0.3"), 9000) == blocks("10.75.0.2")


def test_unreachable_ovsdb_is_one_clear_error_and_changes_nothing(topo, project_name, tmp_path):
    project = topo(tenants(project_name), ovsdb=f"unix:{tmp_path}/nothing.sock")
    with pytest.raises(NetcomposeError, match=r"cannot reach OVSDB at unix:.*nothing.sock .*ovs-ctl start"):
        project.up()
    assert not [n for n in namespaces.list_named() if n.startswith(project_name)]
    assert not os.path.exists(f"/etc/netns/{project_name}-a1")
