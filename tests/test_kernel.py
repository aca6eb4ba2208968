"""The core against the real kernel: reachability, idempotency, in-place change, drift, down, adopt."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netcompose import Project
from netcompose.compile import Unit
from netcompose.drivers import namespaces, rtnl
from netcompose.drivers.netlink import NetlinkDriver
from netcompose.probe import listener, ping, tcp_connect

from .conftest import REPO, needs_root

pytestmark = [needs_root, pytest.mark.kernel]


def ip(*args: str, ns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def link_facts(ns: str | None = None) -> dict[str, rtnl.Link]:
    if ns is None:
        sock = rtnl.RtnlSocket()
    else:
        fd = namespaces.open_fd(namespaces.netns_path(ns))
        with namespaces.entered(fd):
            sock = rtnl.RtnlSocket()
        os.close(fd)
    try:
        return {link.name: link for link in sock.links()}
    finally:
        sock.close()


class CountingWrites:
    """Counts netlink requests sent (dumps are reads and do not count)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = rtnl.RtnlSocket.execute

        def counted(sock, requests, *args, **kwargs):
            self.count += len(requests)
            return original(sock, requests, *args, **kwargs)
        monkeypatch.setattr(rtnl.RtnlSocket, "execute", counted)


@pytest.fixture
def three_tier(project_name, blocks, tmp_path):
    path = tmp_path / "three-tier.yaml"   # its subnets moved to blocks of the test's own
    path.write_text(blocks((REPO / "topologies/three-tier.yaml").read_text()))
    project = Project.load(path, project=project_name)
    project.up()
    return project


def test_three_tier_reachability_and_settings(three_tier, project_name, blocks):
    web, app, db = (f"{project_name}-{c}" for c in ("web", "app", "db"))
    assert ping(web, blocks("10.10.0.20")) and ping(app, blocks("10.20.0.30")) and ping(app, blocks("10.99.0.2"))
    with listener(db, 5432):
        assert tcp_connect(app, blocks("10.20.0.30"), 5432)
        assert tcp_connect(app, blocks("10.99.0.2"), 5432)   # over the p2p wire
    with listener(app, 8080):
        assert tcp_connect(web, blocks("10.10.0.20"), 8080)
    links = link_facts(web)
    assert links["eth0"].mac == "02:42:0a:0a:00:0a" and links["eth0"].mtu == 1500 and links["lo"].up
    assert link_facts(db)["eth0"].mtu == 1400
    routes = ip("route", ns=app)
    assert blocks("default via 10.10.0.1 dev eth0") in routes
    assert blocks("10.30.0.0/24 via 10.20.0.1 dev eth1") in routes
    assert blocks("10.99.0.1/30") in ip("-4", "addr", "show", "p2p0", ns=app)
    resolv = Path(f"/etc/netns/{web}/resolv.conf").read_text()
    assert blocks("nameserver 10.10.0.1") in resolv and "search shop.lab" in resolv
    hosts = Path(f"/etc/netns/{app}/hosts").read_text()
    assert blocks("10.20.0.99\tcache") in hosts and blocks("10.20.0.30\tdb") in hosts
    # /etc/netns/<ns> is a symlink to a shared folder; `ip netns exec` follows it.
    assert os.path.islink(f"/etc/netns/{web}")
    seen = subprocess.run(["ip", "netns", "exec", web, "cat", "/etc/resolv.conf", "/etc/hosts"],
                          capture_output=True, text=True).stdout
    assert "search shop.lab" in seen and "\tapp\n" in seen
    out = subprocess.run(["ip", "netns", "exec", app, "cat", "/proc/sys/net/ipv4/ip_forward"],
                         capture_output=True, text=True).stdout
    assert out.strip() == "1"


def test_second_up_changes_nothing_and_writes_nothing(three_tier, monkeypatch):
    writes = CountingWrites(monkeypatch)
    report = three_tier.up()
    assert not report.plan and writes.count == 0


def test_incremental_change_touches_only_what_changed(topo, project_name, monkeypatch, blocks):
    base = blocks("""
networks:
  a: {subnet: 10.61.0.0/24}
  b: {subnet: 10.62.0.0/24}
containers:
  one: {networks: {a: {ipv4_address: 10.61.0.5}}}
  two: {networks: [a, b]}
""")
    topo(base).up()
    inode = namespaces.inode(namespaces.netns_path(f"{project_name}-one"))
    before = link_facts()
    changed = base.replace(blocks("10.61.0.5"), blocks("10.61.0.6"))
    changed = changed.replace(blocks("  b: {subnet: 10.62.0.0/24}\n"), "")
    changed = changed.replace("two: {networks: [a, b]}", "two: {networks: [a]}\n  three: {networks: [a]}")
    project = topo(changed)
    plan = project.plan().plan
    ops = {(a.op, a.key) for a in plan.changes}
    one = f"{project_name}-one"
    assert ("delete", blocks(f"addr:{one}/eth0/10.61.0.5/24")) in ops
    assert ("create", blocks(f"addr:{one}/eth0/10.61.0.6/24")) in ops
    assert ("create", f"netns:{project_name}-three") in ops
    assert any(op == "delete" and key.startswith("link:/") for op, key in ops)  # network b's bridge
    assert not any(key == f"netns:{one}" for _, key in ops)
    project.up()
    after = link_facts()
    assert namespaces.inode(namespaces.netns_path(one)) == inode
    kept = [n for n in before if n in after and n.startswith(project_name)]
    assert kept and all(before[n].index == after[n].index for n in kept)
    assert blocks("10.61.0.6/24") in ip("-4", "addr", ns=one)


def test_drift_is_shown_and_repaired(three_tier, project_name, blocks):
    app, db = f"{project_name}-app", f"{project_name}-db"
    ip("link", "del", "p2p0", ns=app)           # deletes the wire (both ends)
    ip("addr", "flush", "dev", "eth0", ns=db)
    ip("link", "set", "eth1", "mtu", "1300", ns=app)
    keys = {(a.op, a.key) for a in three_tier.plan().plan.changes}
    assert ("create", f"link:{app}/p2p0") in keys
    assert ("create", blocks(f"addr:{db}/eth0/10.20.0.30/24")) in keys
    assert any(a.op == "update" and "peer_mtu" in a.changes for a in three_tier.plan().plan.changes)
    three_tier.up()
    assert not three_tier.plan().plan
    assert ping(app, blocks("10.99.0.2")) and ping(app, blocks("10.20.0.30"))


def test_down_removes_everything_and_spares_decoys(three_tier, project_name):
    decoy_ns, decoy_br, decoy_veth = f"{project_name}-decoy", f"{project_name}-dbr", f"{project_name}-dv"
    namespaces.create(decoy_ns)
    ip("link", "add", decoy_br, "type", "bridge")
    ip("link", "add", decoy_veth, "type", "veth", "peer", "name", f"{decoy_veth}p")
    ip("link", "set", decoy_veth, "alias", "netcompose:someone-else:ep:x/y")
    three_tier.down()
    assert namespaces.list_named().count(decoy_ns) == 1
    left = [n for n in namespaces.list_named() if n.startswith(project_name) and n != decoy_ns]
    assert not left
    links = link_facts()
    assert decoy_br in links and decoy_veth in links
    ours = [l for l in links.values() if l.alias and l.alias.startswith(f"netcompose:{project_name}:")]
    assert not ours
    assert not [p for p in Path("/etc/netns").glob(f"{project_name}-*") if p.name != decoy_ns]
    assert not three_tier.down().plan     # idempotent


def test_adopted_namespace_keeps_living(topo, project_name, blocks):
    legacy = f"{project_name}-legacy"
    namespaces.create(legacy)
    project = topo(blocks(f"""
networks: {{n: {{subnet: 10.63.0.0/24}}}}
containers:
  mine: {{networks: [n]}}
  old: {{netns: {legacy}, networks: [n]}}
"""))
    project.up()
    assert ping(legacy, blocks("10.63.0.2"))
    project.down()
    assert legacy in namespaces.list_named()
    assert set(link_facts(legacy)) == {"lo"}


def test_name_collision_with_foreign_namespace_is_an_error(topo, project_name, blocks):
    namespaces.create(f"{project_name}-web")
    project = topo(blocks("networks: {n: {subnet: 10.64.0.0/24}}\ncontainers: {web: {networks: [n]}}\n"))
    from netcompose.errors import ConflictError
    with pytest.raises(ConflictError, match="another tool"):
        project.up()
    assert set(link_facts(f"{project_name}-web")) == {"lo"}


def record_compiled_units(monkeypatch) -> list[str]:
    compiled: list[str] = []
    original = Unit.compile
    monkeypatch.setattr(Unit, "compile", lambda self: compiled.append(self.container.name) or original(self))
    return compiled


def test_an_edit_observes_only_where_it_lands(topo, project_name, monkeypatch, blocks):
    base = blocks("""
networks:
  a: {subnet: 10.63.0.0/24}
  b: {subnet: 10.64.0.0/24}
containers:
  one: {networks: [a]}
  two: {networks: [a]}
  three: {networks: {b: {ipv4_address: 10.64.0.7}}}
""")
    topo(base).up()
    one, two, three, four = (f"{project_name}-{c}" for c in ("one", "two", "three", "four"))
    # Members of a network share one hosts file.
    assert os.readlink(f"/etc/netns/{one}") == os.readlink(f"/etc/netns/{two}")
    ip("addr", "flush", "dev", "eth0", ns=three)   # drift outside the coming edit
    looked_at = []
    original = NetlinkDriver._observe_namespace
    monkeypatch.setattr(NetlinkDriver, "_observe_namespace",
                        lambda self, ns, *args: looked_at.append(ns) or original(self, ns, *args))
    compiled = record_compiled_units(monkeypatch)
    grown = topo(base + "  four: {networks: [a]}\n")
    report = grown.up()
    assert set(looked_at) == {four}, looked_at
    assert compiled == ["four"]
    assert {a.key for a in report.plan.changes} >= {f"netns:{four}", f"file:/etc/netns/.netcompose/{project_name}/a/hosts"}
    assert f"file:/etc/netns/{one}" not in {a.key for a in report.plan.changes}
    assert "\tfour\n" in Path(f"/etc/netns/{one}/hosts").read_text()
    assert ping(four, blocks("10.63.0.2")) and ping(one, blocks("10.63.0.4"))
    # The full view finds only the drift the edit did not touch; a refresh repairs it.
    assert {(a.op, a.key) for a in grown.plan().plan.changes} == {("create", blocks(f"addr:{three}/eth0/10.64.0.7/24")),
                                                                   ("create", f"route:{three}/0.0.0.0/0")}
    grown.up(refresh=True)
    assert not grown.plan().plan
    looked_at.clear()
    compiled.clear()
    shrunk = topo(base.replace("  two: {networks: [a]}\n", "") + "  four: {networks: [a]}\n")
    shrunk.up()
    assert set(looked_at) <= {two} and not compiled
    assert two not in namespaces.list_named() and "\ttwo\n" not in Path(f"/etc/netns/{one}/hosts").read_text()
    assert not shrunk.plan().plan


def test_an_edit_converges_the_unchanged_containers_it_reaches(topo, project_name, monkeypatch, blocks):
    """A wire added or removed between two unchanged containers is observed in both
    sandboxes, so both compile again and converge with it (nothing of theirs looks unwanted)."""
    base = blocks("""
networks:
  a: {subnet: 10.66.0.0/24}
containers:
  left: {networks: [a]}
  right: {networks: [a]}
  aside: {networks: [a]}
""")
    topo(base).up()
    compiled = record_compiled_units(monkeypatch)
    linked = topo(base + blocks('links:\n  - endpoints: ["left:p0", "right:p0"]\n'
                         '    addresses: ["10.67.0.1/30", "10.67.0.2/30"]\n'))
    report = linked.up()
    assert sorted(compiled) == ["left", "right"]
    assert report.plan.counts()["delete"] == 0, [a.key for a in report.plan.changes]
    assert ping(f"{project_name}-left", blocks("10.67.0.2"))
    assert not linked.plan().plan
    compiled.clear()
    unlinked = topo(base)
    report = unlinked.up()
    assert sorted(compiled) == ["left", "right"]
    assert {a.key for a in report.plan.changes if not a.implicit} == {f"link:{project_name}-left/p0"}
    assert ping(f"{project_name}-left", blocks("10.66.0.3")) and not unlinked.plan().plan


def test_pipelined_writes_report_each_failure(project_name):
    """Only the last request of a batch asks for an ack; failures before it still come back."""
    ns = f"{project_name}-pipe"
    namespaces.create(ns)
    fd = namespaces.open_fd(namespaces.netns_path(ns))
    with namespaces.entered(fd):
        sock = rtnl.RtnlSocket()
    os.close(fd)
    try:
        ok, missing = rtnl.set_link("lo", up=True), rtnl.set_link("nosuchdev", up=True)
        assert sock.execute([missing, ok, missing]) == [19, 0, 19]   # ENODEV
        codes = sock.execute([ok] * 300 + [missing] + [ok] * 300, chunk=256)
        assert codes[300] == 19 and codes.count(0) == 600
    finally:
        sock.close()
