"""driver: ovn networks on a real OVN (the lab of bench/ovn_lab.py: central databases and
three simulated hosts): each host applies its slice, traffic crosses hosts over Geneve,
ACLs keep the CNM contract, a second `up` changes nothing, drift is repaired, and `down`
removes a host's slice, then (from the last host) the logical state."""
from __future__ import annotations

import json
import subprocess
import sys

from bench.ovn_lab import wait_for

TOPOLOGY = """\
name: {p}
hosts: {{h1: {{}}, h2: {{}}, h3: {{}}}}
networks:
  tenant: {{driver: ovn, subnet: 10.50.1.0/24}}
  db: {{driver: ovn, subnet: 10.50.2.0/24}}
  quiet: {{driver: ovn, subnet: 10.50.3.0/24, icc: false, internal: true}}
containers:
  web: {{host: h1, networks: [tenant]}}
  api: {{host: h2, networks: [tenant, db]}}
  pg:
    host: h2
    networks: [db]
    command: [python3, -m, http.server, "5432"]
    firewall: {{ingress: [{{from: api, proto: tcp, ports: [5432]}}]}}
  cache:
    host: h3
    networks: [db]
    command: [python3, -m, http.server, "5432"]
  q1: {{host: h1, networks: [quiet]}}
  q2: {{host: h3, networks: [quiet]}}
policies:
  - {{from: tenant, to: db, proto: tcp, ports: [5432]}}
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()
    print("open")
except OSError:
    print("closed")
"""


def nc(host, path, *args):
    result = host.netcompose("-f", str(path), *args)
    assert result.returncode == 0, f"{host.name}: netcompose {' '.join(args)}: {result.stderr}"
    return result.stdout


def ping(host, ns, address) -> bool:
    # A fresh binding may drop the very first packets while flows settle: a few tries.
    return host.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address]).returncode == 0 or \
        host.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", address]).returncode == 0


def tcp(host, ns, address, port) -> bool:
    return host.run(["ip", "netns", "exec", ns, "python3", "-c", PROBE, address, str(port)]).stdout.strip() == "open"


def tcp_opens(host, ns, address, port) -> bool:
    """Open once the server (a container's process, just started) listens."""
    return bool(wait_for(f"{address}:{port} from {ns}", lambda: tcp(host, ns, address, port), timeout=15))


def sandboxes(host) -> list[str]:
    return sorted(host.run(["ls", "/run/netns"]).stdout.split())


def test_issue_topology_across_three_hosts(ovn_lab, project_name, tmp_path):
    p = project_name
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY.format(p=p))
    h1, h2, h3 = (ovn_lab.hosts[h] for h in ("h1", "h2", "h3"))
    try:
        for host in (h1, h2, h3):
            nc(host, path, "up")
        # Each host made only its own sandboxes.
        assert sandboxes(h1) == [f"{p}-q1", f"{p}-web"] and sandboxes(h2) == [f"{p}-api", f"{p}-pg"]
        # The Northbound part is the same from every host: a second up anywhere changes nothing,
        # and writes no Northbound transaction.
        written = ovn_lab.nb_transactions()
        for host in (h1, h3):
            assert "nothing to do" in nc(host, path, "up")
        assert ovn_lab.nb_transactions() == written

        web, api = f"{p}-web", f"{p}-api"
        assert ping(h1, web, "10.50.1.3")                      # same switch, h1 → h2
        assert ping(h2, api, "10.50.2.4")                      # same switch, h2 → h3
        assert tcp_opens(h1, web, "10.50.2.4", 5432)           # routed, allowed by the policy, h1 → h3
        assert not ping(h1, web, "10.50.2.4")                  # ... for tcp/5432 only
        assert tcp_opens(h2, api, "10.50.2.3", 5432)           # pg's firewall lets api in
        assert not tcp(h1, web, "10.50.2.3", 5432)             # ... and nobody else
        assert not ping(h1, f"{p}-q1", "10.50.3.3")            # icc: false, h1 → h3 ...
        neighbour = h1.run(["ip", "-n", f"{p}-q1", "neigh", "show", "10.50.3.3"]).stdout
        assert "lladdr" in neighbour, neighbour                # ... though the switch carries ARP
        assert not ping(h1, web, "10.50.3.2")                  # internal: not on the router

        rows = json.loads(nc(h1, path, "ps", "--json"))
        states = {(r["container"], r["network"]): (r["host"], r["state"], r["ovn"]) for r in rows}
        assert states[("web", "tenant")] == ("h1", "up", "up")
        assert states[("cache", "db")] == ("h3", "remote", "up")

        # Drift: a logical port deleted behind our back comes back with the next up.
        ovn_lab.nbctl("lsp-del", f"nc/{p}/web/tenant")
        assert "drift" in nc(h3, path, "plan")
        nc(h1, path, "up")
        assert ovn_lab.nbctl("lsp-get-up", f"nc/{p}/web/tenant") == "up"
        assert ping(h1, web, "10.50.1.3")
        # ... and so does a sandbox's veth: its br-int port is made anew (ovs-vswitchd does not
        # pick a device up again under the same name), and up waits for the port to be up.
        veth = next(r["host_ifname"] for r in rows if r["container"] == "web")
        h1.run(["ip", "link", "del", veth], check=True)
        assert "attached: False → True" in nc(h1, path, "up")
        assert ping(h1, web, "10.50.1.3")

        # A host's down removes its slice only; the others keep working.
        nc(h1, path, "down")
        assert sandboxes(h1) == []
        assert ovn_lab.nbctl("--bare", "--columns=name", "find", "Logical_Switch", f"name=nc/{p}/tenant")
        assert tcp(h2, api, "10.50.2.3", 5432) and ping(h2, api, "10.50.2.4")
        nc(h2, path, "down")
        assert ovn_lab.nbctl("--bare", "--columns=name", "find", "Logical_Switch", f"name=nc/{p}/tenant")
        # The last host with bindings takes the logical state along.
        nc(h3, path, "down")
        assert not ovn_lab.nbctl("--bare", "--columns=name", "find", "Logical_Switch", f"external_ids:"
                                 f"netcompose-project={p}")
        assert not ovn_lab.nbctl("--bare", "--columns=_uuid", "find", "ACL", f"external_ids:netcompose-project={p}")
    finally:
        for host in (h1, h2, h3):
            host.netcompose("-f", str(path), "down", "--all-hosts")


EGRESS = """\
name: {p}
hosts: {{h1: {{}}, h2: {{}}}}
ovn:
  gateway: h1
  uplink: {{network: {p}, address: 172.31.0.10/24, via: 172.31.0.1}}
networks:
  tenant: {{driver: ovn, subnet: 10.50.1.0/24}}
containers:
  api: {{host: h2, networks: [tenant], ports: ["8080:80"], command: [python3, -m, http.server, "80"]}}
"""

SOURCE_SEEN = """
import socket
server = socket.create_server(("0.0.0.0", 7000))
print("listening", flush=True)
conn, (peer, _) = server.accept()
conn.sendall(peer.encode())
"""


def test_egress_and_published_ports_through_the_gateway_host(ovn_lab, project_name, tmp_path):
    """An "outside" namespace on h1 behind an uplink bridge that ovn-bridge-mappings names:
    a container on h2 reaches it SNATed to the gateway router's address, and the outside
    reaches the container's published port on that address."""
    p = project_name
    path = tmp_path / "topo.yaml"
    path.write_text(EGRESS.format(p=p))
    h1, h2 = ovn_lab.hosts["h1"], ovn_lab.hosts["h2"]
    outside, uplink, bridge = f"{p}-out", f"{p}x", f"br{p}"
    mappings = h1.vsctl("--if-exists", "get", "open", ".", "external_ids:ovn-bridge-mappings")
    try:
        for argv in (["ip", "netns", "add", outside],
                     ["ip", "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", outside],
                     ["ip", "-n", outside, "addr", "add", "172.31.0.1/24", "dev", "eth0"],
                     ["ip", "-n", outside, "link", "set", "eth0", "up"],
                     ["ip", "netns", "exec", outside, "ethtool", "-K", "eth0", "tx", "off"],
                     ["ethtool", "-K", uplink, "tx", "off"], ["ip", "link", "set", uplink, "up"]):
            h1.run(argv, check=True)
        h1.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev", "--", "add-port", bridge,
                 uplink, "--", "set", "open", ".", f"external_ids:ovn-bridge-mappings={p}:{bridge}")
        for host in (h1, h2):
            nc(host, path, "up")
        server = subprocess.Popen(h1.holder.argv(["ip", "netns", "exec", outside, sys.executable, "-c", SOURCE_SEEN]),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "listening"
            seen = h2.run(["ip", "netns", "exec", f"{p}-api", sys.executable, "-c",
                           "import socket; print(socket.create_connection(('172.31.0.1', 7000), timeout=5)"
                           ".recv(64).decode())"])
            assert seen.stdout.strip() == "172.31.0.10", seen.stderr     # SNAT on the gateway router
        finally:
            server.kill()
            server.wait()
        assert tcp_opens(h1, outside, "172.31.0.10", 8080)         # DNAT to api on h2
        rows = json.loads(nc(h1, path, "ps", "--json"))
        assert rows[0]["ports"] == ["172.31.0.10:8080->80/tcp"] and rows[0]["state"] == "remote"
    finally:
        for host in (h1, h2):
            host.netcompose("-f", str(path), "down", "--all-hosts")
        h1.vsctl("--if-exists", "del-br", bridge)
        if mappings:
            h1.vsctl("set", "open", ".", f"external_ids:ovn-bridge-mappings={mappings}")
        else:
            h1.vsctl("remove", "open", ".", "external_ids", "ovn-bridge-mappings")
        h1.run(["ip", "netns", "del", outside])
