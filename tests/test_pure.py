"""compile and plan over plain data: no root, no kernel."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from netcompose.compile import compile_resources, units
from netcompose.plan import make_plan, PlanError
from netcompose.errors import ConflictError
from netcompose import resources as r
from netcompose.spec import load
from netcompose.spec.resolve import HostFacts, resolve
from ipaddress import IPv4Address, IPv4Network, IPv6Network

REPO = Path(__file__).resolve().parent.parent


def resolved(text: str, tmp_path, facts: HostFacts = HostFacts(), project: str = "p"):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    spec = load(path, project)
    return resolve(spec.topology, spec.doc, project, facts)


def owned(resources: dict, project: str = "p") -> dict:
    return {k: v.with_owner(project) for k, v in resources.items()}


def test_compile_three_tier_is_deterministic(tmp_path):
    spec = load(REPO / "topologies/three-tier.yaml", "p")
    a = compile_resources(resolve(spec.topology, spec.doc, "p"))
    b = compile_resources(resolve(spec.topology, spec.doc, "p"))
    assert [x.to_json() for x in a.values()] == [x.to_json() for x in b.values()]
    kinds = {x.kind for x in a.values()}
    assert kinds == {"netns", "bridge", "veth", "address", "route", "file", "sysctl", "nft_table"}
    assert all(len(x.attrs["ifname"].encode()) <= 15 for x in a.values() if x.kind in ("bridge", "veth"))


def test_unit_digests_follow_what_a_container_compiles_from(tmp_path):
    def digests(text: str) -> dict[str, str]:
        return {name: unit.digest for name, unit in units(resolved(text, tmp_path)).items()}
    base = digests("networks: {n: {}, m: {}}\ncontainers: {x: {networks: [n]}, y: {networks: [m]}}\n")
    # Its network's MTU, its own address, a new neighbour's hosts entry: only where compile reads them.
    mtu = digests("networks: {n: {mtu: 1400}, m: {}}\ncontainers: {x: {networks: [n]}, y: {networks: [m]}}\n")
    assert mtu["x"] != base["x"] and mtu["y"] == base["y"]
    grown = digests("networks: {n: {}, m: {}}\n"
                    "containers: {x: {networks: [n]}, y: {networks: [m]}, z: {networks: [m]}}\n")
    assert grown["x"] == base["x"] and grown["y"] == base["y"]
    moved = digests("networks: {n: {}, m: {}}\n"
                    "containers: {x: {networks: {n: {ipv4_address: 10.128.0.9}}}, y: {networks: [m]}}\n")
    assert moved["x"] != base["x"]
    assert all(unit.compile() for unit in units(resolved("networks: {n: {}}\ncontainers: {x: {networks: [n]}}\n",
                                                          tmp_path)).values())


def test_ipam_defaults_avoid_host_routes_and_stick(tmp_path):
    text = "networks: {a: {}, b: {}}\ncontainers: {x: {networks: [a, b]}, y: {networks: [a]}}\n"
    facts = HostFacts(space=((IPv4Network("10.128.0.0/24"), "a route of the host"),))
    res = resolved(text, tmp_path, facts)
    assert str(res.networks["a"].subnet) == "10.128.1.0/24"
    assert str(res.networks["b"].subnet) == "10.128.2.0/24"
    assert str(res.containers["x"].endpoints[0].address) == "10.128.1.2"
    assert [e.ifname for e in res.containers["x"].endpoints] == ["eth0", "eth1"]
    sticky = HostFacts(subnets={"a": IPv4Network("10.200.0.0/24")},
                       addresses={("y", "a"): IPv4Address("10.200.0.50")})
    res = resolved(text, tmp_path, sticky)
    assert str(res.networks["a"].subnet) == "10.200.0.0/24"
    assert str(res.containers["y"].endpoints[0].address) == "10.200.0.50"


def test_plan_empty_when_equal(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    assert not make_plan(desired, owned(desired), "p")


def test_plan_orders_creates_by_dependency(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    plan = make_plan(desired, {}, "p")
    position = {a.key: i for i, a in enumerate(plan.actions)}
    for action in plan.actions:
        for dep in action.desired.deps:
            assert position[dep] < position[action.key], (dep, action.key)


def test_plan_update_in_place_and_prune(tmp_path):
    before = compile_resources(resolved(
        "networks: {n: {mtu: 1500}, m: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    after = compile_resources(resolved("networks: {n: {mtu: 1400}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    plan = make_plan(after, owned(before), "p")
    ops = {(a.op, a.kind) for a in plan.actions}
    assert ("update", "bridge") in ops and ("update", "veth") in ops
    assert ("delete", "bridge") in ops
    assert not any(a.op == "create" for a in plan.actions)


def test_plan_replacement_recreates_children(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    observed = owned(desired)
    veth = next(k for k, v in observed.items() if v.kind == "veth")
    moved = dict(observed[veth].attrs, peer_ifname="other")
    observed[veth] = r.Resource("veth", veth, moved, observed[veth].deps, observed[veth].parents, "p")
    plan = make_plan(desired, observed, "p")
    addr = next(k for k, v in desired.items() if v.kind == "address" and v.attrs["ns"] != "")
    assert [a.op for a in plan.actions if a.key == addr] == ["delete", "create"]
    assert next(a for a in plan.actions if a.key == addr and a.op == "delete").implicit


def test_deleting_namespace_makes_children_implicit(tmp_path):
    observed = owned(compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path)))
    plan = make_plan({}, observed, "p")
    explicit = {a.kind for a in plan.actions if not a.implicit}
    assert explicit == {"netns", "bridge", "file", "nft_table", "sysctl"}
    assert all(a.implicit for a in plan.actions if a.kind in ("veth", "route", "address"))


def test_foreign_objects_are_conflicts_and_never_deleted(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    foreign = {k: v.with_owner(None) for k, v in desired.items() if v.kind == "netns"}
    with pytest.raises(ConflictError, match="belongs to another tool"):
        make_plan(desired, foreign, "p")
    other = {k: v.with_owner("q") for k, v in desired.items()}
    assert not make_plan({}, other, "p")


def test_adopted_namespace_must_exist(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {netns: elsewhere, networks: [n]}}\n",
                                         tmp_path))
    with pytest.raises(PlanError, match="does not exist"):
        make_plan(desired, {}, "p")


def test_plan_json_round_trip(tmp_path):
    desired = compile_resources(resolved("networks: {n: {}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    plan = make_plan(desired, {}, "p")
    doc = plan.to_json()
    assert doc["format_version"] == "1.1" and doc["resource_drift"] == []
    from netcompose.plan import Plan
    assert Plan.from_json(doc).to_json() == doc


def test_schema_is_current():
    import json
    from netcompose.spec.model import json_schema
    committed = json.loads((REPO / "schemas/netcompose.schema.json").read_text())
    assert committed == json_schema(), "run: netcompose schema > schemas/netcompose.schema.json"


def test_nat_and_published_ports_need_forwarding(tmp_path):
    res = resolved("networks: {n: {subnet: 10.9.0.0/24}}\ncontainers: {c: {networks: [n], ports: ['80:80']}}\n",
                   tmp_path)
    desired = compile_resources(res)
    assert desired["sysctl:/net.ipv4.ip_forward"].attrs["value"] == "1"
    table = desired["nft:/inet/netcompose-p"]
    assert any("containers.c.ports[0]" in rule for rule in table.attrs["chains"]["prerouting"]["rules"])
    isolated = resolved("networks: {n: {subnet: 10.9.0.0/24, nat: false}}\ncontainers: {c: {networks: [n]}}\n",
                        tmp_path)
    assert "sysctl:/net.ipv4.ip_forward" not in compile_resources(isolated)


def test_drift_is_told_apart_from_file_changes(tmp_path):
    from netcompose.plan import classify, digest
    desired = compile_resources(resolved("networks: {n: {mtu: 1500}}\ncontainers: {c: {networks: [n]}}\n", tmp_path))
    applied = {k: digest(v) for k, v in desired.items()}
    observed = owned(desired)
    lost = next(k for k, v in desired.items() if v.kind == "address" and v.attrs["ns"])
    del observed[lost]                                       # drift: someone flushed an address
    changed = compile_resources(resolved("networks: {n: {mtu: 1400}}\ncontainers: {c: {networks: [n]}}\n",
                                         tmp_path))          # file change: a new MTU
    plan = make_plan(changed, observed, "p")
    classify(plan, applied)
    causes = {(a.key, a.cause) for a in plan.actions}
    assert (lost, "drift") in causes
    assert all(a.cause == "config" for a in plan.actions if a.op == "update")
    doc = plan.to_json()
    assert [a["key"] for a in doc["resource_drift"]] == [lost]


def test_cross_driver_dependencies_come_from_the_constructors():
    """Drivers of one level apply at once, and a rollback plans from what drivers observed
    (built without compile's help): so a dependency across drivers must be derived by the
    resource constructor itself, on both sides alike."""
    veth = r.veth(r.HOST, "p-end", "p-ns", "eth0", mtu=1500, alias="a", peer_alias="b")
    port = r.ovs_port("p-end", "br", type="", tag=None, trunks=None, external_ids={})
    internal = r.ovs_port("p-gw", "br", type="internal", tag=None, trunks=None, external_ids={})
    assert veth.key in port.deps and not any(d.startswith("link:") for d in internal.deps)
    localnet = r.sysctl(r.HOST, "net.ipv4.conf.p-br.route_localnet", "1")
    assert r.link_key(r.HOST, "p-br") in localnet.deps
    assert r.sysctl(r.HOST, "net.ipv4.conf.all.forwarding", "1").deps == ()
    desired = {res.key: res for res in (r.netns("p-ns"), veth, port, r.ovs_bridge("br", "netdev", "standalone", "p"))}
    levels = {a.key: a.level for a in make_plan(desired, {}, "p").actions}
    assert levels[port.key] > levels[veth.key]


def test_folders_that_compose_would_normalise_alike_make_distinct_projects(tmp_path):
    """Compose names a project after its folder, lowercased and without '.', ' ', ...: then
    "a.b" and "ab" are one project and each `up` prunes the other's containers."""
    projects = {}
    for folder in ("ab", "a.b", "AB", "a b", "x" * 40, "x" * 40 + "y", "_lab"):
        path = tmp_path / folder / "netcompose.yaml"
        path.parent.mkdir()
        path.write_text("containers: {c: {}}\n")
        projects[folder] = load(path).project
    assert projects["ab"] == "ab" and projects["a.b"].startswith("ab-") and projects["_lab"].startswith("lab-")
    assert len(set(projects.values())) == len(projects)
    assert all(len(name) <= 32 and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) for name in projects.values())
    path = tmp_path / "a.b" / "netcompose.yaml"
    assert load(path).project == projects["a.b"]            # stable
    path.write_text("name: shop\ncontainers: {c: {}}\n")
    assert load(path).project == "shop"                     # `name:` wins, then -p


def test_subnets_avoid_reserved_ranges_the_host_and_other_projects(tmp_path):
    from netcompose.errors import SpecError
    for subnet, named in (("127.0.0.0/24", "loopback range 127.0.0.0/8"), ("0.0.0.0/0", "'this network'"),
                          ("224.1.0.0/24", "multicast range"), ("169.254.9.0/24", "link-local range")):
        with pytest.raises(SpecError, match=f"1:24: subnet {subnet} of network 'n' overlaps the {named}"):
            resolved(f"networks: {{n: {{subnet: {subnet}}}}}\n", tmp_path)
    space = ((IPv4Network("198.51.100.0/24"), "a route of the host (dev eth0)"),
             (IPv4Network("10.128.0.0/24"), "an address of project 'other' (dev other-br)"))
    with pytest.raises(SpecError, match=r"overlaps 198.51.100.0/24, a route of the host \(dev eth0\)"):
        resolved("networks: {n: {subnet: 198.51.100.128/25}}\n", tmp_path, HostFacts(space=space))
    with pytest.raises(SpecError, match="overlaps 10.128.0.0/24, an address of project 'other'"):
        resolved("networks: {n: {subnet: 10.128.0.0/16}}\n", tmp_path, HostFacts(space=space))
    res = resolved("address_pools: [{base: 0.0.0.0/0, size: 24}]\nnetworks: {n: {}}\n", tmp_path, HostFacts(space=space))
    assert str(res.networks["n"].subnet) == "1.0.0.0/24"   # 0/8 skipped
    for subnet6, named in (("fe80::/64", "link-local range fe80::/10"), ("ff02::/64", "multicast range")):
        with pytest.raises(SpecError, match=f"subnet {subnet6} of network 'n' overlaps the {named}"):
            resolved(f"networks: {{n: {{subnet6: '{subnet6}'}}}}\n", tmp_path)
    space6 = ((IPv6Network("2001:db8::/32"), "a route of the host (dev eth0)"),)
    with pytest.raises(SpecError, match=r"overlaps 2001:db8::/32, a route of the host"):
        resolved("networks: {n: {subnet6: '2001:db8:1::/64'}}\n", tmp_path, HostFacts(space=space6))


def test_addresses_and_subnets_stay_whatever_is_inserted(tmp_path):
    before = resolved("networks: {b: {}}\ncontainers: {x: {networks: [b]}, y: {networks: [b]}}\n", tmp_path)
    facts = HostFacts(subnets={n: net.subnet for n, net in before.networks.items()},
                      addresses={(c.name, ep.network): ep.address for c in before.containers.values()
                                 for ep in c.endpoints})
    after = resolved("networks: {a: {}, b: {}}\n"
                     "containers: {x: {networks: [b]}, z: {networks: [a, b]}, y: {networks: [b]}}\n", tmp_path, facts)
    assert after.networks["b"].subnet == before.networks["b"].subnet != after.networks["a"].subnet
    for c in ("x", "y"):
        assert after.containers[c].endpoints[0].address == before.containers[c].endpoints[0].address
    assert after.containers["z"].endpoints[1].address not in {before.containers[c].endpoints[0].address
                                                              for c in ("x", "y")}
