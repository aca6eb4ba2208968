"""A Compose file and a containerlab topology brought up on the real kernel: name resolution,
published ports, pings over every link, `check`, and `down` leaving nothing behind."""
from __future__ import annotations

import os
import socket
import subprocess
import textwrap

import pytest

from netcompose.drivers import namespaces
from netcompose.probe import listener, ping, socket_in, tcp_peer

from .conftest import needs_root
from .test_kernel import ip, link_facts
from .test_nft import HOST_SIDE, UPSTREAM, upstream  # noqa: F401  (a fixture)

pytestmark = [needs_root, pytest.mark.kernel]

COMPOSE = """
services:
  web:
    image: nginx
    networks:
      front: {ipv4_address: 10.213.1.10, aliases: [site]}
      back: {}
    ports: ["18080:80"]
  db:
    image: postgres
    networks:
      back: {aliases: [database]}
  cache:
    networks: [back]
  sidecar: {network_mode: "service:web"}
  quiet: {network_mode: none}
networks:
  front: {ipam: {config: [{subnet: 10.213.1.0/24}]}}
  back:
    internal: true
    ipam: {config: [{subnet: 10.213.2.0/24}]}
"""


def resolve_in(ns: str, name: str) -> str | None:
    """What `getent hosts NAME` answers inside the sandbox (its /etc/netns hosts file)."""
    done = subprocess.run(["ip", "netns", "exec", ns, "getent", "hosts", name], capture_output=True, text=True)
    return done.stdout.split()[0] if done.returncode == 0 else None


def leftovers(prefix: str) -> list[str]:
    """What the project left: everything with its prefix except the test's own outside namespace."""
    mine = {f"{prefix}-up", f"{prefix}-upl"}
    etc = os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []
    return [n for n in namespaces.list_named() + list(link_facts()) + etc if n.startswith(prefix) and n not in mine]


def test_compose_file_up_resolve_publish_check_down(topo, project_name, upstream, blocks):  # noqa: F811
    project = topo(textwrap.dedent(blocks(COMPOSE)), name="compose.yaml")
    assert project.spec.format == "compose"
    project.up()
    web, db, cache = (f"{project_name}-{n}" for n in ("web", "db", "cache"))
    db_ip = resolve_in(web, "db")
    assert db_ip and db_ip.startswith(blocks("10.213.2."))
    assert resolve_in(web, "database") == db_ip and resolve_in(cache, "database") == db_ip
    assert resolve_in(db, "web").startswith(blocks("10.213.2."))
    assert resolve_in(db, "site") is None            # an alias on front, which db is not on
    assert resolve_in(web, "site") == blocks("10.213.1.10")
    assert ping(web, db_ip) and ping(cache, resolve_in(cache, "web"))
    assert set(link_facts(f"{project_name}-quiet")) == {"lo"}    # network_mode: none
    assert f"{project_name}-sidecar" not in namespaces.list_named()   # shares web's sandbox
    with listener(web, 80):
        assert tcp_peer(upstream, HOST_SIDE, 18080) == UPSTREAM    # published, seen from outside
    assert not ping(db, UPSTREAM)                                   # back is internal
    assert all(probe.ok for probe in project.check())
    project.down()
    assert leftovers(project_name) == []


LAB = """
name: lab
mgmt: {network: mgmt, ipv4-subnet: 10.215.0.0/24}
topology:
  kinds:
    nokia_srlinux: {image: ghcr.io/nokia/srlinux}
  nodes:
    srl1: {kind: nokia_srlinux, mgmt-ipv4: 10.215.0.11}
    srl2: {kind: nokia_srlinux, mgmt-ipv4: 10.215.0.12}
    h1:
      kind: linux
      image: alpine
      exec: ["ip addr add 10.218.0.2/24 dev eth1", "false"]
    br1: {kind: bridge}
  links:
    - endpoints: ["srl1:ethernet-1/1", "srl2:ethernet-1/1"]
    - type: veth
      endpoints:
        - {node: srl1, interface: e1-2, ipv4: 10.216.0.1/30}
        - {node: srl2, interface: e1-2, ipv4: 10.216.0.2/30}
    - endpoints: ["srl1:e1-3", "br1:p1"]
    - endpoints: ["h1:eth1", "br1:p2"]
    - endpoints: ["srl2:e1-3", "host:HOSTEND"]
    - endpoints: ["srl1:e1-4", "srl1:e1-5"]
"""


def test_containerlab_topology_up_ping_every_link_down(topo, project_name, blocks):
    host_end = f"{project_name}h"
    project = topo(textwrap.dedent(blocks(LAB)).replace("HOSTEND", host_end), name="lab.clab.yml")
    assert project.spec.format == "clab"
    report = project.up()
    assert "exec in h1: false: exit 1" in report.notes
    srl1, srl2, h1 = (f"{project_name}-{n}" for n in ("srl1", "srl2", "h1"))
    assert {"eth0", "e1-1", "e1-2", "e1-3", "e1-4", "e1-5"} <= set(link_facts(srl1))
    # management network: eth0 in every node, static and automatic addresses
    assert ping(srl1, blocks("10.215.0.12")) and ping(h1, blocks("10.215.0.11"))
    # extended link with addresses
    assert ping(srl1, blocks("10.216.0.2"))
    # brief link and the bridge: addresses set by hand (or by exec:, h1's), as a lab's own
    # configuration would; they are not netcompose's, so a second up leaves them and runs no exec again
    for ns, dev, address in ((srl1, "e1-1", blocks("10.217.0.1/24")), (srl2, "e1-1", blocks("10.217.0.2/24")),
                             (srl1, "e1-3", blocks("10.218.0.1/24"))):
        ip("addr", "add", address, "dev", dev, ns=ns)
    assert not project.up().plan
    assert ping(srl1, blocks("10.217.0.2")) and ping(h1, blocks("10.218.0.1"))
    # the host link: a frame sent from the node arrives on the host end (no host address needed)
    catcher = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
    catcher.bind((host_end, 0))
    catcher.settimeout(2)
    sender = socket_in(srl2, socket.AF_PACKET, socket.SOCK_RAW)
    sender.bind(("e1-3", 0))
    with catcher, sender:
        sender.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"netcompose-host-link".ljust(46))
        assert b"netcompose-host-link" in catcher.recv(128)
    # a changed exec: list runs again
    again = topo(textwrap.dedent(blocks(LAB)).replace("HOSTEND", host_end)
                 .replace('"false"', blocks('"ip addr add 10.218.0.3/24 dev eth1"')), name="lab.clab.yml")
    assert [a.op for a in again.up().plan.actions] == ["update"] and ping(srl1, blocks("10.218.0.3"))
    rows = {(row["container"], row["ifname"]): row for row in project.ps()}
    assert rows[("srl2", "e1-3")]["link"] == f"host:{host_end}" and rows[("srl2", "e1-3")]["state"] == "up"
    assert rows[("srl1", "e1-1")]["state"] == rows[("srl1", "e1-4")]["state"] == "up"
    project.down()
    assert leftovers(project_name) == [] and host_end not in link_facts()


VXLAN_LAB = """
name: vx
mgmt: {network: mgmt, ipv4-subnet: 10.221.0.0/24}
topology:
  nodes:
    r1: {kind: linux}
    r2: {kind: linux}
  links:
    - type: vxlan
      endpoint: {node: r1, interface: vx1, mac: "02:00:0a:dd:00:01"}
      remote: 198.51.100.2
      vni: 4242
      udp-port: PORT
    - type: veth
      endpoints:
        - {node: r1, interface: eth1, mac: "02:00:0a:dd:01:01", ipv4: 10.222.0.1/30}
        - {node: r2, interface: eth1, ipv4: 10.222.0.2/30}
"""


def test_containerlab_vxlan_to_an_outside_vtep(topo, project_name, upstream, blocks):  # noqa: F811
    port = 40000 + int(project_name[1:], 16) % 20000   # its own UDP port: other tests may run VXLANs
    project = topo(textwrap.dedent(blocks(VXLAN_LAB)).replace("PORT", str(port)), name="lab.clab.yml")
    project.up()
    r1 = f"{project_name}-r1"
    facts = link_facts(r1)
    assert facts["vx1"].mac == "02:00:0a:dd:00:01" and facts["eth1"].mac == "02:00:0a:dd:01:01"
    assert ping(r1, blocks("10.222.0.2"))
    assert not project.plan().plan        # the devices read back as they were asked for
    # The far VTEP: the outside namespace, reached through the host (the VXLAN's underlay stays there).
    ip("link", "add", "vx0", "type", "vxlan", "id", "4242", "remote", HOST_SIDE, "dstport", str(port), ns=upstream)
    ip("addr", "add", blocks("10.223.0.2/30"), "dev", "vx0", ns=upstream)
    ip("link", "set", "vx0", "up", ns=upstream)
    ip("addr", "add", blocks("10.223.0.1/30"), "dev", "vx1", ns=r1)
    assert ping(r1, blocks("10.223.0.2"), timeout=3)
    project.down()
    assert leftovers(project_name) == []


MACVLAN_LAB = """
name: mv
mgmt: {network: mgmt, ipv4-subnet: 10.224.0.0/24}
topology:
  nodes:
    a: {kind: linux, exec: ["ip addr add 10.225.0.1/24 dev mv1"]}
    b: {kind: linux, exec: ["ip addr add 10.225.0.2/24 dev mv1"]}
  links:
    - endpoints: ["a:mv1", "macvlan:PARENT"]
    - type: macvlan
      endpoint: {node: b, interface: mv1}
      host-interface: PARENT
      mode: bridge
"""


def test_containerlab_macvlan_on_an_existing_host_interface(topo, project_name, blocks):
    parent = f"{project_name}mv"
    text = textwrap.dedent(blocks(MACVLAN_LAB)).replace("PARENT", parent)
    with pytest.raises(Exception, match=f"'{parent}' does not exist"):
        topo(text, name="lab.clab.yml").up()
    ip("link", "add", parent, "type", "veth", "peer", "name", f"{project_name}mp")
    ip("link", "set", parent, "up")
    ip("link", "set", f"{project_name}mp", "up")
    project = topo(text, name="lab.clab.yml")
    project.up()
    assert ping(f"{project_name}-a", blocks("10.225.0.2"))
    assert not project.plan().plan
    project.down()
    assert parent in link_facts()                 # the parent is not ours: it stays
    assert [n for n in leftovers(project_name) if n not in (parent, f"{project_name}mp")] == []


def test_containerlab_bridge_node_uses_an_existing_bridge(topo, project_name, blocks):
    bridge = f"{project_name}br"
    ip("link", "add", bridge, "type", "bridge")
    ip("link", "set", bridge, "up")
    project = topo(textwrap.dedent(blocks(f"""
        name: br
        mgmt: {{network: mgmt, ipv4-subnet: 10.227.0.0/24}}
        topology:
          nodes:
            a: {{kind: linux, exec: ["ip addr add 10.228.0.1/24 dev eth1"]}}
            b: {{kind: linux, exec: ["ip addr add 10.228.0.2/24 dev eth1"]}}
            {bridge}: {{kind: bridge}}
          links:
            - endpoints: ["a:eth1", "{bridge}:p1"]
            - endpoints: ["b:eth1", "{bridge}:p2"]
    """)), name="lab.clab.yml")
    assert f"bridge node {bridge}: the existing bridge {bridge} is used (never changed or deleted)" in project.spec.notes
    project.up()
    ports = [n for n, link in link_facts().items() if link.master == link_facts()[bridge].index]
    assert len(ports) == 2
    assert ping(f"{project_name}-a", blocks("10.228.0.2"))
    assert not project.plan().plan
    project.down()
    facts = link_facts()
    assert bridge in facts and not [n for n, link in facts.items() if link.master == facts[bridge].index]
