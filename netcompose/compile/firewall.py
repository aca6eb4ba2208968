"""Isolation, NAT, published ports and per-container firewalls, as nftables tables.

The host gets one table per project (`inet netcompose-<project>`, plus a `bridge` table
when a network has icc: false); each container with a `firewall:` gets a table of its own
inside its namespace.  Every rule's comment names the file element that caused it, and a
hash of the rule, so a hand-edited or missing rule shows up as drift.
"""
from __future__ import annotations

import hashlib
import json
from ipaddress import IPv4Network, ip_network
from typing import Any, Iterable

from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import RContainer, Resolved, RNetwork
from . import ovs as ovs_compile

FAMILY_HOST, FAMILY_BRIDGE = "inet", "bridge"
LOOPBACK = "127.0.0.0/8"


def table_name(project: str) -> str:
    return f"netcompose-{project}"


def project_of(table: str) -> str:
    return table.removeprefix("netcompose-")


# ---- expression helpers (nftables JSON) ---------------------------------------------------

def _match(left: dict, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _ip(field: str) -> dict:
    return {"payload": {"protocol": "ip", "field": field}}


def _names(names: list[str]) -> Any:
    return names[0] if len(names) == 1 else {"set": sorted(names)}


def _addr(value: str) -> Any:
    net = ip_network(value, strict=False)
    if net.prefixlen == 32:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _addrs(values: list[str]) -> Any:
    items = [_addr(v) for v in sorted(set(values))]
    return items[0] if len(items) == 1 else {"set": items}


def _proto(proto: str, ports: list[int] | None) -> list[dict]:
    if proto == "any":
        return []
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


def _published_target(c: RContainer, res: Resolved) -> tuple[str, RNetwork] | None:
    for ep in c.endpoints:
        net = res.networks[ep.network]
        if not net.internal:
            return str(ep.address), net
    return None


def host_table(res: Resolved) -> Table | None:
    if not res.networks:
        return None
    t = Table(FAMILY_HOST, table_name(res.project))
    ifaces = {n: l3_interface(res, net) for n, net in res.networks.items()}
    everyone = sorted(ifaces.values())
    t.chain("forward", "filter", "forward", 0)
    t.rule("forward", "replies of allowed flows (conntrack)", ESTABLISHED, ACCEPT)
    for i, policy in enumerate(res.topology.policies):
        src, dst = res.networks[policy.from_], res.networks[policy.to]
        t.rule("forward", f"policies[{i}]", _match(_meta("iifname"), ifaces[src.name]),
               _match(_meta("oifname"), ifaces[dst.name]), _match(_ip("saddr"), _addr(str(src.subnet))),
               _match(_ip("daddr"), _addr(str(dst.subnet))), *_proto(policy.proto, policy.ports), ACCEPT)
    for name, net in res.networks.items():
        t.rule("forward", f"networks.{name}", _match(_meta("iifname"), ifaces[name]),
               _match(_meta("oifname"), ifaces[name]), ACCEPT)
        if net.internal:
            t.rule("forward", f"networks.{name}.internal", _match(_meta("iifname"), ifaces[name]), DROP)
            t.rule("forward", f"networks.{name}.internal", _match(_meta("oifname"), ifaces[name]), DROP)
    t.rule("forward", "isolation between networks", _match(_meta("iifname"), _names(everyone)),
           _match(_meta("oifname"), _names(everyone)), DROP)
    t.rule("forward", "published ports", _match({"ct": {"key": "status"}}, "dnat", "in"),
           _match(_meta("oifname"), _names(everyone)), ACCEPT)
    t.rule("forward", "no unsolicited inbound", _match({"ct": {"key": "state"}}, "new", "in"),
           _match(_meta("oifname"), _names(everyone)), DROP)

    t.chain("postrouting", "nat", "postrouting", 100)
    for name, net in res.networks.items():
        if net.nat and not net.internal:
            t.rule("postrouting", f"networks.{name}.nat", _match(_ip("saddr"), _addr(str(net.subnet))),
                   _match(_meta("oifname"), _names(everyone), "!="), {"masquerade": None})

    published = [(c, i, port) for c in res.containers.values()
                 for i, port in enumerate(res.topology.containers[c.name].ports)]
    if published:
        t.chain("prerouting", "nat", "prerouting", -100)
        t.chain("output", "nat", "output", -100)
    local_only = False
    for c, i, port in published:
        target = _published_target(c, res)
        if target is None:
            continue
        address, _net = target
        origin = f"containers.{c.name}.ports[{i}]"
        host_ip = str(port.host_ip)
        dnat = {"dnat": {"family": "ip", "addr": address, "port": port.target}}
        match = [_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
                 *_proto(port.protocol, [port.published or port.target])]
        if ip_network(host_ip).subnet_of(IPv4Network(LOOPBACK)):
            local_only = True
            t.rule("output", origin, _match(_ip("daddr"), host_ip), *match, dnat)
            continue
        only = [_match(_ip("daddr"), host_ip)] if host_ip != "0.0.0.0" else []
        t.rule("prerouting", origin, *only, *match, dnat)
        t.rule("output", origin, *(only or [_match(_ip("daddr"), _addr(LOOPBACK), "!=")]), *match, dnat)
    if local_only:
        # A loopback-published port is DNATed with route_localnet on; guard it from the LAN (moby#45610).
        t.chain("localhost_guard", "filter", "prerouting", -300)
        t.rule("localhost_guard", "loopback-published ports stay local", _match(_meta("iifname"), "lo", "!="),
               _match(_ip("daddr"), _addr(LOOPBACK)), DROP)
        t.rule("postrouting", "loopback-published ports", _match(_ip("saddr"), _addr(LOOPBACK)),
               _match(_meta("oifname"), _names(everyone)), {"masquerade": None})
    return t


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
    """Addresses a firewall peer stands for; None = any."""
    if peer in (None, "any"):
        return None
    if peer in res.networks:
        return [str(res.networks[peer].subnet)]
    if peer in res.containers:
        return [str(ep.address) for ep in res.containers[peer].endpoints] or ["0.0.0.0/32"]
    return [str(ip_network(peer, strict=False))]


def container_table(res: Resolved, c: RContainer) -> Table | None:
    spec = res.topology.containers[c.name].firewall
    if spec is None or (spec.ingress is None and spec.egress is None):
        return None
    t = Table(FAMILY_HOST, table_name(res.project))
    for direction, hook, iface, field, rules in (("ingress", "input", "iifname", "saddr", spec.ingress),
                                                 ("egress", "output", "oifname", "daddr", spec.egress)):
        if rules is None:
            continue
        t.chain(hook, "filter", hook, 0, policy="drop")
        t.rule(hook, f"containers.{c.name}.firewall.{direction} (replies)", ESTABLISHED, ACCEPT)
        t.rule(hook, f"containers.{c.name}.firewall.{direction} (loopback)", _match(_meta(iface), "lo"), ACCEPT)
        for i, rule in enumerate(rules):
            peer = peer_addresses(res, rule.from_ if direction == "ingress" else rule.to)
            exprs = ([_match(_ip(field), _addrs(peer))] if peer else []) + _proto(rule.proto, rule.ports)
            t.rule(hook, f"containers.{c.name}.firewall.{direction}[{i}]", *exprs, ACCEPT)
    return t


def tables(res: Resolved) -> Iterable[Resource]:
    deps = tuple(r.link_key(HOST, l3_interface(res, n)) for n in res.networks.values() if n.driver == "bridge")
    host = host_table(res)
    if host is not None:
        yield host.resource(HOST, deps)
        if needs_forwarding(res):
            yield r.sysctl(HOST, "net.ipv4.ip_forward", "1")
        for net in localhost_networks(res):
            iface = l3_interface(res, net)
            yield r.sysctl(HOST, f"net.ipv4.conf.{iface}.route_localnet", "1")
    bridge = bridge_table(res)
    if bridge is not None:
        yield bridge.resource(HOST, deps)
    for c in res.containers.values():
        table = container_table(res, c)
        if table is not None:
            yield table.resource(c.netns, (r.netns_key(c.netns),))


def needs_forwarding(res: Resolved) -> bool:
    routed = any(n.nat and not n.internal for n in res.networks.values())
    return routed or bool(res.topology.policies) or any(c.ports for c in res.topology.containers.values())


def localhost_networks(res: Resolved) -> list[RNetwork]:
    found: dict[str, RNetwork] = {}
    for c in res.containers.values():
        for port in res.topology.containers[c.name].ports:
            target = _published_target(c, res)
            if target and ip_network(str(port.host_ip)).subnet_of(IPv4Network(LOOPBACK)):
                found[target[1].name] = target[1]
    return list(found.values())
