"""The OVN lab harness alone (bench/ovn_lab.py), with raw OVN: logical ports made with
ovn-nbctl on the lab's private Northbound DB and bound by hand on two simulated hosts."""
from __future__ import annotations

import subprocess
import sys

from bench.ovn_lab import wait_for

ECHO_SERVER = """
import socket
server = socket.create_server(("0.0.0.0", 7000))
print("listening", flush=True)
conn, _ = server.accept()
while data := conn.recv(65536):
    conn.sendall(data)
"""
ECHO_CLIENT = """
import socket, sys
payload = bytes(range(256)) * 2048   # 512 KiB: many full-sized segments, each checksummed
with socket.create_connection((sys.argv[1], 7000), timeout=10) as conn:
    conn.sendall(payload)
    conn.shutdown(socket.SHUT_WR)
    got = b""
    while data := conn.recv(65536):
        got += data
sys.exit(0 if got == payload else 1)
"""


def bind_port(host, sandbox: str, port: str, mac: str, ip: str) -> None:
    """A sandbox on `host` with eth0 bound to logical port `port` on br-int (iface-id), TX
    checksum offload off (the userspace datapath does not fill checksums in), and an MTU that
    leaves room for the Geneve header on the lab's 1500-byte underlay (full-sized frames are
    dropped otherwise)."""
    peer = f"{sandbox}h"
    for argv in (["ip", "netns", "add", sandbox],
                 ["ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", sandbox],
                 ["ip", "-n", sandbox, "link", "set", "eth0", "address", mac, "mtu", "1400"],
                 ["ip", "-n", sandbox, "addr", "add", f"{ip}/24", "dev", "eth0"],
                 ["ip", "-n", sandbox, "link", "set", "eth0", "up"],
                 ["ip", "-n", sandbox, "link", "set", "lo", "up"],
                 ["ip", "netns", "exec", sandbox, "ethtool", "-K", "eth0", "tx", "off"],
                 ["ethtool", "-K", peer, "tx", "off"],
                 ["ip", "link", "set", peer, "up"]):
        host.run(argv, check=True)
    host.vsctl("add-port", "br-int", peer, "--", "set", "interface", peer, f"external_ids:iface-id={port}")


def test_ports_on_two_hosts_in_one_logical_switch_ping_and_talk_tcp_across_geneve(ovn_lab, project_name):
    p = project_name
    h1, h2 = ovn_lab.hosts["h1"], ovn_lab.hosts["h2"]
    # Each host is its own namespace with its own userspace datapath device.
    for host in (h1, h2):
        assert host.run(["ip", "link", "show", "ovs-netdev"]).returncode == 0
    switch = f"{p}-ls"
    ovn_lab.nbctl("ls-add", switch)
    try:
        ports = {"a": (h1, "0a:00:00:00:00:0a", "10.50.9.10"), "b": (h2, "0a:00:00:00:00:0b", "10.50.9.11")}
        for name, (host, mac, ip) in ports.items():
            ovn_lab.nbctl("lsp-add", switch, f"{p}-{name}", "--", "lsp-set-addresses", f"{p}-{name}", f"{mac} {ip}")
            bind_port(host, f"{p}{name}", f"{p}-{name}", mac, ip)
        for name in ports:
            ovn_lab.nbctl("--timeout=30", "wait-until", "logical_switch_port", f"{p}-{name}", "up=true")
        # Sandboxes are private to their host.
        assert f"{p}a" in h1.run(["ip", "netns"]).stdout and f"{p}a" not in h2.run(["ip", "netns"]).stdout
        # The first packets may race the tunnel's neighbour resolution on br-phy.
        wait_for("a ping across Geneve", lambda: h1.run(["ip", "netns", "exec", f"{p}a", "ping", "-c1", "-W1",
                                                         "10.50.9.11"]).returncode == 0, timeout=20)
        server = subprocess.Popen(h2.holder.argv(["ip", "netns", "exec", f"{p}b", sys.executable, "-c", ECHO_SERVER]),
                                  stdout=subprocess.PIPE, text=True, env=h2.env())
        try:
            assert server.stdout.readline().strip() == "listening"
            client = h1.run(["ip", "netns", "exec", f"{p}a", sys.executable, "-c", ECHO_CLIENT, "10.50.9.11"],
                            timeout=60)
            assert client.returncode == 0, client.stderr
        finally:
            server.kill()
            server.wait()
    finally:
        ovn_lab.nbctl("--if-exists", "ls-del", switch)
        for name, (host, _, _) in ports.items():
            host.vsctl("--if-exists", "del-port", "br-int", f"{p}{name}h")
            host.run(["ip", "netns", "del", f"{p}{name}"])
