"""One topology across three hosts on OVN (issue 16), on the OVN lab (bench/ovn_lab.py):
each simulated host runs its own `netcompose up` with NETCOMPOSE_HOST, NETCOMPOSE_OVSDB
(its own OVS) and NETCOMPOSE_OVN_NB (the lab's central Northbound DB over TCP).  Beside
tests/test_ovn_kernel.py (the issue's file: traffic, a logical port's drift, the hosts'
`down`s), this covers `check` and `ps` across hosts, the firewall and policies with every
pair on two hosts, full-sized TCP across the tunnel, a no-op `up` counted in Northbound
transactions, and a sandbox's drift seen by its host only.

The tests share one deployment, in file order: reads first, then drift."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.ovn_lab import wait_for

from .conftest import REPO
from .test_ovn_lab import ECHO_CLIENT, ECHO_SERVER

TOPOLOGY = """
hosts: {h1: {}, h2: {}, h3: {}}
networks:
  tenant: {driver: ovn, subnet: 10.50.1.0/24}
  db: {driver: ovn, subnet: 10.50.2.0/24}
containers:
  web: {host: h1, networks: [tenant]}
  api: {host: h2, networks: [tenant, db]}
  pg:
    host: h3
    networks: [db]
    firewall: {ingress: [{from: api, proto: tcp, ports: [5432]}]}
  cache: {host: h3, networks: [db]}
policies:
  - {from: tenant, to: db, proto: tcp, ports: [5432]}
  - {from: db, to: tenant}
expect:
  - {from: api, to: "pg:5432"}
  - {from: web, to: "pg:5432", reachable: false}
  - {from: web, to: "cache:5432"}
  - {from: web, to: "cache:6379", reachable: false}
"""
ADDRESSES = {"web": "10.50.1.2", "api": "10.50.1.3", "pg": "10.50.2.3", "cache": "10.50.2.4"}
PLACES = {"web": "h1", "api": "h2", "pg": "h3", "cache": "h3"}


class Deployment:
    def __init__(self, lab, project: str, path) -> None:
        self.lab, self.project, self.path = lab, project, path

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return self.lab.hosts[host].netcompose(*args, "-f", str(self.path), "-p", self.project)

    def up(self, host: str) -> str:
        result = self.cli(host, "up")
        assert result.returncode == 0, f"up on {host}: {result.stderr}"
        return result.stdout

    def across(self, *args: str, via_from_environment: bool = False) -> subprocess.CompletedProcess:
        """A command across all hosts, from this machine, through the lab's on-host."""
        via = f"{self.lab.on_host} {{host}} {sys.executable} -m netcompose"
        return subprocess.run([sys.executable, "-m", "netcompose", *args, "-f", str(self.path), "-p", self.project,
                               "--all-hosts", *([] if via_from_environment else ["--via", via])],
                              capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**os.environ, "NETCOMPOSE_VIA": via} if via_from_environment else None)

    def reaches(self, source: str, target: str, attempts: int = 1) -> bool:
        """One ping from source's sandbox (on its host) to target's address; `attempts`
        tries, for the first packets after a change (tunnel next hops resolving)."""
        host = self.lab.hosts[PLACES[source]]
        for _ in range(attempts):
            if host.run(["ip", "netns", "exec", f"{self.project}-{source}", "ping", "-c1", "-W1",
                         ADDRESSES[target]]).returncode == 0:
                return True
        return False

    def nb_rows(self) -> dict[str, list[str]]:
        """The Northbound rows that carry the project's mark, by table."""
        found = {}
        for table in ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port", "Port_Group",
                      "ACL"):
            rows = self.lab.nbctl("--bare", "--columns=_uuid", "find", table,
                                  f"external_ids:netcompose-project={self.project}").split()
            if rows:
                found[table] = rows
        return found

    def remove(self) -> None:
        """Whatever the tests left, even after a failure: each host's slice, then the rows."""
        for host in self.lab.hosts.values():
            host.run([sys.executable, "-c", f"from tests.conftest import remove_by_prefix; "
                                            f"remove_by_prefix({self.project!r})"])
            for port in host.vsctl("list-ports", "br-int").split():
                if port.startswith(self.project):
                    host.vsctl("--if-exists", "del-port", "br-int", port)
        for table in ("Logical_Switch", "Logical_Router", "Port_Group"):   # they hold the other rows
            for row in self.nb_rows().get(table, ()):
                self.lab.nbctl("--if-exists", "destroy", table, row)


@pytest.fixture(scope="module")
def deployed(ovn_lab, tmp_path_factory):
    import secrets
    project = "t" + secrets.token_hex(3)[:5]
    path = tmp_path_factory.mktemp("ovn") / "topo.yaml"
    path.write_text(TOPOLOGY)
    deployment = Deployment(ovn_lab, project, path)
    try:
        # All hosts at once, as real ones would: they write the same logical state together.
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(deployment.up, ("h1", "h2", "h3")))
        yield deployment
    finally:
        deployment.remove()


def test_traffic_across_hosts_same_switch_routed_policy_and_firewall(deployed):
    d = deployed
    # The hosts' concurrent ups made each logical row once.
    switches = d.lab.nbctl("--bare", "--columns=name", "find", "Logical_Switch",
                           f"external_ids:netcompose-project={d.project}").split()
    assert sorted(switches) == [f"nc/{d.project}/db", f"nc/{d.project}/tenant"]
    assert len(d.nb_rows()["Logical_Router"]) == 1 and len(d.nb_rows()["Logical_Router_Port"]) == 2
    assert d.reaches("web", "api", attempts=5), "same switch, h1 → h2"
    assert d.reaches("api", "pg") is False, "pg's firewall admits only api's TCP 5432"
    assert d.reaches("api", "cache"), "same switch, h2 → h3"
    assert d.reaches("cache", "web", attempts=3), "routed by the logical router, h3 → h1 (policy db → tenant)"
    assert not d.reaches("web", "cache"), "tenant → db only TCP 5432 (policy)"
    # A full-sized TCP exchange across the Geneve tunnel (checksums, MTU).
    server = subprocess.Popen(d.lab.hosts["h3"].holder.argv(["ip", "netns", "exec", f"{d.project}-cache",
                                                             sys.executable, "-c",
                                                             ECHO_SERVER.replace("7000", "5432")]),
                              stdout=subprocess.PIPE, text=True, env=d.lab.hosts["h3"].env())
    try:
        assert server.stdout.readline().strip() == "listening"
        client = d.lab.hosts["h1"].run(["ip", "netns", "exec", f"{d.project}-web", sys.executable, "-c",
                                        ECHO_CLIENT.replace("7000", "5432"), ADDRESSES["cache"]], timeout=60)
        assert client.returncode == 0, f"512 KiB over TCP, web (h1) → cache (h3), routed: {client.stderr}"
    finally:
        server.kill()
        server.wait()


def test_check_and_ps_across_hosts(deployed):
    d = deployed
    result = d.across("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    probes = {(p["source"], p["target"], p["proto"], p["port"]): (p["expected"], p["actual"])
              for p in json.loads(result.stdout)["probes"]}
    # Every ordered pair, each probed from its source's host, and the TCP ones to listeners
    # on other hosts.
    assert {(s, t) for s, t, proto, _ in probes if proto == "icmp"} == {
        (a, b) for a in PLACES for b in PLACES if a != b}
    assert probes[("api", "pg", "tcp", 5432)] == (True, True)
    assert probes[("web", "pg", "tcp", 5432)] == (False, False)
    assert probes[("web", "cache", "tcp", 5432)] == (True, True)
    assert probes[("web", "cache", "tcp", 6379)] == (False, False)
    assert probes[("web", "api", "icmp", None)] == (True, True)
    # One host alone probes from its own containers; TCP to other hosts' listeners is left out.
    alone = d.cli("h1", "check")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "3 TCP/UDP probes of containers on other hosts left out" in alone.stdout
    alone = json.loads(d.cli("h1", "check", "--json").stdout)
    assert alone["left_out"] == 3 and {p["source"] for p in alone["probes"]} == {"web"}
    ps = d.across("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    rows = [(row["container"], row["host"], row["network"], row["state"], row["ovn"]) for row in json.loads(ps.stdout)]
    assert rows == [("web", "h1", "tenant", "up", "up"), ("api", "h2", "tenant", "up", "up"),
                    ("api", "h2", "db", "up", "up"), ("pg", "h3", "db", "up", "up"), ("cache", "h3", "db", "up", "up")]
    table = d.across("ps", via_from_environment=True).stdout
    assert table.splitlines()[0].split()[:2] == ["CONTAINER", "HOST"] and " OVN " in table.splitlines()[0]


def test_a_second_up_on_every_host_makes_no_northbound_transaction(deployed):
    d = deployed
    before = d.lab.nb_transactions()
    for host in ("h1", "h2", "h3"):
        assert "nothing to do" in d.up(host)
    assert d.lab.nb_transactions() == before


def test_drift_a_sandbox_veth_deleted_is_repaired_by_its_host_only(deployed):
    d = deployed
    row = next(r for r in json.loads(d.cli("h2", "ps", "--json").stdout)
               if r["container"] == "api" and r["network"] == "tenant")
    d.lab.hosts["h2"].run(["ip", "link", "del", row["host_ifname"]], check=True)
    assert not d.reaches("web", "api")
    assert "nothing to do" in d.up("h1")      # another host sees nothing of h2's sandboxes
    assert "nothing to do" not in d.up("h2")
    assert d.reaches("web", "api", attempts=5)
    assert "nothing to do" in d.up("h2")


@pytest.mark.parametrize("args, message", [
    (["--all-hosts"], "--all-hosts needs a way to run netcompose on each host; pass --via"),
    (["--all-hosts", "--via", "ssh netcompose"], "does not say where the host's name goes; put {host} in it"),
    (["--all-hosts", "--via", "ssh '{host}"], "No closing quotation"),
])
def test_across_hosts_bad_command_lines_exit_3(tmp_path, args, message):
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY)
    for command in ("check", "ps"):
        result = subprocess.run([sys.executable, "-m", "netcompose", command, "-f", str(path), *args],
                                capture_output=True, text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert result.returncode == 3 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_across_hosts_needs_hosts_and_names_the_host_that_failed(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n")
    result = subprocess.run([sys.executable, "-m", "netcompose", "check", "-f", str(path), "--all-hosts", "--via",
                             "sh -c 'exit 1' {host}"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 3 and "declares no hosts:" in result.stderr, result.stderr
    path.write_text(TOPOLOGY)
    failing = "sh -c 'echo \"error: no such thing on $0\" >&2; exit 1' {host}"
    for command in ("check", "ps"):
        result = subprocess.run([sys.executable, "-m", "netcompose", command, "-f", str(path), "--all-hosts", "--via",
                                 failing], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert re.match(r"error: host (h[123]): error: no such thing on \1 \(ran: sh -c", result.stderr), \
            result.stderr


STALE_WRITER = """
import sys
from netcompose import Project
from netcompose.drivers.ovn_nb import NorthboundDriver
project = Project.load(sys.argv[1], sys.argv[2])
rows = [a for a in project.plan().plan.actions if a.kind.startswith("ovn_") and a.kind != "ovn_port_up"]
print(len(rows), flush=True)
sys.stdin.readline()          # meanwhile another host writes the same rows
driver = NorthboundDriver(project.ovn_nb)
outcome = driver.apply(rows)
print(sorted(outcome.errors.values())[:1] or "ok", flush=True)
"""


def test_a_host_writing_logical_rows_another_host_made_meanwhile_adopts_them(ovn_lab, tmp_path):
    """Two hosts' `up` at once: h1 planned every logical row as missing, h2 made them all
    before h1 wrote; h1's transaction makes none twice and fails none."""
    import secrets
    d = Deployment(ovn_lab, "t" + secrets.token_hex(3)[:5], tmp_path / "topo.yaml")
    d.path.write_text(TOPOLOGY)
    h1 = ovn_lab.hosts["h1"]
    writer = subprocess.Popen(h1.holder.argv([sys.executable, "-c", STALE_WRITER, str(d.path), d.project], REPO),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=h1.env())
    try:
        assert int(writer.stdout.readline() or 0) > 10, writer.stderr.read()
        d.up("h2")
        before = d.nb_rows()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok", writer.stderr.read()
        assert d.nb_rows() == before
    finally:
        writer.kill()
        writer.wait()
        d.remove()
