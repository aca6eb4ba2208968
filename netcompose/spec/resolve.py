"""Validate a Topology across its parts and fill in every default.

Pure: host facts that influence defaults (routes already on the host, subnets and
addresses netcompose assigned before) come in as arguments.  The result is plain data.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_network
from typing import Any, Iterator

from ..errors import SpecError, excerpt
from .. import names
from . import sysctls
from .loader import Document
from .memo import Record
from .patterns import IFNAME_PATTERN, RESERVED_IFNAMES


@dataclass(frozen=True)
class HostFacts:
    """What the host already has, so defaults avoid collisions and stay sticky."""

    routes: tuple[IPv4Network, ...] = ()
    subnets: dict[str, IPv4Network] = field(default_factory=dict)       # network → subnet we assigned
    addresses: dict[tuple[str, str], IPv4Address] = field(default_factory=dict)  # (container, network) → ip


@dataclass
class RNetwork:
    name: str
    driver: str
    subnet: IPv4Network
    gateway: IPv4Address
    mtu: int
    bridge: str            # kernel (or OVS) bridge name
    nat: bool
    internal: bool
    icc: bool
    vlan: int | None
    ovs: dict[str, Any] | None
    ip_range: IPv4Network | None = None     # where automatic addresses come from


@dataclass
class REndpoint:
    network: str
    ifname: str
    address: IPv4Address
    prefixlen: int
    mac: str | None
    type: str
    trunks: list[int] | None
    host_ifname: str
    aliases: list[str] = field(default_factory=list)    # its other names on this network


@dataclass
class RProcess:
    """A container's declared process, every path and default filled in."""

    argv: list[str]
    env: dict[str, str]
    cwd: str                 # absolute
    user: str                # "" = the user netcompose runs as
    restart: str             # no | on-failure | always
    ready: dict[str, Any] | None


@dataclass
class RContainer:
    name: str
    netns: str               # named namespace, or /proc/PID/ns/net path for pid adoption
    adopted: bool
    endpoints: list[REndpoint]
    default_gateway: IPv4Address | None
    default_ifname: str | None
    routes: list[dict[str, Any]]
    dns: list[str]
    dns_search: list[str]
    hosts: list[tuple[str, str]]     # extra_hosts
    sysctls: dict[str, str]
    hosts_group: str = ""            # its /etc files: Resolved.host_groups[hosts_group] and its DNS
    process: RProcess | None = None
    aliases: list[str] = field(default_factory=list)    # its other names on all its networks


@dataclass
class RLink:
    a: tuple[str, str]      # (container, ifname)
    b: tuple[str | None, str]   # container None: an interface of the host namespace (host_interface)
    mtu: int
    addresses: tuple[str, str] | None   # "ip/prefixlen" for each end
    master: str | None = None           # the bridge a host end joins
    vxlan: dict[str, Any] | None = None  # {vni, remote, port}: the one end is a VXLAN device (b is unused)
    macs: tuple[str | None, str | None] = (None, None)   # of the container ends a and b


@dataclass
class Resolved:
    project: str
    topology: Record         # the validated file (see memo)
    networks: dict[str, RNetwork]
    containers: dict[str, RContainer]
    links: list[RLink]
    # One hosts file per set of networks (and per container with extra_hosts): members
    # share it, so adding a container rewrites one file, not one per peer.
    host_groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


# Matched with fullmatch: `$` would accept a trailing newline.
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class _Resolver:
    def __init__(self, topo: Record, doc: Document, project: str, facts: HostFacts):
        self.topo, self.doc, self.project, self.facts = topo, doc, project, facts
        self.cursors: dict[str, Iterator[IPv4Address]] = {}

    def fail(self, path: tuple, problem: str, fix: str = "", key: bool = False) -> None:
        raise SpecError(self.doc.where(path, key=key), problem, fix)

    # -- networks --------------------------------------------------------------------
    def networks(self) -> dict[str, RNetwork]:
        explicit = {n: net.subnet for n, net in self.topo.networks.items() if net.subnet}
        names_ = list(explicit)
        for i, a in enumerate(names_):
            for b in names_[:i]:
                if explicit[a].overlaps(explicit[b]):
                    self.fail(("networks", a, "subnet"), f"subnet {explicit[a]} of network '{a}' overlaps "
                              f"{explicit[b]} of network '{b}'", "give each network its own subnet")
        taken = list(explicit.values())
        out: dict[str, RNetwork] = {}
        for name, net in self.topo.networks.items():
            subnet = net.subnet or self.allocate_subnet(name, taken)
            taken.append(subnet)
            if subnet.prefixlen > 30:
                self.fail(("networks", name, "subnet"), f"subnet {subnet} has no usable address",
                          "use a prefix of /30 or shorter")
            gateway = net.gateway or next(iter(subnet.hosts()))
            self.check_host_address(("networks", name, "gateway"), gateway, subnet, "gateway")
            if net.ip_range is not None and not net.ip_range.subnet_of(subnet):
                self.fail(("networks", name, "ip_range"), f"ip_range {net.ip_range} is not inside subnet {subnet}",
                          f"pick a range inside {subnet}")
            for host, address in net.aux_addresses.items():
                self.check_host_address(("networks", name, "aux_addresses", host), address, subnet, "aux address")
            bridge = (net.ovs.bridge if net.ovs and net.ovs.bridge
                      else names.host_ifname(self.project, "net", name))
            out[name] = RNetwork(name, net.driver, subnet, gateway, net.mtu, bridge, net.nat, net.internal,
                                 net.icc, net.vlan, dict(vars(net.ovs)) if net.ovs else None, net.ip_range)
        return out

    def allocate_subnet(self, network: str, taken: list[IPv4Network]) -> IPv4Network:
        sticky = self.facts.subnets.get(network)
        if sticky and not any(sticky.overlaps(t) for t in taken):
            return sticky
        busy = taken + [r for r in self.facts.routes if r.prefixlen > 0]
        for pool in self.topo.address_pools:
            if pool.size < pool.base.prefixlen:
                continue
            for candidate in pool.base.subnets(new_prefix=pool.size):
                if not any(candidate.overlaps(b) for b in busy):
                    return candidate
        self.fail(("networks", network), f"no free /{self.topo.address_pools[0].size} left in address_pools "
                  f"for network '{network}'", "set subnet: explicitly or add an address_pools entry")
        raise AssertionError

    def check_host_address(self, path: tuple, address: IPv4Address, subnet: IPv4Network, what: str) -> None:
        if address not in subnet:
            self.fail(path, f"{what} {address} is outside subnet {subnet}", f"pick an address inside {subnet}")
        if subnet.prefixlen < 31 and address in (subnet.network_address, subnet.broadcast_address):
            kind = "network" if address == subnet.network_address else "broadcast"
            self.fail(path, f"{what} {address} is the {kind} address of {subnet}", "pick a host address")

    # -- containers ------------------------------------------------------------------
    def containers(self, networks: dict[str, RNetwork]) -> dict[str, RContainer]:
        used: dict[IPv4Address, tuple] = {net.gateway: ("networks", n, "gateway") for n, net in networks.items()}
        explicit: dict[str, set[IPv4Address]] = {n: {net.gateway} for n, net in networks.items()}
        for i, link in enumerate(self.topo.links):
            for j, address in enumerate(link.addresses or ()):
                apath = ("links", i, "addresses", j)
                if address.ip in used:
                    self.fail(apath, f"address {address.ip} is already used by {'.'.join(map(str, used[address.ip]))}",
                              "give each link end its own address")
                used[address.ip] = apath
                for nname, net in networks.items():
                    if address.ip in net.subnet:
                        explicit[nname].add(address.ip)
                    end = link.endpoints[j].partition(":")[0]
                    member = end in self.topo.containers and nname in self.topo.containers[end].networks
                    if member and address.network.overlaps(net.subnet):
                        self.fail(apath, f"link address {address} overlaps subnet {net.subnet} of network '{nname}' "
                                  f"that container '{end}' is on", "give the link its own subnet")
        for n, spec in self.topo.networks.items():
            explicit[n].update(spec.aux_addresses.values())
        for cname, c in self.topo.containers.items():
            for nname, ep in c.networks.items():
                path = ("containers", cname, "networks", nname)
                if nname not in networks:
                    known = ", ".join(networks) or "none"
                    listed = self.doc.data["containers"][cname].get("networks")
                    short = isinstance(listed, list) and nname in listed
                    if short:  # point at the list item
                        path = path[:-1] + (listed.index(nname),)
                    self.fail(path, f"container '{cname}' uses undefined network '{nname}' (defined: {known})",
                              "declare it under networks: or fix the name", key=not short)
                if ep.ipv4_address is None:
                    continue
                net = networks[nname]
                apath = path + ("ipv4_address",)
                if ep.ipv4_address == net.gateway:
                    self.fail(apath, f"{ep.ipv4_address} is the gateway of network '{nname}'",
                              "pick another address")
                self.check_host_address(apath, ep.ipv4_address, net.subnet, "ipv4_address")
                if ep.ipv4_address in used:
                    other = ".".join(str(p) for p in used[ep.ipv4_address])
                    self.fail(apath, f"address {ep.ipv4_address} is already used by {other}",
                              "give each endpoint its own address")
                used[ep.ipv4_address] = apath
                explicit[nname].add(ep.ipv4_address)

        link_ifnames = self.link_ifnames()
        macs: dict[tuple[str, str], tuple] = {}   # (network, mac) → path
        out: dict[str, RContainer] = {}
        for cname, c in self.topo.containers.items():
            endpoints: list[REndpoint] = []
            seen: dict[str, tuple] = {}
            for index, (nname, ep) in enumerate(c.networks.items()):
                net = networks[nname]
                path = ("containers", cname, "networks", nname)
                ifname = ep.ifname or f"eth{index}"
                if ifname in seen:
                    self.fail(path + ("ifname",), f"interface name '{ifname}' is used twice in container '{cname}'",
                              "give each endpoint its own ifname")
                seen[ifname] = path
                if ep.mac_address:
                    mac_path = path + ("mac_address",)
                    other = macs.setdefault((nname, ep.mac_address.lower()), mac_path)
                    if other is not mac_path:
                        self.fail(mac_path, f"MAC address {ep.mac_address} is also used by "
                                  f"{'.'.join(map(str, other))} on network '{nname}'", "give each endpoint its own MAC")
                address = ep.ipv4_address or self.allocate_address(cname, net, explicit[nname], path)
                if ep.type == "ovs-internal" and net.driver != "ovs":
                    self.fail(path + ("type",), "type: ovs-internal needs a network with driver: ovs",
                              "use type: veth or driver: ovs")
                if ep.trunks is not None and net.driver != "ovs":
                    self.fail(path + ("trunks",), "trunks need a network with driver: ovs", "remove trunks")
                endpoints.append(REndpoint(nname, ifname, address, net.subnet.prefixlen,
                                           ep.mac_address.lower() if ep.mac_address else None, ep.type,
                                           ep.trunks, names.host_ifname(self.project, "ep", f"{cname}/{nname}"),
                                           list(ep.aliases)))
            for ifname, path in link_ifnames.get(cname, []):
                if ifname in seen:
                    self.fail(path, f"interface name '{ifname}' is used twice in container '{cname}'",
                              "pick another name for the link end")
                seen[ifname] = path
            out[cname] = self.container(cname, c, endpoints, networks, link_ifnames.get(cname, []))
        return out

    def allocate_address(self, cname: str, net: RNetwork, taken: set[IPv4Address], path: tuple) -> IPv4Address:
        sticky = self.facts.addresses.get((cname, net.name))
        if sticky and sticky in net.subnet and sticky not in taken and sticky != net.gateway:
            taken.add(sticky)
            return sticky
        # One cursor per network: addresses behind it are all taken, so allocation stays O(N).
        cursor = self.cursors.setdefault(net.name, iter((net.ip_range or net.subnet).hosts()))
        for host in cursor:
            if host not in taken:
                taken.add(host)
                return host
        self.fail(path, f"subnet {net.subnet} of network '{net.name}' has no free address", "use a larger subnet")
        raise AssertionError

    def container(self, cname: str, c, endpoints: list[REndpoint], networks: dict[str, RNetwork],
                  link_ends: list[tuple[str, tuple]]) -> RContainer:
        base = ("containers", cname)
        by_network = {ep.network: ep for ep in endpoints}
        default_net = c.default_route or next(iter(c.networks), None)
        if c.default_route and c.default_route not in by_network:
            self.fail(base + ("default_route",), f"default_route '{c.default_route}' is not one of the networks "
                      f"of container '{cname}'", f"use one of: {', '.join(by_network) or 'none'}")
        gateway = ifname = None
        if default_net and not networks[default_net].internal:
            gateway, ifname = networks[default_net].gateway, by_network[default_net].ifname
        # Connected subnets: (ifname, own address, subnet) of every endpoint and addressed link end.
        connected = [(ep.ifname, ep.address, networks[ep.network].subnet) for ep in endpoints]
        connected += [(ifname, address.ip, address.network) for ifname, address in self.link_addresses(cname)]
        routes = self.routes(cname, c, connected, gateway)
        ifnames = {ep.ifname for ep in endpoints} | {ifname for ifname, _ in link_ends} | {"lo", "all", "default"}
        for key, value in c.sysctls.items():
            path = base + ("sysctls", key)
            why = sysctls.problem(key)
            if why:
                self.fail(path, f"sysctl {excerpt(key)} {why}",
                          "set only per-namespace net.* sysctls, such as net.ipv4.ip_forward", key=True)
            device = sysctls.device_of(key)
            if device is not None and device not in ifnames:
                self.fail(path, f"sysctl {key} names interface '{device}', which container '{cname}' does not have",
                          f"use one of: {', '.join(sorted(ifnames))}", key=True)
            if not value.strip() or "\n" in value:
                self.fail(path, f"sysctl {key} has an empty or multi-line value", 'write a value, e.g. "1"')
        for host in c.extra_hosts:
            if not _HOSTNAME.fullmatch(host):
                self.fail(base + ("extra_hosts", host), f"{excerpt(host)} is not a valid host name", "use letters, "
                          "digits, dots and hyphens", key=True)
        for i, domain in enumerate(c.dns_search):
            if not _HOSTNAME.fullmatch(domain):
                self.fail(base + ("dns_search", i), f"{excerpt(domain)} is not a valid domain", "fix the domain")
        adopted = c.netns is not None or c.pid is not None
        netns = c.netns or (f"/proc/{c.pid}/ns/net" if c.pid else names.netns_name(self.project, cname))
        host_gateway = gateway or (networks[endpoints[0].network].gateway if endpoints else None)
        extra_hosts = []
        for host, ip in c.extra_hosts.items():
            if ip == "host-gateway" and host_gateway is None:
                self.fail(base + ("extra_hosts", host), "host-gateway needs a network", "attach the container "
                          "to a network or write an address")
            extra_hosts.append((str(host_gateway if ip == "host-gateway" else ip), host))
        return RContainer(cname, netns, adopted, endpoints, gateway, ifname, routes,
                          [str(d) for d in c.dns], list(c.dns_search), extra_hosts, dict(c.sysctls),
                          process=self.process(cname, c), aliases=list(c.aliases))

    def process(self, cname: str, c) -> RProcess | None:
        base = ("containers", cname)
        if c.command is None:
            if c.ready is not None:
                self.fail(base + ("ready",), f"container '{cname}' has ready: but no command: to probe",
                          "add a command: or remove ready:", key=True)
            return None
        try:
            argv = command_argv(c.command)
        except ValueError as exc:
            self.fail(base + ("command",), f"command: {exc}", "close the quote or escape it")
        if not argv or not argv[0]:
            self.fail(base + ("command",), f"container '{cname}' has an empty command",
                      'write the program and its arguments, e.g. command: ["sleep", "infinity"]')
        cwd = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.doc.file)), c.working_dir or "."))
        ready = {k: v for k, v in vars(c.ready).items() if v is not None} if c.ready else None
        return RProcess(argv, dict(c.environment), cwd, c.user or "", c.restart, ready)

    def routes(self, cname: str, c, connected: list[tuple[str, IPv4Address, IPv4Network]],
               gateway: IPv4Address | None) -> list[dict[str, Any]]:
        """Each route needs a gateway on a connected subnet, or a destination inside one."""
        base = ("containers", cname)
        by_destination: dict[IPv4Network, tuple] = {}
        if gateway is not None:
            by_destination[IPv4Network("0.0.0.0/0")] = base + ("default_route",)
        routes = []
        for i, route in enumerate(c.routes):
            path = base + ("routes", i)
            if route.to in by_destination:
                other = by_destination[route.to]
                what = ("the default route (default_route, or the first network)" if other[-1] == "default_route"
                        else ".".join(map(str, other)))
                self.fail(path + ("to",), f"a route to {route.to} is already set by {what}",
                          "keep one route per destination" + (" (or set default_route)" if gateway else ""))
            by_destination[route.to] = path
            if route.via is not None:
                dev = next((ifname for ifname, _, subnet in connected if route.via in subnet), None)
                if dev is None:
                    self.fail(path + ("via",), f"gateway {route.via} is not on any network of container '{cname}'",
                              "use an address inside one of its subnets")
                subnet = next(s for _, _, s in connected if route.via in s)
                if route.via in {own for _, own, _ in connected}:
                    self.fail(path + ("via",), f"gateway {route.via} is an address of container '{cname}' itself",
                              "use the address of a router on that network")
                if subnet.prefixlen < 31 and route.via in (subnet.network_address, subnet.broadcast_address):
                    self.fail(path + ("via",), f"gateway {route.via} is the network or broadcast address of {subnet}",
                              "use the address of a router on that network")
            else:
                inside = [(ifname, subnet) for ifname, _, subnet in connected if route.to.subnet_of(subnet)]
                if not inside:
                    self.fail(path + ("to",), f"route to {route.to} has no via and {route.to} is not on a network "
                              f"of container '{cname}'", "add via: GATEWAY (an address on one of its networks)")
                dev, subnet = inside[0]
                if route.to == subnet:
                    self.fail(path + ("to",), f"{route.to} is already connected on {dev}",
                              "remove the route, or add via: to send it through a router")
            routes.append({"to": str(route.to), "via": str(route.via) if route.via else None, "dev": dev,
                           "metric": route.metric})
        return routes

    def link_addresses(self, cname: str) -> list[tuple[str, IPv4Interface]]:
        """(ifname, address) of the container's addressed link ends."""
        found = []
        for link in self.topo.links:
            if link.addresses:
                for end, address in zip(link.endpoints, link.addresses):
                    container, _, ifname = end.partition(":")
                    if container == cname:
                        found.append((ifname, address))
        return found

    def fill_hosts(self, containers: dict[str, RContainer]) -> dict[str, list[tuple[str, str]]]:
        """Like Docker's embedded DNS, containers find the members of their networks by name."""
        members: dict[str, list[tuple[str, str]]] = {}
        for c in containers.values():
            for ep in c.endpoints:
                known = members.setdefault(ep.network, [])
                known += [(str(ep.address), name) for name in dict.fromkeys([c.name, *c.aliases, *ep.aliases])]
        groups: dict[str, list[tuple[str, str]]] = {}
        for c in containers.values():
            nets = sorted({ep.network for ep in c.endpoints})
            # Network and container names start with a letter or digit: these never collide.
            group = ",".join(nets) or "_none"
            if c.hosts:
                group = f"{c.name}@{group}"
            if c.dns or c.dns_search:  # the group's folder holds its resolv.conf too
                group += "~" + hashlib.sha256(repr((c.dns, c.dns_search)).encode()).hexdigest()[:12]
            if len(group) > 200:
                group = "_" + hashlib.sha256(group.encode()).hexdigest()[:32]
            if group not in groups:
                entries = {entry for n in nets for entry in members[n]}
                groups[group] = sorted(entries, key=lambda e: (e[1], e[0])) + c.hosts
            c.hosts_group = group
        return groups

    # -- links -----------------------------------------------------------------------
    def link_ifnames(self) -> dict[str, list[tuple[str, tuple]]]:
        found: dict[str, list[tuple[str, tuple]]] = {}
        hosts: set[str | None] = {None}
        for i, link in enumerate(self.topo.links):
            for j, end in enumerate(link.endpoints):
                path = ("links", i, "endpoints", j)
                container, sep, ifname = end.partition(":")
                if not sep or not ifname:
                    self.fail(path, f"link end '{end}' is not CONTAINER:IFNAME", 'write it like "web:p2p0"')
                if container not in self.topo.containers:
                    self.fail(path, f"link end '{end}' names unknown container '{container}'",
                              f"use one of: {', '.join(self.topo.containers) or 'none'}")
                if not re.fullmatch(IFNAME_PATTERN, ifname) or len(ifname.encode()) > 15 or ifname in RESERVED_IFNAMES:
                    self.fail(path, f"{excerpt(ifname)} is not a valid interface name",
                              "use at most 15 letters, digits, '_', '-' or '.' (not lo, all or default)")
                found.setdefault(container, []).append((ifname, path))
            if link.addresses and (link.addresses[0].network != link.addresses[1].network
                                   or link.addresses[0].ip == link.addresses[1].ip):
                self.fail(("links", i, "addresses"), "link addresses must be two different addresses in one subnet",
                          'write e.g. ["10.99.0.1/30", "10.99.0.2/30"]')
            if len(link.endpoints) == 2 and link.endpoints[0] == link.endpoints[1]:
                self.fail(("links", i), "a link must join two different interfaces", "fix one end")
            if link.host_interface and link.host_interface in hosts:
                self.fail(("links", i, "host_interface"), f"host interface '{link.host_interface}' is used by two "
                          "links", "give each host link its own name")
            hosts.add(link.host_interface)
        return found

    def links(self, networks: dict[str, RNetwork]) -> list[RLink]:
        out = []
        for i, link in enumerate(self.topo.links):
            ends = [tuple(e.split(":", 1)) for e in link.endpoints]
            a, b = ends if len(ends) == 2 else (ends[0], (None, link.host_interface))
            addresses = tuple(str(x) for x in link.addresses) if link.addresses else None
            master = None
            if link.network is not None:
                net = networks.get(link.network)
                if net is None or net.driver != "bridge":
                    self.fail(("links", i, "network"), f"'{link.network}' is not a bridge network of the topology",
                              f"use one of: {', '.join(n for n, x in networks.items() if x.driver == 'bridge') or 'none'}")
                master = net.bridge
            vxlan = {"vni": link.vxlan.vni, "remote": str(link.vxlan.remote), "port": link.vxlan.port} \
                if link.vxlan else None
            macs = tuple(m.lower() if m else None for m in (link.mac_addresses or [])) + (None, None)
            out.append(RLink(a, b, link.mtu, addresses, master, vxlan, macs[:2]))
        return out

    # -- cross checks --------------------------------------------------------------------
    def policies_and_expectations(self, containers: dict[str, RContainer]) -> None:
        for i, policy in enumerate(self.topo.policies):
            for side, value in (("from", policy.from_), ("to", policy.to)):
                if value not in self.topo.networks:
                    self.fail(("policies", i, side), f"policy names unknown network '{value}'",
                              f"use one of: {', '.join(self.topo.networks) or 'none'}")
        for i, exp in enumerate(self.topo.expect):
            target = exp.to.partition(":")[0]
            for side, value in (("from", exp.from_), ("to", target)):
                if value not in containers:
                    self.fail(("expect", i, side), f"expect names unknown container '{value}'",
                              f"use one of: {', '.join(containers) or 'none'}")
            port = exp.to.partition(":")[2]
            if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                self.fail(("expect", i, "to"), f"'{port}' is not a port number", "use 1-65535")
        published: dict[tuple[int, str], dict[IPv4Address, tuple]] = {}   # (port, proto) → host_ip → path
        for cname, c in self.topo.containers.items():
            for i, port in enumerate(c.ports):
                path = ("containers", cname, "ports", i)
                on = published.setdefault((port.published or port.target, port.protocol), {})
                # 0.0.0.0 takes the port on every address, so it overlaps any specific one.
                clash = on.get(port.host_ip) or (next(iter(on.values())) if on and (
                    port.host_ip == IPv4Address(0) or IPv4Address(0) in on) else None)
                if clash:
                    self.fail(path, f"host port {port.host_ip}:{port.published or port.target}/{port.protocol} is "
                              f"already published by {'.'.join(map(str, clash))}", "publish each host port once")
                on[port.host_ip] = path
            if c.firewall:
                for direction, peer_key, wrong_key in (("ingress", "from", "to"), ("egress", "to", "from")):
                    for j, rule in enumerate(getattr(c.firewall, direction) or []):
                        rule_path = ("containers", cname, "firewall", direction, j)
                        if (rule.to if wrong_key == "to" else rule.from_) is not None:
                            self.fail(rule_path + (wrong_key,), f"an {direction} rule matches by '{peer_key}:' "
                                      f"(the {'sender' if direction == 'ingress' else 'receiver'}), not "
                                      f"'{wrong_key}:'", f"write {peer_key}: instead", key=True)
                        peer = rule.from_ if direction == "ingress" else rule.to
                        self.check_peer(rule_path + (peer_key,), peer)
                        if rule.ports and rule.proto not in ("tcp", "udp"):
                            self.fail(("containers", cname, "firewall", direction, j, "ports"),
                                      "ports need proto: tcp or udp", "set proto")
        for i, policy in enumerate(self.topo.policies):
            if policy.ports and policy.proto not in ("tcp", "udp"):
                self.fail(("policies", i, "ports"), "ports need proto: tcp or udp", "set proto")

    def check_peer(self, path: tuple, peer: str | None) -> None:
        if peer in (None, "any") or peer in self.topo.networks or peer in self.topo.containers:
            return
        try:
            ip_network(peer, strict=False)
        except ValueError:
            self.fail(path, f"'{peer}' is not a network, container, CIDR or 'any'", "fix the reference")

    def ovs_bridges(self, networks: dict[str, RNetwork]) -> None:
        """Networks sharing an OVS bridge must agree on it and be told apart by VLAN tag."""
        seen: dict[str, RNetwork] = {}
        for net in networks.values():
            if net.driver != "ovs":
                continue
            if not net.icc:
                self.fail(("networks", net.name, "icc"), "icc: false is enforced on Linux bridge networks only",
                          "use driver: bridge, or a per-container firewall:")
            other = seen.setdefault(net.bridge, net)
            if other is net:
                continue
            path = ("networks", net.name, "ovs")
            if (other.ovs or {}).get("datapath_type") != (net.ovs or {}).get("datapath_type") or \
                    (other.ovs or {}).get("fail_mode") != (net.ovs or {}).get("fail_mode"):
                self.fail(path, f"networks '{other.name}' and '{net.name}' share OVS bridge '{net.bridge}' "
                          "with different datapath_type or fail_mode", "set the same values on both")
            if other.vlan == net.vlan:
                self.fail(("networks", net.name), f"networks '{other.name}' and '{net.name}' share OVS bridge "
                          f"'{net.bridge}' with the same VLAN tag ({net.vlan or 'untagged'}), so they would not be "
                          "isolated", "give each network its own vlan:")

    def run(self) -> Resolved:
        networks = self.networks()
        self.ovs_bridges(networks)
        containers = self.containers(networks)
        self.policies_and_expectations(containers)
        adopted = {c.netns: name for name, c in containers.items() if c.adopted}
        for name, c in containers.items():
            if not c.adopted and c.netns in adopted:
                self.fail(("containers", adopted[c.netns], "netns"), f"namespace '{c.netns}' is also the "
                          f"namespace netcompose creates for container '{name}'", "adopt another namespace")
        return Resolved(self.project, self.topo, networks, containers, self.links(networks), self.fill_hosts(containers))


def command_argv(command: str | list[str]) -> list[str]:
    """A list is the argv as is; a string is split as a POSIX shell would split it (quotes,
    escapes), but no shell ever runs it: no variables, globs or operators."""
    return list(command) if isinstance(command, list) else shlex.split(command)


def declared_processes(topo: Record, doc: Document, project: str) -> dict[str, RProcess]:
    """Each container's process, without resolving (or observing) the networks."""
    resolver = _Resolver(topo, doc, project, HostFacts())
    return {name: p for name, c in topo.containers.items() if (p := resolver.process(name, c)) is not None}


def resolve(topo: Record, doc: Document, project: str, facts: HostFacts = HostFacts()) -> Resolved:
    return _Resolver(topo, doc, project, facts).run()
