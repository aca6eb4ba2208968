"""OVN networks across hosts, pure: the file keys and their validation, the Northbound rows a
file compiles to (the same on every host), each host's local slice, plans and the CLI's
errors.  The kernel side with a real OVN is tests/test_ovn_kernel.py."""
from __future__ import annotations

import pytest

from netcompose.compile import compile_resources
from netcompose.compile.ovn import port_group_name
from netcompose.engine import Project
from netcompose.errors import SpecError
from netcompose.origins import Origins
from netcompose.plan import make_plan
from netcompose.spec import load
from netcompose.spec.resolve import HostFacts, resolve

from .conftest import run_cli

ISSUE = """\
name: demo
hosts:
  h1: {}
  h2: {}
ovn:
  northbound: tcp:10.240.0.1:6641
networks:
  tenant:
    driver: ovn
    subnet: 10.50.1.0/24
  db:
    driver: ovn
    subnet: 10.50.2.0/24
containers:
  web: {host: h1, networks: [tenant]}
  api: {host: h2, networks: [tenant, db]}
  pg:  {host: h2, networks: [db], firewall: {ingress: [{from: api, proto: tcp, ports: [5432]}]}}
policies:
  - {from: tenant, to: db, proto: tcp, ports: [5432]}
"""


def compiled(tmp_path, text: str = ISSUE, host: str | None = "h1"):
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    spec = load(path)
    return compile_resources(resolve(spec.topology, spec.doc, spec.project, HostFacts(host=host)))


def test_logical_state_is_the_same_on_every_host_and_the_slice_is_local(tmp_path):
    on = {host: compiled(tmp_path, host=host) for host in ("h1", "h2")}
    logical = {host: {k: v.to_json() for k, v in found.items() if k.startswith("nb:")} for host, found in on.items()}
    assert logical["h1"] == logical["h2"]
    assert {k.split("/", 1)[0] for k in logical["h1"]} == {
        "nb:ovn_router", "nb:ovn_switch", "nb:ovn_router_port", "nb:ovn_switch_port", "nb:ovn_port_group",
        "nb:ovn_acl"}
    assert {k for k in on["h1"] if k.startswith("netns:")} == {"netns:demo-web"}
    assert {k for k in on["h2"] if k.startswith("netns:")} == {"netns:demo-api", "netns:demo-pg"}
    # Each local endpoint: a veth (TX checksum off), a br-int port naming its logical port, a wait for it.
    port = next(v for k, v in on["h1"].items() if k.startswith("ovsport:"))
    assert port.attrs["bridge"] == "br-int" and port.attrs["external_ids"]["iface-id"] == "nc/demo/web/tenant"
    assert on["h1"]["ovnup:nc/demo/web/tenant"].deps == ("nb:ovn_switch_port/nc/demo/web/tenant", port.key)
    veth = on["h1"][port.deps[1]]
    assert veth.attrs["tx_checksum"] is False
    assert veth.attrs["mtu"] == 1442   # room for Geneve on a 1500-byte underlay, unless mtu: says otherwise
    assert on["h1"]["ovsbr:br-int"].external   # ovn-controller's: attached to, never made


def test_rows_carry_addresses_port_security_marks_and_the_router(tmp_path):
    found = compiled(tmp_path)
    web = found["nb:ovn_switch_port/nc/demo/web/tenant"].attrs
    mac = found[next(k for k in found if k.startswith("link:/"))].attrs["peer_mac"]
    assert web["addresses"] == [f"{mac} 10.50.1.2"] == web["port_security"]
    assert web["parent"] == "nc/demo/tenant"
    assert web["external_ids"] == {"netcompose-container": "web", "netcompose-network": "tenant",
                                   "netcompose-host": "h1", "netcompose-project": "demo",
                                   "netcompose-name": "nc/demo/web/tenant"}
    router_port = found["nb:ovn_router_port/nc/demo/db/router"].attrs
    assert router_port["networks"] == ["10.50.2.1/24"] and router_port["parent"] == "nc/demo"
    peer = found["nb:ovn_switch_port/nc/demo/db/router-peer"].attrs
    assert peer["type"] == "router" and peer["options"] == {"router-port": "nc/demo/db/router"}
    assert all(res.attrs["external_ids"]["netcompose-project"] == "demo" for k, res in found.items()
               if k.startswith("nb:"))
    # MACs are stable: the same file compiles to the same rows.
    assert compiled(tmp_path)["nb:ovn_switch_port/nc/demo/web/tenant"].attrs == web


def test_acls_isolate_networks_unless_a_policy_allows_and_enforce_the_firewall(tmp_path):
    found = compiled(tmp_path)
    acls = {res.attrs["name"].removeprefix("nc/demo/"): res.attrs for k, res in found.items()
            if k.startswith("nb:ovn_acl/")}
    db_group = port_group_name("demo", "net", "db")
    isolation = acls["networks.db.isolation"]
    assert (isolation["direction"], isolation["action"]) == ("to-lport", "drop")
    assert isolation["match"] == f"outport == @{db_group} && ip4 && ip4.src != {{10.50.1.0/24, 10.50.2.0/24}}"
    # From tenant, what the policy allows passes: into pg only as its firewall allows too; the
    # rest is dropped.  Every match is positive (OVN refuses != on protocols).
    open_group = port_group_name("demo", "net-open", "db")
    assert acls["networks.db.isolation (from tenant) [0]"]["match"] == \
        f"outport == @{open_group} && ip4 && ip4.src == 10.50.1.0/24 && tcp.dst == 5432"
    assert acls["networks.db.isolation (from tenant) [0] to pg [0]"]["match"] == (
        'outport == "nc/demo/pg/db" && ip4 && ip4.src == 10.50.1.0/24 && tcp.dst == 5432 && '
        "ip4.src == {10.50.1.3, 10.50.2.2} && tcp.dst == 5432")
    assert acls["networks.db.isolation (from tenant) (the rest)"]["action"] == "drop"
    assert found[f"nb:ovn_port_group/{open_group}"].attrs["ports"] == ["nc/demo/api/db"]
    assert not any("!" in acl["match"].replace("!=", "") for acl in acls.values())
    allow = acls["containers.pg.firewall.ingress[0]"]
    assert allow["action"] == "allow-related" and "ip4.src == {10.50.1.3, 10.50.2.2} && tcp.dst == 5432" in \
        allow["match"]
    # Isolation beats the firewall, whose default drop beats the project's default allow.
    assert isolation["priority"] > allow["priority"] > acls["containers.pg.firewall.ingress (default drop)"][
        "priority"] > acls["default allow (in)"]["priority"]
    group = found[f"nb:ovn_port_group/{db_group}"].attrs
    assert group["ports"] == ["nc/demo/api/db", "nc/demo/pg/db"]


def test_icc_false_and_internal(tmp_path):
    text = ISSUE.replace("    subnet: 10.50.2.0/24\n", "    subnet: 10.50.2.0/24\n    internal: true\n") \
        .replace("policies:\n  - {from: tenant, to: db, proto: tcp, ports: [5432]}\n", "") \
        .replace("    subnet: 10.50.1.0/24\n", "    subnet: 10.50.1.0/24\n    icc: false\n")
    found = compiled(tmp_path, text)
    assert "nb:ovn_router_port/nc/demo/db/router" not in found      # internal: not on the router
    assert "nb:ovn_router_port/nc/demo/tenant/router" in found
    group = port_group_name("demo", "net", "tenant")
    icc = found["nb:ovn_acl/nc/demo/networks.tenant.icc"].attrs
    assert icc["match"] == f"outport == @{group} && ip4.src == {{10.50.1.2, 10.50.1.3}}" and icc["action"] == "drop"


def test_a_file_without_hosts_is_all_local(tmp_path):
    text = "\n".join(line for line in ISSUE.splitlines() if not line.startswith(("hosts:", "  h1", "  h2")))
    found = compiled(tmp_path, text.replace("host: h1, ", "").replace("host: h2, ", ""), host=None)
    assert {k for k in found if k.startswith("netns:")} == {"netns:demo-web", "netns:demo-api", "netns:demo-pg"}
    assert found["nb:ovn_switch_port/nc/demo/web/tenant"].attrs["external_ids"]["netcompose-host"] == ""


def test_plan_groups_logical_rows_under_the_file(tmp_path):
    found = compiled(tmp_path)
    path = tmp_path / "topo.yaml"
    spec = load(path)
    origins = Origins(resolve(spec.topology, spec.doc, spec.project, HostFacts(host="h1")))
    br_int = found["ovsbr:br-int"]
    plan = make_plan(found, {br_int.key: br_int}, "demo")
    paths = {a.key: origins.path(a.resource) for a in plan.actions}
    assert paths["nb:ovn_switch_port/nc/demo/api/db"] == ("containers", "api", "networks", "db")
    assert paths["nb:ovn_switch/nc/demo/db"] == ("networks", "db")
    assert paths["nb:ovn_acl/nc/demo/containers.pg.firewall.ingress[0]"] == ("containers", "pg", "firewall")
    assert paths["ovnup:nc/demo/web/tenant"] == ("containers", "web", "networks", "tenant")
    assert paths["nb:ovn_router/nc/demo"] == ("ovn",)


def test_a_same_named_row_without_our_mark_is_a_conflict(tmp_path):
    from netcompose.errors import ConflictError
    from netcompose.resources import nb_row
    found = compiled(tmp_path)
    theirs = nb_row("ovn_switch", "nc/demo/db", {"external_ids": {}}, "", owner=None)
    with pytest.raises(ConflictError, match="nb:ovn_switch/nc/demo/db already exists and belongs to another tool"):
        make_plan(found, {theirs.key: theirs}, "demo")


BAD = [
    (ISSUE.replace("web: {host: h1, ", "web: {host: h9, "), "15:15", "unknown host 'h9'"),
    (ISSUE.replace("web: {host: h1, ", "web: {"), "15:8", "has no host:"),
    (ISSUE.replace("hosts:\n  h1: {}\n  h2: {}\n", ""), "12:15", "declares no hosts:"),
    (ISSUE.replace("    subnet: 10.50.1.0/24\n", ""), "9:13", "has no subnet:"),
    (ISSUE.replace("  northbound: tcp:10.240.0.1:6641\n", "  northbound: tcp:10.240.0.1:6641\n  gateway: h1\n"),
     "7:12", "ovn.gateway needs ovn.uplink"),
    (ISSUE.replace("  northbound: tcp:10.240.0.1:6641\n", "  northbound: tcp:10.240.0.1:6641\n  gateway: h7\n"),
     "7:12", "unknown host 'h7'"),
    (ISSUE.replace("networks: [tenant]}", "networks: [tenant], ports: ['8080:80']}"), "15:47",
     "are published on the gateway router's uplink, and the file has none"),
    (ISSUE.replace("    subnet: 10.50.1.0/24\n", "    subnet: 10.50.1.0/24\n    subnet6: fd00:50::/64\n"), "11:14",
     "IPv6"),
    (ISSUE + "links:\n  - endpoints: ['web:w0', 'pg:p0']\n", "21:16", "cannot span hosts"),
    (ISSUE.replace("    driver: ovn\n    subnet: 10.50.2.0/24\n", "    subnet: 10.50.2.0/24\n"), "18:5",
     "policy joins OVN network and a non-OVN one"),
    (ISSUE.replace("    driver: ovn\n    subnet: 10.50.1.0/24\n", "    subnet: 10.50.1.0/24\n")
     .replace("policies:\n  - {from: tenant, to: db, proto: tcp, ports: [5432]}\n", ""), "15:29",
     "only driver: ovn networks span hosts"),
    (ISSUE.replace("networks: [tenant]}", "networks: {tenant: {type: ovs-internal}}}"), "15:45",
     "type: ovs-internal needs a network with driver: ovs"),
    (ISSUE.replace("tcp:10.240.0.1:6641", "10.240.0.1:6641"), "6:15", "ovn.northbound: invalid value"),
]


@pytest.mark.parametrize("text, where, words", BAD)
def test_bad_multi_host_files(tmp_path, text, where, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        spec = load(path, environ={})
        resolve(spec.topology, spec.doc, spec.project, HostFacts(host="h1"))
    message = str(info.value)
    assert message.startswith(f"{path}:{where}: "), message
    assert words in message and "\n" not in message and "; " in message


def test_this_host_must_be_named_and_declared(tmp_path, monkeypatch):
    monkeypatch.delenv("NETCOMPOSE_HOST", raising=False)
    monkeypatch.delenv("NETCOMPOSE_OVN_NB", raising=False)
    path = tmp_path / "topo.yaml"
    path.write_text(ISSUE)
    with pytest.raises(SpecError, match=r"topo.yaml:2:1: the file spans hosts \(h1, h2\).*--host NAME"):
        Project.load(path)
    with pytest.raises(SpecError, match="this host is 'h3'.*use one of: h1, h2"):
        Project.load(path, host="h3")
    monkeypatch.setenv("NETCOMPOSE_HOST", "h2")
    assert Project.load(path).host == "h2"
    assert Project.load(path, host="h1").host == "h1"   # --host wins
    path.write_text(ISSUE.replace("  northbound: tcp:10.240.0.1:6641\n", ""))
    with pytest.raises(SpecError, match=r"topo.yaml:8:13: network 'tenant' is driver: ovn but no OVN Northbound DB"):
        Project.load(path)
    monkeypatch.setenv("NETCOMPOSE_OVN_NB", "tcp:10.240.0.1:6641")
    assert Project.load(path).ovn_nb == "tcp:10.240.0.1:6641"
    assert Project.load(path, ovn_nb="unix:/x.sock").ovn_nb == "unix:/x.sock"


def test_cli_errors_are_one_line_and_exit_3(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(ISSUE)
    result = run_cli("-f", str(path), "plan")
    assert result.returncode == 3 and result.stderr.count("\n") == 1 and "--host NAME" in result.stderr
    result = run_cli("-f", str(path), "plan", "--host", "h5")
    assert result.returncode == 3 and "this host is 'h5'" in result.stderr
    path.write_text("containers:\n  a: {}\n")
    result = run_cli("-f", str(path), "plan", "--host", "h1")
    assert result.returncode == 3 and "declares no hosts:" in result.stderr


def test_a_host_without_br_int_is_told_to_start_ovn_controller(tmp_path):
    from netcompose.plan import PlanError
    with pytest.raises(PlanError, match="ovs_bridge 'br-int' does not exist; ovn-controller makes it"):
        make_plan(compiled(tmp_path), {}, "demo")


GATEWAY = ISSUE.replace("  tenant:\n", "  default:\n    driver: ovn\n    subnet: 10.50.9.0/24\n  join:\n    driver: ovn\n"
                        "    subnet: 10.50.8.0/24\n  tenant:\n").replace("  northbound: tcp:10.240.0.1:6641\n", """\
  northbound: tcp:10.240.0.1:6641
  gateway: h1
  uplink: {network: physnet1, address: 172.31.0.10/24, via: 172.31.0.1}
""").replace("networks: [tenant]}", "networks: [tenant], ports: ['8080:80']}")


def test_gateway_router_snat_and_published_ports(tmp_path):
    found = compiled(tmp_path, GATEWAY, host="h2")   # the same rows from any host
    gateway = found["nb:ovn_router/nc/demo/gateway"].attrs
    assert gateway["options"] == {"chassis": "h1"} and gateway["load_balancer"] == ["nc/demo/published/tcp"]
    assert found["nb:ovn_load_balancer/nc/demo/published/tcp"].attrs["vips"] == {"172.31.0.10:8080": "10.50.1.2:80"}
    assert found["nb:ovn_switch_port/nc/demo/-uplink/localnet"].attrs["options"] == {"network_name": "physnet1"}
    snat = found["nb:ovn_nat/nc/demo/gateway/snat/db"].attrs
    assert (snat["type"], snat["external_ip"], snat["logical_ip"]) == ("snat", "172.31.0.10", "10.50.2.0/24")
    routes = {k: (v.attrs["ip_prefix"], v.attrs["nexthop"]) for k, v in found.items() if "ovn_static_route" in k}
    assert routes == {"nb:ovn_static_route/nc/demo/route/-default": ("0.0.0.0/0", "100.64.0.2"),
                      "nb:ovn_static_route/nc/demo/gateway/route/-default": ("0.0.0.0/0", "172.31.0.1"),
                      "nb:ovn_static_route/nc/demo/gateway/route/tenant": ("10.50.1.0/24", "100.64.0.1"),
                      "nb:ovn_static_route/nc/demo/gateway/route/db": ("10.50.2.0/24", "100.64.0.1"),
                      # Networks named like the gateway's own parts do not meet them.
                      "nb:ovn_static_route/nc/demo/gateway/route/default": ("10.50.9.0/24", "100.64.0.1"),
                      "nb:ovn_static_route/nc/demo/gateway/route/join": ("10.50.8.0/24", "100.64.0.1")}
    assert found["nb:ovn_switch/nc/demo/join"].attrs["external_ids"]["netcompose-network"] == "join"
    published = found["nb:ovn_acl/nc/demo/published tcp/8080 [0]"].attrs
    assert published["match"] == ('outport == "nc/demo/web/tenant" && ip4 && ip4.src != {10.50.1.0/24, '
                                  "10.50.2.0/24, 10.50.8.0/24, 10.50.9.0/24} && tcp.dst == 80")
    # Published through OVN, not by the host's nftables.
    assert not any(k.startswith("nft:") for k in compiled(tmp_path, GATEWAY, host="h1"))


@pytest.mark.parametrize("change, where, words", [
    (("  uplink: {network: physnet1, address: 172.31.0.10/24, via: 172.31.0.1}\n", ""), "7:12",
     "ovn.gateway needs ovn.uplink"),
    (("via: 172.31.0.1}", "via: 172.32.0.1}"), "8:61", "is not another address of 172.31.0.0/24"),
    (("address: 172.31.0.10/24, via: 172.31.0.1", "address: 10.50.1.200/24, via: 10.50.1.1"), "18:13",
     "overlaps the uplink"),
    (("ports: ['8080:80']", "ports: ['80']"), "23:47", "needs its published port"),
])
def test_bad_gateway_files(tmp_path, change, where, words):
    path = tmp_path / "bad.yaml"
    path.write_text(GATEWAY.replace(*change))
    with pytest.raises(SpecError) as info:
        spec = load(path, environ={})
        resolve(spec.topology, spec.doc, spec.project, HostFacts(host="h1"))
    assert str(info.value).startswith(f"{path}:{where}: ") and words in str(info.value), str(info.value)


def test_addresses_on_ovn_networks_follow_the_northbound_db(tmp_path, project_name):
    """A host new to the project takes the addresses other hosts wrote, whatever the file's
    order would give it afresh."""
    from ipaddress import IPv4Address
    from types import SimpleNamespace
    path = tmp_path / "topo.yaml"
    path.write_text(ISSUE)
    project = Project.load(path, project_name, host="h1")
    written = {("api", "tenant"): IPv4Address("10.50.1.9")}
    host = SimpleNamespace(northbound=SimpleNamespace(port_addresses=lambda name: written))
    resolved = resolve(project.spec.topology, project.spec.doc, project.name,
                       project._facts(host, observed={}, check_space=False))
    assert {ep.network: str(ep.address) for ep in resolved.containers["api"].endpoints} == {
        "tenant": "10.50.1.9", "db": "10.50.2.2"}
    assert str(resolved.containers["web"].endpoints[0].address) == "10.50.1.2"
