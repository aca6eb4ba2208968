"""Isolation, NAT, published ports and per-container firewalls, as nftables tables.

The host gets one table per project (`inet netcompose-<project>`, plus a `bridge` table
when a network has icc: false); each container with a `firewall:` (or link loss, on a kernel
without netem) gets a table of its own inside its namespace.  Every rule's comment names the file element that caused it, and a
hash of the rule, so a hand-edited or missing rule shows up as drift.
"""
from __future__ import annotations

import hashlib
import json
from ipaddress import ip_network
from typing import Any, Iterable

from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import (RContainer, Resolved, RNetwork, published_families, published_target,
                            reaches_ipv4_loopback)
from . import conditions
from . import ovs as ovs_compile

FAMILY_HOST, FAMILY_BRIDGE = "inet", "bridge"
LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
# nftables' names of each family: its header payload, its NAT family, its ICMP.
PAYLOAD = {4: "ip", 6: "ip6"}
NFPROTO = {4: "ipv4", 6: "ipv6"}
ICMP = {4: "icmp", 6: "ipv6-icmp"}
# Address resolution on a link (RFC 4861 sends these with hop limit 255, so only on-link ones match).
NEIGHBOUR_DISCOVERY = ["nd-neighbor-solicit", "nd-neighbor-advert"]


def table_name(project: str) -> str:
    return f"netcompose-{project}"


def trace_table_name(project: str) -> str:
    """The table `explain --live` traces a probe with (see netcompose.livetrace)."""
    return f"netcompose-trace-{project}"


def project_of(table: str) -> str:
    return table.removeprefix("netcompose-")


# ---- expression helpers (nftables JSON) ---------------------------------------------------

def _match(left: dict, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _ip(field: str, version: int = 4) -> dict:
    return {"payload": {"protocol": PAYLOAD[version], "field": field}}


def _names(names: list[str]) -> Any:
    return names[0] if len(names) == 1 else {"set": sorted(names)}


def _addr(value: str) -> Any:
    net = ip_network(value, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _addrs(values: list[str]) -> Any:
    items = [_addr(v) for v in sorted(set(values))]
    return items[0] if len(items) == 1 else {"set": items}


def _by_family(values: list[str]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for value in values:
        found.setdefault(ip_network(value, strict=False).version, []).append(value)
    return found


def _proto(proto: str, ports: list[int] | None, versions: Iterable[int] = (4,)) -> list[dict]:
    """Protocol and ports; `icmp` is the ICMP of each of `versions`."""
    if proto == "any":
        return []
    if proto == "icmp":
        return [_match(_meta("l4proto"), _names([ICMP[v] for v in sorted(set(versions))]))]
    exprs = [_match(_meta("l4proto"), proto)]
    if ports:
        exprs.append(_match({"payload": {"protocol": "th", "field": "dport"}},
                            ports[0] if len(ports) == 1 else {"set": sorted(set(ports))}))
    return exprs


ESTABLISHED = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
ACCEPT, DROP = {"accept": None}, {"drop": None}


class Table:
    def __init__(self, family: str, name: str) -> None:
        self.family, self.name = family, name
        self.chains: dict[str, dict[str, Any]] = {}

    def chain(self, name: str, kind: str, hook: str, prio: int, policy: str = "accept") -> None:
        self.chains[name] = {"type": kind, "hook": hook, "prio": prio, "policy": policy, "rules": []}

    def rule(self, chain: str, origin: str, *exprs: dict) -> None:
        digest = hashlib.sha256(json.dumps(exprs, sort_keys=True).encode()).hexdigest()[:8]
        self.chains[chain]["rules"].append({"comment": f"{origin} [{digest}]", "expr": list(exprs)})

    def resource(self, ns: str, deps: tuple[str, ...] = ()) -> Resource:
        summary = {name: {**{k: v for k, v in chain.items() if k != "rules"},
                          "rules": [rule["comment"] for rule in chain["rules"]]}
                   for name, chain in self.chains.items()}
        rules = {name: chain["rules"] for name, chain in self.chains.items()}
        return r.nft_table(ns, self.family, self.name, summary, rules, deps=deps)


# ---- the host table ------------------------------------------------------------------------

def l3_interface(res: Resolved, net: RNetwork) -> str:
    """The host interface that routes for a network: its bridge, or its OVS gateway port."""
    return net.bridge if net.driver == "bridge" else ovs_compile.gateway_port(res, net)


def host_networks(res: Resolved) -> dict[str, RNetwork]:
    """The networks routed by this host: not OVN's, whose router is a logical one."""
    return {name: net for name, net in res.networks.items() if net.driver != "ovn"}


def host_table(res: Resolved) -> Table | None:
    networks = host_networks(res)
    if not networks:
        return None
    t = Table(FAMILY_HOST, table_name(res.project))
    ifaces = {n: l3_interface(res, net) for n, net in networks.items()}
    everyone = sorted(ifaces.values())
    t.chain("forward", "filter", "forward", 0)
    t.rule("forward", "replies of allowed flows (conntrack)", ESTABLISHED, ACCEPT)
    # Internal networks first: nothing is forwarded in or out of them, whatever follows
    # (resolve also rejects a policy naming one).  The host itself is not forwarded to.
    for name, net in networks.items():
        t.rule("forward", f"networks.{name}", _match(_meta("iifname"), ifaces[name]),
               _match(_meta("oifname"), ifaces[name]), ACCEPT)
        if net.internal:
            t.rule("forward", f"networks.{name}.internal", _match(_meta("iifname"), ifaces[name]), DROP)
            t.rule("forward", f"networks.{name}.internal", _match(_meta("oifname"), ifaces[name]), DROP)
    for i, policy in enumerate(res.topology.policies):
        if policy.from_ not in networks:
            continue   # between OVN networks: an ACL (see compile.ovn)
        src, dst = res.networks[policy.from_], res.networks[policy.to]
        for version in (4, 6):  # one rule per family both networks have
            if src.subnet_of(version) is None or dst.subnet_of(version) is None:
                continue
            t.rule("forward", f"policies[{i}]", _match(_meta("iifname"), ifaces[src.name]),
                   _match(_meta("oifname"), ifaces[dst.name]),
                   _match(_ip("saddr", version), _addr(str(src.subnet_of(version)))),
                   _match(_ip("daddr", version), _addr(str(dst.subnet_of(version)))),
                   *_proto(policy.proto, policy.ports, (version,)), ACCEPT)
    t.rule("forward", "isolation between networks", _match(_meta("iifname"), _names(everyone)),
           _match(_meta("oifname"), _names(everyone)), DROP)
    t.rule("forward", "published ports", _match({"ct": {"key": "status"}}, "dnat", "in"),
           _match(_meta("oifname"), _names(everyone)), ACCEPT)
    t.rule("forward", "no unsolicited inbound", _match({"ct": {"key": "state"}}, "new", "in"),
           _match(_meta("oifname"), _names(everyone)), DROP)

    t.chain("postrouting", "nat", "postrouting", 100)
    for name, net in networks.items():
        for version, nat, suffix in ((4, net.nat, "nat"), (6, net.nat6, "nat6")):
            if nat and not net.internal and net.subnet_of(version) is not None:
                t.rule("postrouting", f"networks.{name}.{suffix}",
                       _match(_ip("saddr", version), _addr(str(net.subnet_of(version)))),
                       _match(_meta("oifname"), _names(everyone), "!="), {"masquerade": None})

    published = [(c, i, port) for c in res.local_containers()
                 for i, port in enumerate(res.topology.containers[c.name].ports)]
    if published:
        t.chain("prerouting", "nat", "prerouting", -100)
        t.chain("output", "nat", "output", -100)
    local_only = False
    for c, i, port in published:
        for version in sorted(published_families(port)):
            target = published_target(c, res.networks, version)
            if target is not None and target[1].driver != "ovn":   # those: on the OVN gateway router
                local_only |= _publish(t, f"containers.{c.name}.ports[{i}]", port, c.host_ports[i], version,
                                       target[0])
    if local_only:
        # Ports the host reaches at 127.0.0.1 are DNATed with route_localnet on; guard them from
        # the LAN (moby#45610).
        t.chain("localhost_guard", "filter", "prerouting", -300)
        t.rule("localhost_guard", "loopback-published ports stay local", _match(_meta("iifname"), "lo", "!="),
               _match(_ip("daddr"), _addr(LOOPBACK[4])), DROP)
        t.rule("postrouting", "loopback-published ports", _match(_ip("saddr"), _addr(LOOPBACK[4])),
               _match(_meta("oifname"), _names(everyone)), {"masquerade": None})
    return t


def _publish(t: Table, origin: str, port, host_port: int, version: int, address: str) -> bool:
    """DNAT rules of one published port for one family; True when the host reaches it at
    127.0.0.1 (published there, or on every IPv4 address, as with Docker)."""
    dnat = {"dnat": {"family": PAYLOAD[version], "addr": address, "port": port.target}}
    match = [_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
             *_proto(port.protocol, [host_port])]
    host_ip = port.host_ip if port.host_ip is not None and port.host_ip.version == version else None
    if host_ip is not None and host_ip.is_loopback:
        if version == 6:
            return False   # relayed by a process instead (see loopback_relays)
        t.rule("output", origin, _match(_ip("daddr", version), str(host_ip)), *match, dnat)
        return True
    if host_ip is not None and not host_ip.is_unspecified:
        only = [_match(_ip("daddr", version), str(host_ip))]
        t.rule("prerouting", origin, *only, *match, dnat)
        t.rule("output", origin, *only, *match, dnat)
        return False
    # Every address of the family.  An IPv4 rule with no address match stays as it always
    # was: a NAT statement of the other family does nothing to a packet.
    family = [_match(_meta("nfproto"), NFPROTO[version])] if version == 6 else []
    t.rule("prerouting", origin, *family, *match, dnat)
    if version == 4:  # 127.0.0.1 too
        t.rule("output", origin, *match, dnat)
        return True
    t.rule("output", origin, _match(_ip("daddr", version), _addr(LOOPBACK[version]), "!="), *match, dnat)
    return False


def bridge_table(res: Resolved) -> Table | None:
    closed = [n for n in res.networks.values() if not n.icc and n.driver == "bridge"]
    if not closed:
        return None
    t = Table(FAMILY_BRIDGE, table_name(res.project))
    t.chain("forward", "filter", "forward", 0)
    for net in closed:
        members = sorted(ep.host_ifname for c in res.containers.values() for ep in c.endpoints
                         if ep.network == net.name)
        if members:
            t.rule("forward", f"networks.{net.name}.icc", _match(_meta("iifname"), _names(members)),
                   _match(_meta("oifname"), _names(members)), DROP)
    return t


# ---- per-container firewalls -----------------------------------------------------------

def peer_addresses(res: Resolved, peer: str | None) -> list[str] | None:
    """Addresses a firewall peer stands for, of both families; None = any."""
    if peer in (None, "any"):
        return None
    if peer in res.networks:
        net = res.networks[peer]
        return [str(subnet) for subnet in (net.subnet, net.subnet6) if subnet is not None]
    if peer in res.containers:
        return [str(ip) for ep in res.containers[peer].endpoints for ip, _ in ep.addresses()] or ["0.0.0.0/32"]
    return [str(ip_network(peer, strict=False))]


def container_families(res: Resolved, c: RContainer) -> set[int]:
    """The address families a container has, on its networks and its wires."""
    found = {ip.version for ep in c.endpoints for ip, _ in ep.addresses()}
    for link in res.links:
        if c.name in (link.a[0], link.b[0]):
            found |= {ip_network(pair[0], strict=False).version for pair in (link.addresses, link.addresses6) if pair}
    return found or {4}


LOSS_SCALE = 10000   # numgen draws 0..9999: loss in steps of 0.01%


def container_table(res: Resolved, c: RContainer) -> Table | None:
    spec = res.topology.containers[c.name].firewall
    if spec is not None and c.endpoints and all(res.networks[ep.network].driver == "ovn" for ep in c.endpoints) and \
            not any(c.name in (link.a[0], link.b[0]) for link in res.links):
        spec = None   # enforced by OVN ACLs (see compile.ovn)
    losses = conditions.loss_rules(res, c)
    if (spec is None or (spec.ingress is None and spec.egress is None)) and not losses:
        return None
    t = Table(FAMILY_HOST, table_name(res.project))
    for direction, ifname, loss, origin in losses:
        # Before routing on the way in, after it on the way out: forwarded traffic too.
        hook, iface = ("prerouting", "iifname") if direction == "ingress" else ("postrouting", "oifname")
        if hook not in t.chains:
            t.chain(hook, "filter", hook, -150)
        drawn = {"numgen": {"mode": "random", "mod": LOSS_SCALE, "offset": 0}}
        t.rule(hook, origin, _match(_meta(iface), ifname), _match(drawn, round(loss * LOSS_SCALE / 100), "<"), DROP)
    families = container_families(res, c)
    for direction, hook, iface, field, rules in (("ingress", "input", "iifname", "saddr", spec and spec.ingress),
                                                 ("egress", "output", "oifname", "daddr", spec and spec.egress)):
        if rules is None:
            continue
        t.chain(hook, "filter", hook, 0, policy="drop")
        t.rule(hook, f"containers.{c.name}.firewall.{direction} (replies)", ESTABLISHED, ACCEPT)
        t.rule(hook, f"containers.{c.name}.firewall.{direction} (loopback)", _match(_meta(iface), "lo"), ACCEPT)
        if 6 in families:
            t.rule(hook, f"containers.{c.name}.firewall.{direction} (IPv6 neighbour discovery)",
                   _match({"payload": {"protocol": "icmpv6", "field": "type"}}, {"set": NEIGHBOUR_DISCOVERY}),
                   _match(_ip("hoplimit", 6), 255), ACCEPT)
        for i, rule in enumerate(rules):
            origin = f"containers.{c.name}.firewall.{direction}[{i}]"
            peer = peer_addresses(res, rule.from_ if direction == "ingress" else rule.to)
            if peer is None:  # any peer: both families from one rule
                t.rule(hook, origin, *_proto(rule.proto, rule.ports, families), ACCEPT)
                continue
            for version, addresses in sorted(_by_family(peer).items()):  # a v4 peer matches v4 only
                t.rule(hook, origin, _match(_ip(field, version), _addrs(addresses)),
                       *_proto(rule.proto, rule.ports, (version,)), ACCEPT)
    return t


def tables(res: Resolved) -> Iterable[Resource]:
    deps = tuple(r.link_key(HOST, l3_interface(res, n)) for n in res.networks.values() if n.driver == "bridge")
    host = host_table(res)
    if host is not None:
        yield host.resource(HOST, deps)
        if needs_forwarding(res, 4):
            yield r.sysctl(HOST, "net.ipv4.ip_forward", "1")
        if needs_forwarding(res, 6):
            yield r.sysctl(HOST, "net.ipv6.conf.all.forwarding", "1")
        for net in localhost_networks(res):
            iface = l3_interface(res, net)
            yield r.sysctl(HOST, f"net.ipv4.conf.{iface}.route_localnet", "1")
    bridge = bridge_table(res)
    if bridge is not None:
        yield bridge.resource(HOST, deps)
    for c in res.local_containers():
        table = container_table(res, c)
        if table is not None:
            yield table.resource(c.netns, (r.netns_key(c.netns),))
    yield from loopback_relays(res)


def loopback_relays(res: Resolved) -> Iterable[Resource]:
    """Ports published on [::1] go through a userland relay: NAT cannot reach them, as the
    kernel drops the reply to ::1 un-NATed off `lo` (IPv6 has no route_localnet)."""
    for c in res.local_containers():
        for port, host_port in zip(res.topology.containers[c.name].ports, c.host_ports):
            target = published_target(c, res.networks, 6)
            if port.host_ip is not None and port.host_ip.version == 6 and port.host_ip.is_loopback and target:
                yield r.port_proxy(str(port.host_ip), host_port, port.protocol, target[0],
                                   port.target)


def needs_forwarding(res: Resolved, version: int) -> bool:
    """IPv4 forwards for NAT, policies and published ports; IPv6 also routes subnets out
    unmasqueraded (nat6: false on a global subnet)."""
    networks = host_networks(res)
    nets = [n for n in networks.values() if n.subnet_of(version) is not None]
    routed = any((n.nat if version == 4 else True) and not n.internal for n in nets)
    policies = any(p.from_ in networks and res.networks[p.from_].subnet_of(version) and
                   res.networks[p.to].subnet_of(version) for p in res.topology.policies)
    return routed or policies or any(  # (published ports looked for only when it still matters)
        (target := published_target(c, res.networks, version)) and target[1].driver != "ovn"
        and version in published_families(port) for c in res.local_containers()
        for port in res.topology.containers[c.name].ports)


def localhost_networks(res: Resolved) -> list[RNetwork]:
    """Networks behind a port the host reaches at 127.0.0.1 (published there, or on all
    addresses): DNAT from a loopback source needs route_localnet on their interface."""
    found: dict[str, RNetwork] = {}
    for c in res.local_containers():
        for port in res.topology.containers[c.name].ports:
            target = published_target(c, res.networks, 4)
            if target and target[1].driver != "ovn" and reaches_ipv4_loopback(port):
                found[target[1].name] = target[1]
    return list(found.values())
