"""IPv6 dual stack (issue 14): resolve and compile over plain data here; the real kernel in
test_ipv6_kernel.py."""
from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from netcompose.compile import compile_resources
from netcompose.spec.resolve import HostFacts, default_ula_pool

from .test_pure import resolved

DUAL = """
networks:
  front: {subnet: 10.10.0.0/24, subnet6: "fd00:10::/64"}
  back: {enable_ipv6: true}
  v6: {subnet6: "fd00:30::/64"}
containers:
  web:
    networks:
      front: {ipv4_address: 10.10.0.10, ipv6_address: "fd00:10::10"}
      v6: {}
    routes: [{to: "fd00:99::/64", via: "fd00:30::1"}]
  db: {networks: [back, v6]}
"""


def test_families_defaults_and_the_ula_pool(tmp_path):
    res = resolved(DUAL, tmp_path)
    front, back, v6 = (res.networks[n] for n in ("front", "back", "v6"))
    assert (str(front.gateway), str(front.gateway6), front.nat6) == ("10.10.0.1", "fd00:10::1", True)
    ula = default_ula_pool("p")
    assert ula.prefixlen == 48 and ula.subnet_of(IPv6Network("fd00::/8"))
    assert back.subnet is not None and back.subnet6 == next(ula.subnets(new_prefix=64))
    assert v6.subnet is None and v6.gateway is None                # only subnet6: IPv6-only
    web, db = res.containers["web"], res.containers["db"]
    assert [(str(e.address), str(e.address6)) for e in web.endpoints] == [("10.10.0.10", "fd00:10::10"),
                                                                         ("None", "fd00:30::2")]
    assert str(db.endpoints[1].address6) == "fd00:30::3"           # in declaration order, after web
    # Per family, the first network that has it (db's first network has both).
    assert (str(web.default_gateway), str(web.default_gateway6)) == ("10.10.0.1", "fd00:10::1")
    assert web.routes == [{"to": "fd00:99::/64", "via": "fd00:30::1", "dev": "eth1", "metric": None}]
    assert ("fd00:30::2", "web") in res.host_groups[web.hosts_group]
    # A global subnet is routed, not masqueraded, unless asked.
    assert not resolved("networks: {g: {subnet6: '2001:db8:1::/64'}}\n", tmp_path).networks["g"].nat6
    assert default_ula_pool("p") == default_ula_pool("p") != default_ula_pool("q")


def test_v6_allocation_is_sticky_and_avoids_host_routes(tmp_path):
    text = "networks: {a: {enable_ipv6: true}}\ncontainers: {x: {networks: [a]}, y: {networks: [a]}}\n"
    first = next(default_ula_pool("p").subnets(new_prefix=64))
    res = resolved(text, tmp_path, HostFacts(space=((first, "a route of the host"),)))
    assert res.networks["a"].subnet6 != first                     # a host route took the first /64
    sticky = HostFacts(subnets6={"a": IPv6Network("fd12:3456::/64")},
                       addresses6={("y", "a"): IPv6Address("fd12:3456::99")})
    res = resolved(text, tmp_path, sticky)
    assert str(res.networks["a"].subnet6) == "fd12:3456::/64"
    assert str(res.containers["y"].endpoints[0].address6) == "fd12:3456::99"
    assert str(res.containers["x"].endpoints[0].address6) == "fd12:3456::2"
    pools = "address_pools: [{base: 'fd5e:1::/48'}]\n"
    assert str(resolved(pools + text, tmp_path).networks["a"].subnet6) == "fd5e:1::/64"
    assert str(resolved(pools + text, tmp_path).networks["a"].subnet) == "10.128.0.0/24"   # v4 default stays


def test_compile_both_families(tmp_path):
    res = resolved(DUAL, tmp_path)
    desired = compile_resources(res)
    web, front = res.containers["web"], res.networks["front"]
    addresses = {(a.attrs["ns"], a.attrs["address"]) for a in desired.values() if a.kind == "address"}
    assert {("", "10.10.0.1"), ("", "fd00:10::1"), (web.netns, "10.10.0.10"), (web.netns, "fd00:10::10")} <= addresses
    default6 = desired[f"route:{web.netns}/::/0"]
    assert default6.attrs["via"] == "fd00:10::1" and default6.attrs["metric"] == 1024   # what the kernel reports
    assert f"addr:{web.netns}/eth0/fd00:10::10/64" in default6.parents
    accept_ra = desired[f"sysctl:{web.netns}/net.ipv6.conf.eth0.accept_ra"]
    veth = next(v for v in desired.values() if v.kind == "veth" and v.attrs["peer_ns"] == web.netns
                and v.attrs["peer_ifname"] == "eth0")
    assert accept_ra.attrs["value"] == "0" and veth.key in accept_ra.deps       # waits for its device
    assert desired[f"sysctl:/net.ipv6.conf.{front.bridge}.accept_ra"].attrs["value"] == "0"
    assert desired["sysctl:/net.ipv6.conf.all.forwarding"].attrs["value"] == "1"
    # The container's own value for the same sysctl wins.
    own = DUAL.replace("    routes:", "    sysctls: {net.ipv6.conf.eth0.accept_ra: 2}\n    routes:")
    assert compile_resources(resolved(own, tmp_path))[f"sysctl:{web.netns}/net.ipv6.conf.eth0.accept_ra"] \
        .attrs["value"] == "2"


def _rules(table, chain: str) -> list[str]:
    return table.attrs["chains"][chain]["rules"]


def _exprs(table, chain: str, origin: str) -> list[str]:
    return [str(rule["expr"]) for rule in table.attrs["rules"][chain] if rule["comment"].startswith(origin + " [")]


PARITY = """
networks:
  front: {subnet: 10.10.0.0/24, subnet6: "fd00:10::/64"}
  back: {subnet: 10.20.0.0/24, subnet6: "fd00:20::/64"}
  legacy: {subnet: 10.30.0.0/24}
containers:
  web:
    networks: [front]
    ports: ["8080:80", "0.0.0.0:8081:81", "[::]:8082:82", "[2001:db8::1]:8083:83", "127.0.0.1:8084:84",
            "[::1]:8085:85"]
    firewall:
      ingress:
        - {from: client, proto: tcp, ports: [80]}
        - {from: 10.20.0.0/24, proto: icmp}
        - {from: back, proto: udp, ports: [53]}
        - {proto: icmp}
  client: {networks: [back]}
  old: {networks: [legacy]}
policies:
  - {from: back, to: front, proto: tcp, ports: [80]}
  - {from: legacy, to: front}
"""


def test_one_rule_both_families(tmp_path):
    desired = compile_resources(resolved(PARITY, tmp_path))
    host = desired["nft:/inet/netcompose-p"]
    # A policy between two dual-stack networks covers both families; one with an IPv4-only network, IPv4.
    assert [("'ip'" in e, "'ip6'" in e) for e in _exprs(host, "forward", "policies[0]")] == [(True, False),
                                                                                             (False, True)]
    assert len(_exprs(host, "forward", "policies[1]")) == 1
    assert len(_exprs(host, "postrouting", "networks.front.nat6")) == 1
    assert not _exprs(host, "postrouting", "networks.legacy.nat6")
    # Ports: no host address and '::' open both families, 0.0.0.0 only IPv4, an IPv6 address only IPv6.
    nat = {i: _exprs(host, "prerouting", f"containers.web.ports[{i}]") for i in range(5)}
    out = {i: _exprs(host, "output", f"containers.web.ports[{i}]") for i in range(5)}
    assert [len(nat[i]) for i in range(5)] == [2, 1, 2, 1, 0]
    assert "'ip6'" in nat[0][1] and "ipv6" in nat[0][1] and "'ip6'" not in nat[1][0]
    assert "'2001:db8::1'" in nat[3][0] and "fd00:10::2" in nat[3][0] and len(out[3]) == 1
    assert len(out[4]) == 1 and "'ip'" in out[4][0]                    # 127.0.0.1: from the host only
    # ::1: no NAT (the kernel drops the reply to ::1 off lo), a userland relay instead.
    assert not _exprs(host, "output", "containers.web.ports[5]") and not _exprs(host, "prerouting",
                                                                              "containers.web.ports[5]")
    relay = desired["proxy:tcp/[::1]:8085"]
    assert (relay.attrs["target"], relay.attrs["target_port"]) == ("fd00:10::2", 85)
    web = desired["nft:p-web/inet/netcompose-p"]
    ingress = {i: _exprs(web, "input", f"containers.web.firewall.ingress[{i}]") for i in range(4)}
    assert [len(ingress[i]) for i in range(4)] == [2, 1, 2, 1]   # container/network peers: both; a v4 CIDR: v4
    assert "ipv6-icmp" not in ingress[1][0] and "'icmp'" in ingress[1][0]
    assert "ipv6-icmp" in ingress[3][0] and "'icmp'" in ingress[3][0]      # no peer: both ICMPs
    assert any("neighbour discovery" in rule for rule in _rules(web, "input"))
    # An IPv4-only project compiles as before: no IPv6 rules, sysctls or neighbour discovery.
    v4 = compile_resources(resolved("networks: {n: {subnet: 10.9.0.0/24}}\ncontainers:\n  c:\n    networks: [n]\n"
                                    "    ports: ['80:80']\n    firewall: {ingress: [{proto: icmp}]}\n", tmp_path))
    assert not any("ip6" in str(v.attrs) or "ipv6" in str(v.attrs) for v in v4.values() if v.kind != "file")


def test_rtnetlink_requests_of_both_families():
    import socket
    import struct
    from netcompose.drivers import rtnl
    v6 = rtnl.new_addr(7, "fd00::10", 64).body
    family, prefixlen, flags, _scope, index = struct.unpack_from("=BBBBI", v6)
    assert (family, prefixlen, flags & rtnl.IFA_F_NODAD, index) == (socket.AF_INET6, 64, rtnl.IFA_F_NODAD, 7)
    assert socket.inet_pton(socket.AF_INET6, "fd00::10") in v6
    assert struct.unpack_from("=B", rtnl.new_addr(7, "10.0.0.1", 24).body)[0] == socket.AF_INET
    route = rtnl.replace_route("::/0", 3, "fd00::1", 1024).body
    assert struct.unpack_from("=BB", route) == (socket.AF_INET6, 0)
    neighbour = rtnl.del_neighbour(3, "fd00::2").body
    assert neighbour[0] == socket.AF_INET6 and socket.inet_pton(socket.AF_INET6, "fd00::2") in neighbour
