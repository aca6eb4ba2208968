"""OVN networks (`driver: ovn`): logical state in the Northbound DB, shared by every host,
and each host's local slice on its `br-int`.

Logical state: a logical switch per network; one logical router per project joining the
networks that are not internal (each gateway a router port); a logical switch port per
endpoint with "MAC IP" addresses and port security; and the CNM contract as ACLs on a
port group of every endpoint of the project (see `acls`).  Every host compiles the same
rows from the same file, so any host may write them.

Local slice: a container of this host gets a veth whose host end is a port of `br-int`
with `external_ids:iface-id` naming its logical port, which ovn-controller then binds.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import JOIN_SUBNET, RContainer, REndpoint, Resolved, RNetwork, published_target
from .firewall import peer_addresses

INTEGRATION_BRIDGE = "br-int"
# ACL priorities (see `acls`): isolation beats a container's firewall, whose default drop
# beats the project's default allow (stateful, so replies of allowed flows pass).
PUBLISHED_ALLOW, ICC_DROP, ISOLATION_DROP, POLICY_ALLOW, POLICY_DROP = 3100, 3000, 2900, 2800, 2700
FIREWALL_ALLOW, FIREWALL_DROP, DEFAULT_ALLOW = 2000, 1900, 1000


# ---- names (Northbound names are free text; port groups must be identifiers) -----------------

def switch_name(project: str, network: str) -> str:
    return f"nc/{project}/{network}"


def router_name(project: str) -> str:
    return f"nc/{project}"


def router_port_name(project: str, network: str) -> str:
    return f"nc/{project}/{network}/router"


def port_name(project: str, container: str, network: str) -> str:
    """The logical switch port of an endpoint (its `iface-id`)."""
    return f"nc/{project}/{container}/{network}"


def port_group_name(project: str, *member: str) -> str:
    """`@name` in ACL matches: letters, digits and '_' only, hence hashed."""
    suffix = f"_{names.digest(project, *member)}" if member else ""
    return f"nc_{names.digest(project)}{suffix}"


def mac_of(*parts: str) -> str:
    """A stable, locally administered unicast MAC address (first byte 0a)."""
    tail = hashlib.sha256("\0".join(parts).encode()).digest()[:5]
    return ":".join(["0a"] + [f"{b:02x}" for b in tail])


def endpoint_mac(project: str, c: RContainer, ep: REndpoint) -> str:
    return ep.mac or mac_of(project, "ep", c.name, ep.network)


def _ids(**extra: str) -> dict[str, str]:
    return {r.mark_key(k): v for k, v in extra.items()}


# ---- the logical state (the same on every host) -----------------------------------------------

def logical(res: Resolved) -> Iterable[Resource]:
    project = res.project
    nets = [n for n in res.networks.values() if n.driver == "ovn"]
    if not nets:
        return
    routed = [n for n in nets if not n.internal]
    router = router_name(project)
    if routed:
        yield r.nb_row("ovn_router", router, {"options": {}, "load_balancer": [], "external_ids": {}}, project)
        yield from gateway(res, routed)
    for net in nets:
        switch = switch_name(project, net.name)
        yield r.nb_row("ovn_switch", switch, {"external_ids": _ids(network=net.name)}, project)
        if not net.internal:
            yield from _router_link(project, router, switch, router_port_name(project, net.name),
                                    f"{net.gateway}/{net.subnet.prefixlen}", network=net.name)
    members: dict[str, list[str]] = {net.name: [] for net in nets}   # network → its endpoints' ports
    addresses: dict[str, list[str]] = {net.name: [] for net in nets}   # ... and their addresses
    for c in res.containers.values():
        for ep in c.endpoints:
            net = res.networks[ep.network]
            if net.driver != "ovn":
                continue
            lsp = port_name(project, c.name, ep.network)
            members[ep.network].append(lsp)
            addresses[ep.network].append(str(ep.address))
            address = f"{endpoint_mac(project, c, ep)} {ep.address}"
            yield r.nb_row("ovn_switch_port", lsp,
                           {"type": "", "addresses": [address], "port_security": [address], "options": {},
                            "external_ids": _ids(container=c.name, network=ep.network, host=c.host or "")},
                           project, parent=("ovn_switch", switch_name(project, ep.network)))
    yield from acls(res, nets, members, addresses)


def _router_link(project: str, router: str, switch: str, port: str, address: str, **marks: str) -> Iterable[Resource]:
    """A port of `router` on `switch` with `address` (prefix included), and the switch's
    port facing it."""
    yield r.nb_row("ovn_router_port", port, {"mac": mac_of(project, "router", port), "networks": [address],
                                             "external_ids": _ids(**marks)}, project, parent=("ovn_router", router))
    yield r.nb_row("ovn_switch_port", f"{port}-peer", {"type": "router", "addresses": ["router"], "port_security": [],
                                                        "options": {"router-port": port}, "external_ids": _ids(**marks)},
                   project, parent=("ovn_switch", switch))


def _route(project: str, router: str, name: str, prefix: str, nexthop: str) -> Resource:
    return r.nb_row("ovn_static_route", f"{router}/route/{name}", {"ip_prefix": prefix, "nexthop": nexthop,
                                                                     "external_ids": {}},
                    project, parent=("ovn_router", router))


def gateway(res: Resolved, routed: list[RNetwork]) -> Iterable[Resource]:
    """Egress through a gateway router bound to the `ovn.gateway` host: joined to the
    project's router by a /30, on the uplink by a localnet port (the gateway host maps
    the uplink's physical network to a bridge with ovn-bridge-mappings), its default route
    to the uplink's router, and SNAT of each network with `nat` to its uplink address."""
    ovn, project = res.topology.ovn, res.project
    if ovn is None or ovn.gateway is None:
        return
    uplink, host = ovn.uplink, res.topology.hosts[ovn.gateway]
    router, gateway_router = router_name(project), f"nc/{project}/gateway"
    inside, outside = (f"{ip}/{JOIN_SUBNET.prefixlen}" for ip in list(JOIN_SUBNET.hosts())[:2])
    balancers = []
    for proto, vips in sorted(published_ports(res).items()):
        balancer = r.nb_row("ovn_load_balancer", f"nc/{project}/published/{proto}",
                            {"protocol": proto, "vips": {f"{uplink.address.ip}:{port}": f"{address}:{target}"
                                                         for port, (_, _, address, target) in vips.items()},
                             "external_ids": {}}, project)
        balancers.append(balancer)
        yield balancer
    yield r.nb_row("ovn_router", gateway_router, {"options": {"chassis": (host and host.chassis) or ovn.gateway},
                                                  "load_balancer": [b.attrs["name"] for b in balancers],
                                                  "external_ids": {}}, project, deps=tuple(b.key for b in balancers))
    # '-' never starts a network's name: these never meet a network's switch.
    join, external = f"nc/{project}/-join", f"nc/{project}/-uplink"
    for switch in (join, external):
        yield r.nb_row("ovn_switch", switch, {"external_ids": {}}, project)
    yield from _router_link(project, router, join, f"{join}/router", inside)
    yield from _router_link(project, gateway_router, join, f"{join}/gateway", outside)
    yield from _router_link(project, gateway_router, external, f"{external}/gateway", str(uplink.address))
    yield r.nb_row("ovn_switch_port", f"{external}/localnet", {
        "type": "localnet", "addresses": ["unknown"], "port_security": [],
        "options": {"network_name": uplink.network}, "external_ids": {}}, project, parent=("ovn_switch", external))
    yield _route(project, router, "-default", "0.0.0.0/0", outside.split("/")[0])
    yield _route(project, gateway_router, "-default", "0.0.0.0/0", str(uplink.via))
    for net in routed:
        yield _route(project, gateway_router, net.name, str(net.subnet), inside.split("/")[0])
        if net.nat:
            yield r.nb_row("ovn_nat", f"{gateway_router}/snat/{net.name}",
                           {"type": "snat", "external_ip": str(uplink.address.ip), "logical_ip": str(net.subnet),
                            "external_ids": _ids(network=net.name)}, project, parent=("ovn_router", gateway_router))


def published_ports(res: Resolved) -> dict[str, dict[int, tuple[str, str, str, int]]]:
    """Ports published on the gateway router's uplink: protocol → published port →
    (container, its network, its address there, target port)."""
    found: dict[str, dict[int, tuple[str, str, str, int]]] = {}
    for c in res.containers.values():
        target = published_target(c, res.networks, 4)
        if target is None or target[1].driver != "ovn":
            continue
        for port, published in zip(res.topology.containers[c.name].ports, c.host_ports):
            found.setdefault(port.protocol, {})[published] = (c.name, target[1].name, target[0], port.target)
    return found


def _group(project: str, name: str, ports: list[str], **ids: str) -> Resource:
    return r.nb_row("ovn_port_group", name, {"ports": sorted(ports), "external_ids": _ids(**ids)}, project,
                    deps=tuple(r.nb_key("ovn_switch_port", p) for p in ports))


def _set(values: Iterable) -> str:
    shown = sorted({str(v) for v in values}, key=lambda v: (len(v), v))
    return shown[0] if len(shown) == 1 else "{" + ", ".join(shown) + "}"


def _flow(proto: str, ports: list[int] | None) -> str:
    """A protocol (and ports) as an ACL match term, "" for any."""
    if proto == "any":
        return ""
    if proto == "icmp":
        return " && icmp4"
    return f" && {proto}.dst == {_set(ports)}" if ports else f" && {proto}"


class _Acls:
    """ACL rows, each held by the port group whose ports it guards (a port group's ACLs
    apply to the switches of its ports, so a match names only groups with ports there)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.rows: list[Resource] = []

    def add(self, group: str, origin: str, marks: dict[str, str], direction: str, priority: int, match: str,
            action: str) -> None:
        self.rows.append(r.nb_row("ovn_acl", f"nc/{self.project}/{origin}",
                                  {"direction": direction, "priority": priority, "match": match, "action": action,
                                   "external_ids": marks}, self.project, parent=("ovn_port_group", group)))


def acls(res: Resolved, nets: list[RNetwork], members: dict[str, list[str]],
         addresses: dict[str, list[str]]) -> Iterable[Resource]:
    """The CNM contract as ACLs, every match positive (OVN refuses `!=` on protocol fields
    and adds a field's prerequisite outside a `!`), so layered by priority:

    - icc: false drops traffic between two members of the network;
    - isolation drops what comes into a network's ports from any subnet but its own and
      those of policies into it (the router would connect every network otherwise);
    - from a policy's source network, what the policy allows passes (and, into a container
      with an ingress firewall, what its firewall allows as well); the rest is dropped;
    - internal networks are not on the router at all (see `logical`);
    - a container's `firewall:` allows, then drops the rest;
    - a port published on the gateway router (DNAT) is let in from outside the project's
      subnets (as the container's firewall allows);
    - everything else is allowed statefully, so replies of allowed flows pass."""
    project = res.project
    every = port_group_name(project)
    yield _group(project, every, [p for ports in members.values() for p in ports])
    out = _Acls(project)
    guarded = {c.name: res.topology.containers[c.name].firewall for c in res.containers.values()}
    guarded = {name: spec for name, spec in guarded.items() if spec is not None and spec.ingress is not None}
    for net in nets:
        group, marks = port_group_name(project, "net", net.name), _ids(network=net.name)
        yield _group(project, group, members[net.name], network=net.name)
        if not net.icc and addresses[net.name]:
            # By the members' addresses (port security vouches for them): on the receiving
            # host, `inport == @group` would only see the group's ports bound there.
            out.add(group, f"networks.{net.name}.icc", marks, "to-lport", ICC_DROP,
                    f"outport == @{group} && ip4.src == {_set(addresses[net.name])}", "drop")
        flows: dict[str, list[str]] = {}   # source network → the match terms its policies into net allow
        for policy in res.topology.policies:
            if policy.to == net.name and policy.from_ != net.name:
                flows.setdefault(policy.from_, []).append(_flow(policy.proto, policy.ports))
        sources = [str(net.subnet)] + [str(res.networks[name].subnet) for name in flows]
        out.add(group, f"networks.{net.name}.isolation", marks, "to-lport", ISOLATION_DROP,
                f"outport == @{group} && ip4 && ip4.src != {_set(sources)}", "drop")
        if not flows:
            continue
        joined = set(members[net.name])
        firewalled = {name: port for name in sorted(guarded)   # members with an ingress firewall: their ports
                      if (port := port_name(project, name, net.name)) in joined}
        open_ports = [p for p in members[net.name] if p not in firewalled.values()]
        open_group = port_group_name(project, "net-open", net.name)
        yield _group(project, open_group, open_ports, network=net.name)
        for source, terms in flows.items():
            subnet = res.networks[source].subnet
            origin = f"networks.{net.name}.isolation (from {source})"
            for i, term in enumerate(terms):
                out.add(open_group, f"{origin} [{i}]", marks, "to-lport", POLICY_ALLOW,
                        f"outport == @{open_group} && ip4 && ip4.src == {subnet}{term}", "allow-related")
                for name, port in firewalled.items():
                    for j, rule in enumerate(guarded[name].ingress):
                        peer = _peer(res, rule.from_, "ip4.src")
                        if peer is not None:
                            out.add(group, f"{origin} [{i}] to {name} [{j}]", marks, "to-lport", POLICY_ALLOW,
                                    f'outport == "{port}" && ip4 && ip4.src == {subnet}{term}{peer}'
                                    f"{_flow(rule.proto, rule.ports)}", "allow-related")
            out.add(group, f"{origin} (the rest)", marks, "to-lport", POLICY_DROP,
                    f"outport == @{group} && ip4 && ip4.src == {subnet}", "drop")
    subnets = [str(net.subnet) for net in nets]
    for proto, ports in sorted(published_ports(res).items()):
        for published, (container, network, _, target) in sorted(ports.items()):
            port = port_name(project, container, network)
            group, origin = port_group_name(project, "net", network), f"published {proto}/{published}"
            match = f'outport == "{port}" && ip4 && ip4.src != {_set(subnets)} && {proto}.dst == {target}'
            rules = guarded[container].ingress if container in guarded else [None]
            for j, rule in enumerate(rules):   # into a container with a firewall, only as it allows
                peer = _peer(res, rule.from_, "ip4.src") if rule else ""
                if peer is not None:
                    out.add(group, f"{origin} [{j}]", _ids(container=container, network=network), "to-lport",
                            PUBLISHED_ALLOW, match + peer + (_flow(rule.proto, rule.ports) if rule else ""),
                            "allow-related")
    for c in res.containers.values():
        spec = res.topology.containers[c.name].firewall
        ports = [port_name(project, c.name, ep.network) for ep in c.endpoints
                 if res.networks[ep.network].driver == "ovn"]
        if spec is None or not ports or (spec.ingress is None and spec.egress is None):
            continue
        group, marks = port_group_name(project, "container", c.name), _ids(container=c.name)
        yield _group(project, group, ports, container=c.name)
        for direction, acl_direction, port, field, rules in (
                ("ingress", "to-lport", "outport", "ip4.src", spec.ingress),
                ("egress", "from-lport", "inport", "ip4.dst", spec.egress)):
            if rules is None:
                continue
            origin = f"containers.{c.name}.firewall.{direction}"
            for i, rule in enumerate(rules):
                peer = _peer(res, rule.from_ if direction == "ingress" else rule.to, field)
                if peer is not None:
                    out.add(group, f"{origin}[{i}]", marks, acl_direction, FIREWALL_ALLOW,
                            f"{port} == @{group} && ip4{peer}{_flow(rule.proto, rule.ports)}", "allow-related")
            out.add(group, f"{origin} (default drop)", marks, acl_direction, FIREWALL_DROP,
                    f"{port} == @{group} && ip4", "drop")
    out.add(every, "default allow (in)", {}, "to-lport", DEFAULT_ALLOW, f"outport == @{every} && ip4", "allow-related")
    out.add(every, "default allow (out)", {}, "from-lport", DEFAULT_ALLOW, f"inport == @{every} && ip4",
            "allow-related")
    yield from out.rows


def _peer(res: Resolved, peer: str | None, field: str) -> str | None:
    """A firewall peer as a match term ("" for any); None for a peer without IPv4 (OVN
    networks carry IPv4 only), which nothing matches."""
    addresses = peer_addresses(res, peer)
    if addresses is None:
        return ""
    v4 = [a for a in addresses if ":" not in a]
    return f" && {field} == {_set(v4)}" if v4 else None


# ---- the local slice ------------------------------------------------------------------------

def network(res: Resolved, net: RNetwork) -> Iterable[Resource]:
    """Nothing per network on a host: the logical state is shared (see `logical`), and
    br-int is ovn-controller's (see `integration_bridge`)."""
    return ()


def integration_bridge(res: Resolved) -> Iterable[Resource]:
    """br-int, which ovn-controller makes and netcompose only attaches ports to, when a
    container of this host has an OVN endpoint."""
    ovn = {name for name, net in res.networks.items() if net.driver == "ovn"}
    if ovn and any(ep.network in ovn for c in res.local_containers() for ep in c.endpoints):
        bridge = r.ovs_bridge(INTEGRATION_BRIDGE, "", "", None, external=True)
        bridge.meta["missing"] = ("ovn-controller makes it: start ovn-controller on this host, with "
                                  "external_ids:ovn-remote (the Southbound DB) and system-id set in its OVS")
        yield bridge


def endpoint(project: str, c: RContainer, ep: REndpoint, net: RNetwork) -> tuple[str, list[Resource]]:
    ident = f"{c.name}/{ep.network}"
    lsp = port_name(project, c.name, ep.network)
    veth = r.veth(HOST, ep.host_ifname, c.netns, ep.ifname, mtu=net.mtu, alias=names.alias(project, "ep", ident),
                  peer_alias=names.alias(project, "ep-peer", ident), peer_mac=endpoint_mac(project, c, ep),
                  tx_checksum=False)
    port = r.ovs_port(ep.host_ifname, INTEGRATION_BRIDGE, type="", tag=None, trunks=None,
                      external_ids={**_ids(project=project, network=net.name, endpoint=ident), "iface-id": lsp})
    up = r.ovn_port_up(lsp, c.host, (r.nb_key("ovn_switch_port", lsp), port.key))
    return veth.key, [veth, port, up]
