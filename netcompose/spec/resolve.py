"""Validate a Topology across its parts and fill in every default.

Pure: host facts that influence defaults (routes already on the host, subnets and
addresses netcompose assigned before) come in as arguments.  The result is plain data.

Both address families go through the same code: a network has an IPv4 subnet, an IPv6
subnet or both, and every check and allocation takes the family as a parameter.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_network
from operator import itemgetter
from typing import Any, Iterator, NamedTuple, Union

from ..errors import SpecError, excerpt
from .. import conditions, names
from . import sysctls
from .loader import Document
from .memo import Record
from .patterns import DEFAULT_IPV4_POOL, DEFAULT_POOL_SIZE, IFNAME_PATTERN, RESERVED_IFNAMES

IPNetwork = Union[IPv4Network, IPv6Network]
IPAddress = Union[IPv4Address, IPv6Address]
IPInterface = Union[IPv4Interface, IPv6Interface]
ULA = IPv6Network("fc00::/7")
IPV6_MIN_MTU = 1280
# An OVN network's default: a 1500-byte underlay less Geneve's 58 bytes (as OpenStack's).
OVN_DEFAULT_MTU = 1442
# The link between a project's logical router and its gateway router (see compile.ovn).
JOIN_SUBNET = IPv4Network("100.64.0.0/30")
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}
_DEFAULT_DESTINATIONS = {version: ip_network(dst) for version, dst in DEFAULT_ROUTE.items()}  # parsed once
# The field names of each family in the file, for messages.
SUBNET_KEY = {4: "subnet", 6: "subnet6"}
GATEWAY_KEY = {4: "gateway", 6: "gateway6"}
ADDRESS_KEY = {4: "ipv4_address", 6: "ipv6_address"}
ENABLE_HINT = {4: "give the network a subnet (or enable_ipv4: true)",
               6: "give the network a subnet6 (or enable_ipv6: true)"}


def default_ula_pool(project: str) -> IPv6Network:
    """A ULA /48 whose 40-bit global ID comes from the project name (RFC 4193 asks for a
    random one; a hash is as unlikely to collide and the same on every run)."""
    global_id = hashlib.sha256(f"netcompose-ula:{project}".encode()).digest()[:5]
    return IPv6Network((b"\xfd" + global_id + bytes(10), 48))


class HostFacts(NamedTuple):
    """What the host already has, so subnets avoid collisions and addresses stay sticky.
    Read only: its maps are never changed (the empty defaults are shared)."""

    # Address space in use that is not this project's (both families): the host's routes and
    # addresses, and other projects' subnets, each with who holds it ("a route of the host (dev eth0)").
    space: tuple[tuple[IPNetwork, str], ...] = ()
    subnets: dict[str, IPv4Network] = {}       # network → subnet we assigned
    addresses: dict[tuple[str, str], IPv4Address] = {}  # (container, network) → ip
    subnets6: dict[str, IPv6Network] = {}      # the same, for IPv6
    addresses6: dict[tuple[str, str], IPv6Address] = {}
    ports: dict[tuple[str, str], int] = {}   # (container, port_key) → host port
    # (port, proto) published by other projects (never taken), and listening on the host
    # (not chosen anew; a port kept from the last apply stays, as Compose's would stay bound).
    other_ports: frozenset[tuple[int, str]] = frozenset()
    listening_ports: frozenset[tuple[int, str]] = frozenset()
    netem: bool = False      # the kernel has sch_netem (probed once per run, only when a file asks for it)
    host: str | None = None  # which of the file's hosts: this machine is (--host); None: a file without hosts:

    def sticky_subnets(self, version: int) -> dict[str, IPNetwork]:
        return self.subnets if version == 4 else self.subnets6

    def sticky_addresses(self, version: int) -> dict[tuple[str, str], IPAddress]:
        return self.addresses if version == 4 else self.addresses6


# Never a network's subnet: "this network", loopback, link-local, multicast, reserved.
RESERVED = tuple((ip_network(net), what) for net, what in (
    ("0.0.0.0/8", "'this network'"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"), ("::/127", "unspecified and loopback"),
    ("fe80::/10", "link-local"), ("ff00::/8", "multicast")))


@dataclass
class RNetwork:
    """A network with every default filled in: driver, subnets, gateways, MTU, bridge name."""

    name: str
    driver: str
    subnet: IPv4Network | None       # None: an IPv6-only network
    gateway: IPv4Address | None
    mtu: int
    bridge: str            # kernel (or OVS) bridge name
    nat: bool
    internal: bool
    icc: bool
    vlan: int | None
    ovs: dict[str, Any] | None
    ip_range: IPv4Network | None = None     # where automatic addresses come from
    subnet6: IPv6Network | None = None   # None: an IPv4-only network
    gateway6: IPv6Address | None = None
    nat6: bool = False

    def subnet_of(self, version: int) -> IPNetwork | None:
        return self.subnet if version == 4 else self.subnet6

    def gateway_of(self, version: int) -> IPAddress | None:
        return self.gateway if version == 4 else self.gateway6

    def gateways(self) -> list[tuple[IPAddress, int]]:
        """(address, prefix length) of each family's gateway."""
        return [(gw, subnet.prefixlen) for gw, subnet in ((self.gateway, self.subnet), (self.gateway6, self.subnet6))
                if gw is not None]


@dataclass
class REndpoint:
    """A container's place on one network: interface, addresses, MAC, aliases, conditions."""

    network: str
    ifname: str
    address: IPv4Address | None      # None on an IPv6-only network
    prefixlen: int | None
    mac: str | None
    type: str
    trunks: list[int] | None
    host_ifname: str
    aliases: list[str] = field(default_factory=list)    # its other names on this network
    address6: IPv6Address | None = None
    prefixlen6: int | None = None
    egress: dict[str, Any] | None = None     # link conditions as numbers (see netcompose.conditions)
    ingress: dict[str, Any] | None = None
    down: bool = False                       # state: down

    def address_of(self, version: int) -> IPAddress | None:
        return self.address if version == 4 else self.address6

    def addresses(self) -> list[tuple[IPAddress, int]]:
        """(address, prefix length) of each family the endpoint has."""
        return [(a, plen) for a, plen in ((self.address, self.prefixlen), (self.address6, self.prefixlen6))
                if a is not None]


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
    """A container with its namespace, endpoints, routes, sysctls and processes worked out."""

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
    default_gateway6: IPv6Address | None = None
    default_ifname6: str | None = None
    execs: list[list[str]] = field(default_factory=list)   # exec: argvs, run once after it is up
    host_ports: list[int] = field(default_factory=list)   # of each `ports:` entry: published, or ephemeral
    host: str | None = None          # the machine that runs it (hosts:); None: the local one


# Host ports for target-only `ports:` entries: above Linux's default ip_local_port_range
# (32768-60999), where listening services and the host's own outgoing connections rarely are.
EPHEMERAL_PORTS = (61000, 65535)


def port_key(port) -> str:
    """A `ports:` entry by what it publishes (not its place in the list): '[HOST_IP:]TARGET/PROTO'."""
    return f"{port.host_ip}:{port.target}/{port.protocol}" if port.host_ip is not None else \
        f"{port.target}/{port.protocol}"


def shown_port(port, host_port: int) -> str:
    """As `docker ps` shows it: 0.0.0.0:61234->80/tcp (':::' too when both families)."""
    if port.host_ip is None:
        return f"0.0.0.0:{host_port}->{port.target}/{port.protocol}, :::{host_port}->{port.target}/{port.protocol}"
    address = f"[{port.host_ip}]" if port.host_ip.version == 6 else str(port.host_ip)
    return f"{address}:{host_port}->{port.target}/{port.protocol}"


@dataclass
class RLink:
    """A point-to-point wire between two containers (or a container and the host)."""

    a: tuple[str, str]      # (container, ifname)
    b: tuple[str | None, str]   # container None: an interface of the host namespace (host_interface)
    mtu: int
    addresses: tuple[str, str] | None   # "ip/prefixlen" for each end
    master: str | None = None           # the bridge a host end joins
    master_external: bool = False       # ... a host bridge netcompose does not own (host_bridge)
    vxlan: dict[str, Any] | None = None  # {vni, remote, port}: the one end is a VXLAN device (b is unused)
    macvlan: dict[str, Any] | None = None   # {parent, mode}: the one end is a macvlan device (b is unused)
    macs: tuple[str | None, str | None] = (None, None)   # of the container ends a and b
    addresses6: tuple[str, str] | None = None   # a second, IPv6 pair beside IPv4 `addresses`
    conditions: dict[str, Any] | None = None   # both directions (see netcompose.conditions)
    down: bool = False                         # state: down


@dataclass
class Resolved:
    """The whole file resolved for one project: what compile turns into resources."""

    project: str
    topology: Record         # the validated file (see memo)
    networks: dict[str, RNetwork]
    containers: dict[str, RContainer]
    links: list[RLink]
    # One hosts file per set of networks (and per container with extra_hosts): members
    # share it, so adding a container rewrites one file, not one per peer.
    host_groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    host_names: dict[tuple[str, str], str] = field(default_factory=dict)   # see kernel_names
    netem: bool = False      # link conditions use netem (the kernel has it)
    host: str | None = None  # the machine this run applies the slice of (see HostFacts.host)
    _local: list[RContainer] | None = field(default=None, init=False, repr=False, compare=False)

    def is_local(self, container: str) -> bool:
        """Whether this machine runs `container` (makes its sandbox): every container of a
        file without hosts:, else those whose host: is this one."""
        return self.containers[container].host in (None, self.host)

    def local_containers(self) -> list[RContainer]:
        if self._local is None:   # most parts of compile go through them: listed once
            self._local = [c for c in self.containers.values() if c.host in (None, self.host)]
        return self._local


# Matched with fullmatch: `$` would accept a trailing newline.
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def kernel_names(project: str, topo: Record) -> dict[tuple[str, str], str]:
    """The hashed host-side names the file needs, by (role, ident): bridges ("net"), OVS
    gateway ports ("gw") and endpoints ("ep"), distinct even when two hashes collide."""
    wanted = [("net", name) for name, net in topo.networks.items() if not (net.ovs and net.ovs.bridge)]
    wanted += [("gw", name) for name, net in topo.networks.items() if net.driver == "ovs"]
    wanted += [("ep", f"{c}/{n}") for c, spec in topo.containers.items() for n in spec.networks]
    return names.host_ifnames(project, wanted)


class _Resolver:
    def __init__(self, topo: Record, doc: Document, project: str, facts: HostFacts):
        self.topo, self.doc, self.project, self.facts = topo, doc, project, facts
        self.host_names = kernel_names(project, topo)
        self.cursors: dict[tuple[str, int], Iterator[IPAddress]] = {}

    def fail(self, path: tuple, problem: str, fix: str = "", key: bool = False) -> None:
        raise SpecError(self.doc.where(path, key=key), problem, fix)

    # -- networks --------------------------------------------------------------------
    def families(self, name: str) -> tuple[bool, bool]:
        """Whether network `name` has IPv4 and IPv6, with the keys that contradict either checked."""
        net = self.topo.networks[name]
        base = ("networks", name)
        v4 = net.enable_ipv4 if net.enable_ipv4 is not None else not (net.subnet6 and not net.subnet)
        v6 = net.enable_ipv6 if net.enable_ipv6 is not None else net.subnet6 is not None
        for on, version, keys in ((v4, 4, ("subnet", "gateway")), (v6, 6, ("subnet6", "gateway6", "nat6"))):
            flag = "enable_ipv4" if version == 4 else "enable_ipv6"
            for key in keys:
                if not on and getattr(net, key) is not None:
                    if getattr(net, flag) is False:
                        self.fail(base + (key,), f"{key} contradicts {flag}: false on network '{name}'",
                                  f"remove {key} or {flag}: false")
                    self.fail(base + (key,), f"{key} needs IPv{version} on network '{name}'",
                              f"set {SUBNET_KEY[version]}, or {flag}: true")
        if not (v4 or v6):
            self.fail(base, f"network '{name}' has neither IPv4 nor IPv6", "enable at least one family")
        return v4, v6

    def networks(self) -> dict[str, RNetwork]:
        explicit = [(n, version, subnet) for n, net in self.topo.networks.items()
                    for version, subnet in ((4, net.subnet), (6, net.subnet6)) if subnet]
        for i, (a, version, subnet) in enumerate(explicit):
            for b, other_version, other in explicit[:i]:
                if version == other_version and subnet.overlaps(other):
                    self.fail(("networks", a, SUBNET_KEY[version]), f"subnet {subnet} of network '{a}' overlaps "
                              f"{other} of network '{b}'", "give each network its own subnet")
        for name, version, subnet in explicit:
            if self.topo.networks[name].driver == "ovn":
                continue  # a logical network: nothing of it is on the host's routing table
            if (clash := self.clash(subnet)) is not None:
                self.fail(("networks", name, SUBNET_KEY[version]), f"subnet {subnet} of network '{name}' overlaps "
                          f"{clash}", "pick a subnet nothing on this host uses (or bring down the project "
                          "that holds it)" if "project '" in clash else "pick a subnet nothing on this host uses")
        taken = [subnet for _, _, subnet in explicit]
        # Subnets given before stay, whatever was inserted or reordered since: claimed first.
        self.claimed_subnets: dict[tuple[str, int], IPNetwork] = {}
        for name, net in self.topo.networks.items():
            for version, enabled, given in zip((4, 6), self.families(name), (net.subnet, net.subnet6)):
                sticky = self.facts.sticky_subnets(version).get(name)
                if enabled and given is None and sticky is not None and self.clash(sticky) is None \
                        and not any(sticky.overlaps(t) for t in taken if t.version == version):
                    self.claimed_subnets[(name, version)] = sticky
                    taken.append(sticky)
        out: dict[str, RNetwork] = {}
        for name, net in self.topo.networks.items():
            v4, v6 = self.families(name)
            subnet = gateway = subnet6 = gateway6 = None
            if v4:
                subnet, gateway = self.subnet_and_gateway(name, net.subnet, net.gateway, 4, taken)
            if v6:
                subnet6, gateway6 = self.subnet_and_gateway(name, net.subnet6, net.gateway6, 6, taken)
                if net.mtu < IPV6_MIN_MTU:
                    self.fail(("networks", name, "mtu"), f"mtu {net.mtu} is below IPv6's minimum of {IPV6_MIN_MTU}",
                              f"use mtu: {IPV6_MIN_MTU} or more on a network with IPv6")
            if subnet is None and (net.ip_range is not None or net.aux_addresses):
                self.fail(("networks", name, "ip_range" if net.ip_range is not None else "aux_addresses"),
                          f"ip_range and aux_addresses need IPv4 on network '{name}'",
                          "remove them, or give the network a subnet")
            if net.ip_range is not None and not net.ip_range.subnet_of(subnet):
                self.fail(("networks", name, "ip_range"), f"ip_range {net.ip_range} is not inside subnet {subnet}",
                          f"pick a range inside {subnet}")
            for host, address in net.aux_addresses.items():
                self.check_host_address(("networks", name, "aux_addresses", host), address, subnet, "aux address")
            bridge = (net.ovs.bridge if net.ovs and net.ovs.bridge
                      else self.host_names[("net", name)])
            nat6 = bool(net.nat6 if net.nat6 is not None else subnet6 and subnet6.subnet_of(ULA))
            mtu = net.mtu
            if net.driver == "ovn" and ("networks", name, "mtu") not in self.doc.values:
                mtu = OVN_DEFAULT_MTU
            out[name] = RNetwork(name, net.driver, subnet, gateway, mtu, bridge, net.nat, net.internal,
                                 net.icc, net.vlan, dict(vars(net.ovs)) if net.ovs else None, ip_range=net.ip_range,
                                 subnet6=subnet6, gateway6=gateway6, nat6=nat6)
        return out

    def subnet_and_gateway(self, name: str, subnet: IPNetwork | None, gateway: IPAddress | None, version: int,
                           taken: list[IPNetwork]) -> tuple[IPNetwork, IPAddress]:
        subnet = subnet or self.allocate_subnet(name, taken, version)
        taken.append(subnet)
        longest = 30 if version == 4 else 127
        if subnet.prefixlen > longest:
            self.fail(("networks", name, SUBNET_KEY[version]), f"subnet {subnet} has no usable address",
                      f"use a prefix of /{longest} or shorter")
        gateway = gateway or next(iter(subnet.hosts()))
        self.check_host_address(("networks", name, GATEWAY_KEY[version]), gateway, subnet, GATEWAY_KEY[version])
        return subnet, gateway

    def pools(self, version: int) -> list[tuple[IPNetwork, int]]:
        """(base, prefix length of each subnet) of address_pools of one family; a family
        without an entry gets its default."""
        mine = [(pool.base, pool.size or DEFAULT_POOL_SIZE[version])
                for pool in self.topo.address_pools if pool.base.version == version]
        return mine or [(ip_network(DEFAULT_IPV4_POOL) if version == 4 else default_ula_pool(self.project),
                         DEFAULT_POOL_SIZE[version])]

    def clash(self, subnet: IPNetwork) -> str | None:
        """What `subnet` overlaps: a reserved range, the host's address space, another project."""
        for net, what in RESERVED:
            if net.version == subnet.version and subnet.overlaps(net):
                return f"the {what} range {net}"
        for net, what in self.facts.space:
            if net.version == subnet.version and subnet.overlaps(net):
                return f"{net}, {what}"
        return None

    def allocate_subnet(self, network: str, taken: list[IPNetwork], version: int) -> IPNetwork:
        claimed = self.claimed_subnets.get((network, version))
        if claimed is not None:
            return claimed
        busy = [b for b in taken if b.version == version]
        pools = self.pools(version)
        for base, size in pools:
            if size < base.prefixlen:
                continue
            for candidate in base.subnets(new_prefix=size):
                if not any(candidate.overlaps(b) for b in busy) and self.clash(candidate) is None:
                    return candidate
        self.fail(("networks", network), f"no free IPv{version} /{pools[0][1]} left in address_pools "
                  f"for network '{network}'", f"set {SUBNET_KEY[version]}: explicitly or add an address_pools entry")
        raise AssertionError

    def check_host_address(self, path: tuple, address: IPAddress, subnet: IPNetwork, what: str) -> None:
        if address.version != subnet.version or address not in subnet:
            self.fail(path, f"{what} {address} is outside subnet {subnet}", f"pick an address inside {subnet}")
        if subnet.version == 4 and subnet.prefixlen < 31 and address in (subnet.network_address,
                                                                         subnet.broadcast_address):
            kind = "network" if address == subnet.network_address else "broadcast"
            self.fail(path, f"{what} {address} is the {kind} address of {subnet}", "pick a host address")
        if subnet.version == 6 and subnet.prefixlen < 127 and address == subnet.network_address:
            self.fail(path, f"{what} {address} is the subnet-router anycast address of {subnet}",
                      "pick another address (the first host is ::1 of the subnet)")

    # -- containers ------------------------------------------------------------------
    def containers(self, networks: dict[str, RNetwork]) -> dict[str, RContainer]:
        used: dict[IPAddress, tuple] = {gw: ("networks", n, GATEWAY_KEY[gw.version])
                                        for n, net in networks.items() for gw, _ in net.gateways()}
        explicit: dict[str, set[IPAddress]] = {n: {gw for gw, _ in net.gateways()} for n, net in networks.items()}
        for i, link in enumerate(self.topo.links):
            for key in ("addresses", "addresses6"):
                for j, address in enumerate(getattr(link, key) or ()):
                    apath = ("links", i, key, j)
                    if address.ip in used:
                        self.fail(apath, f"address {address.ip} is already used by "
                                  f"{'.'.join(map(str, used[address.ip]))}", "give each link end its own address")
                    used[address.ip] = apath
                    for nname, net in networks.items():
                        subnet = net.subnet_of(address.version)
                        if subnet is None:
                            continue
                        if address.ip in subnet:
                            explicit[nname].add(address.ip)
                        end = link.endpoints[j].partition(":")[0]
                        member = end in self.topo.containers and nname in self.topo.containers[end].networks
                        if member and address.network.overlaps(subnet):
                            self.fail(apath, f"link address {address} overlaps subnet {subnet} of network "
                                      f"'{nname}' that container '{end}' is on", "give the link its own subnet")
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
                net = networks[nname]
                for version, address in ((4, ep.ipv4_address), (6, ep.ipv6_address)):
                    if address is None:
                        continue
                    apath = path + (ADDRESS_KEY[version],)
                    subnet = net.subnet_of(version)
                    if subnet is None:
                        self.fail(apath, f"network '{nname}' has no IPv{version}",
                                  f"remove {ADDRESS_KEY[version]}, or {ENABLE_HINT[version]}")
                    if address == net.gateway_of(version):
                        self.fail(apath, f"{address} is the gateway of network '{nname}'", "pick another address")
                    self.check_host_address(apath, address, subnet, ADDRESS_KEY[version])
                    if address in used:
                        other = ".".join(str(p) for p in used[address])
                        self.fail(apath, f"address {address} is already used by {other}",
                                  "give each endpoint its own address")
                    used[address] = apath
                    explicit[nname].add(address)

        # Addresses given before stay with their container and network, whatever was
        # inserted or reordered since: claimed before any new one is handed out.
        self.claimed_addresses: dict[tuple[str, str, int], IPAddress] = {}
        # Per network, each family it has: its subnet, the record of that family and the
        # subnet's addresses no endpoint may hold (worked out once, not per member).
        families = {n: [(version, subnet, self.facts.sticky_addresses(version),
                         {subnet.network_address, subnet.broadcast_address} if version == 4
                         else {subnet.network_address})
                        for version, subnet in ((4, net.subnet), (6, net.subnet6)) if subnet is not None]
                    for n, net in networks.items()}
        for cname, c in self.topo.containers.items():
            for nname, ep in c.networks.items():
                for version, subnet, recorded, unusable in families[nname]:
                    sticky = recorded.get((cname, nname))
                    if sticky is not None and (ep.ipv4_address if version == 4 else ep.ipv6_address) is None \
                            and sticky in subnet and sticky not in explicit[nname] and sticky not in unusable:
                        explicit[nname].add(sticky)
                        self.claimed_addresses[(cname, nname, version)] = sticky
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
                address = address6 = None
                if net.subnet is not None:
                    address = ep.ipv4_address or self.allocate_address(cname, net, explicit[nname], path, 4)
                if net.subnet6 is not None:
                    address6 = ep.ipv6_address or self.allocate_address(cname, net, explicit[nname], path, 6)
                if ep.type == "ovs-internal" and net.driver != "ovs":
                    self.fail(path + ("type",), "type: ovs-internal needs a network with driver: ovs",
                              "use type: veth or driver: ovs")
                if ep.trunks is not None and net.driver != "ovs":
                    self.fail(path + ("trunks",), "trunks need a network with driver: ovs", "remove trunks")
                endpoints.append(REndpoint(nname, ifname, address, net.subnet.prefixlen if net.subnet else None,
                                           ep.mac_address.lower() if ep.mac_address else None, ep.type,
                                           ep.trunks, self.host_names[("ep", f"{cname}/{nname}")],
                                           aliases=list(ep.aliases), address6=address6,
                                           prefixlen6=net.subnet6.prefixlen if net.subnet6 else None,
                                           egress=None if ep.egress is None else
                                           self.link_conditions(path + ("egress",), ep.egress, net.mtu),
                                           ingress=None if ep.ingress is None else
                                           self.link_conditions(path + ("ingress",), ep.ingress, net.mtu),
                                           down=ep.state == "down"))
                if (ep.ingress is not None or ep.state == "down") and ep.type == "ovs-internal":
                    self.fail(path + ("ingress" if ep.ingress is not None else "state",),
                              "ingress conditions and state: down need a veth endpoint (they act on the other "
                              "end of its veth; an OVS internal port has none)", "use type: veth")
            for ifname, path in link_ifnames.get(cname, []):
                if ifname in seen:
                    self.fail(path, f"interface name '{ifname}' is used twice in container '{cname}'",
                              "pick another name for the link end")
                seen[ifname] = path
            out[cname] = self.container(cname, c, endpoints, networks, link_ifnames.get(cname, []))
        return out

    def link_conditions(self, path: tuple, spec, mtu: int) -> dict[str, Any] | None:
        """One direction's link conditions as numbers, checked against what this kernel can do."""
        if spec is None:
            return None
        given = {k: v for k, v in vars(spec).items() if v is not None}
        try:
            numbers = conditions.normalised(given, mtu)
        except ValueError as exc:
            key = str(exc).partition(":")[0]
            self.fail(path + ((key,) if key in given else ()), str(exc), "see README, Link conditions")
        missing = conditions.needs_netem(numbers)
        if missing and not self.facts.netem:
            self.fail(path + (missing[0],), f"{', '.join(missing)} need the kernel's netem qdisc (sch_netem), "
                      "which this host lacks", "remove them; this host can do: rate, burst, loss")
        return numbers or None

    def allocate_address(self, cname: str, net: RNetwork, taken: set[IPAddress], path: tuple,
                         version: int) -> IPAddress:
        subnet = net.subnet_of(version)
        claimed = self.claimed_addresses.get((cname, net.name, version))
        if claimed is not None:
            return claimed
        # One cursor per network and family: addresses behind it are all taken, so allocation stays O(N).
        pool = net.ip_range if version == 4 and net.ip_range is not None else subnet
        cursor = self.cursors.setdefault((net.name, version), iter(pool.hosts()))
        for host in cursor:
            if host not in taken:
                taken.add(host)
                return host
        self.fail(path, f"subnet {subnet} of network '{net.name}' has no free address", "use a larger subnet")
        raise AssertionError

    def default_route(self, c, by_network: dict[str, REndpoint], networks: dict[str, RNetwork],
                      version: int) -> tuple[IPAddress | None, str | None]:
        """Per family: the gateway of `default_route` when that network has the family, else of
        the first of the container's networks that has it; none when that network is internal."""
        carriers = [n for n in by_network if networks[n].subnet_of(version) is not None]
        if not carriers:
            return None, None
        chosen = c.default_route if c.default_route in carriers else carriers[0]
        if networks[chosen].internal:
            return None, None
        return networks[chosen].gateway_of(version), by_network[chosen].ifname

    def container(self, cname: str, c, endpoints: list[REndpoint], networks: dict[str, RNetwork],
                  link_ends: list[tuple[str, tuple]]) -> RContainer:
        base = ("containers", cname)
        by_network = {ep.network: ep for ep in endpoints}
        if c.default_route and c.default_route not in by_network:
            self.fail(base + ("default_route",), f"default_route '{c.default_route}' is not one of the networks "
                      f"of container '{cname}'", f"use one of: {', '.join(by_network) or 'none'}")
        gateway, ifname = self.default_route(c, by_network, networks, 4)
        gateway6, ifname6 = self.default_route(c, by_network, networks, 6)
        routes = []
        if c.routes:
            # Connected subnets: (ifname, own address, subnet) of every endpoint and addressed link end.
            connected = [(ep.ifname, ip, networks[ep.network].subnet_of(ip.version)) for ep in endpoints
                         for ip, _ in ep.addresses()]
            connected += [(ifname, address.ip, address.network)
                          for ifname, address in self.link_addresses.get(cname, ())]
            routes = self.routes(cname, c, connected, [gw for gw in (gateway, gateway6) if gw is not None])
        ifnames = {ep.ifname for ep in endpoints} | {ifname for ifname, _ in link_ends} | {"lo", "all", "default"} \
            if c.sysctls else set()
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
        host_gateway = gateway or gateway6 or next((gw for ep in endpoints for gw, _ in networks[ep.network].gateways()),
                                                   None) if c.extra_hosts else None
        extra_hosts = []
        for host, ip in c.extra_hosts.items():
            if ip == "host-gateway" and host_gateway is None:
                self.fail(base + ("extra_hosts", host), "host-gateway needs a network", "attach the container "
                          "to a network or write an address")
            extra_hosts.append((str(host_gateway if ip == "host-gateway" else ip), host))
        return RContainer(cname, netns, adopted, endpoints, gateway, ifname, routes,
                          [str(d) for d in c.dns], list(c.dns_search), extra_hosts, dict(c.sysctls),
                          default_gateway6=gateway6, default_ifname6=ifname6,
                          process=self.process(cname, c), aliases=list(c.aliases),
                          execs=self.execs(cname, c), host=c.host)

    def execs(self, cname: str, c) -> list[list[str]]:
        out = []
        for i, command in enumerate(c.exec):
            try:
                argv = command_argv(command)
            except ValueError as exc:
                self.fail(("containers", cname, "exec", i), f"exec: {exc}", "close the quote or escape it")
            if not argv or not argv[0]:
                self.fail(("containers", cname, "exec", i), "an empty exec command", "write the program and "
                          "its arguments, or remove the entry")
            out.append(argv)
        return out

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

    def routes(self, cname: str, c, connected: list[tuple[str, IPAddress, IPNetwork]],
               gateways: list[IPAddress]) -> list[dict[str, Any]]:
        """Each route needs a gateway on a connected subnet of its family, or a destination
        inside one."""
        base = ("containers", cname)
        by_destination: dict[IPNetwork, tuple] = {
            _DEFAULT_DESTINATIONS[gw.version]: base + ("default_route",) for gw in gateways}
        routes = []
        for i, route in enumerate(c.routes):
            path = base + ("routes", i)
            if route.to in by_destination:
                other = by_destination[route.to]
                what = ("the default route (default_route, or the first network)" if other[-1] == "default_route"
                        else ".".join(map(str, other)))
                self.fail(path + ("to",), f"a route to {route.to} is already set by {what}",
                          "keep one route per destination" + (" (or set default_route)" if gateways else ""))
            by_destination[route.to] = path
            family = [(ifname, own, subnet) for ifname, own, subnet in connected if subnet.version == route.to.version]
            if route.via is not None:
                if route.via.version != route.to.version:
                    self.fail(path + ("via",), f"gateway {route.via} is IPv{route.via.version} but the route to "
                              f"{route.to} is IPv{route.to.version}", "use a gateway of the same family")
                dev = next((ifname for ifname, _, subnet in family if route.via in subnet), None)
                if dev is None:
                    self.fail(path + ("via",), f"gateway {route.via} is not on any network of container '{cname}'",
                              "use an address inside one of its subnets")
                subnet = next(s for _, _, s in family if route.via in s)
                if route.via in {own for _, own, _ in family}:
                    self.fail(path + ("via",), f"gateway {route.via} is an address of container '{cname}' itself",
                              "use the address of a router on that network")
                if subnet.version == 4 and subnet.prefixlen < 31 and route.via in (subnet.network_address,
                                                                                   subnet.broadcast_address):
                    self.fail(path + ("via",), f"gateway {route.via} is the network or broadcast address of {subnet}",
                              "use the address of a router on that network")
            else:
                inside = [(ifname, subnet) for ifname, _, subnet in family if route.to.subnet_of(subnet)]
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

    @cached_property
    def link_addresses(self) -> dict[str, list[tuple[str, IPInterface]]]:
        """(ifname, address) of each container's addressed link ends, of both families."""
        found: dict[str, list[tuple[str, IPInterface]]] = {}
        for link in self.topo.links:
            for pair in (link.addresses, link.addresses6):
                for end, address in zip(link.endpoints, pair or ()):
                    container, _, ifname = end.partition(":")
                    found.setdefault(container, []).append((ifname, address))
        return found

    def fill_hosts(self, containers: dict[str, RContainer]) -> dict[str, list[tuple[str, str]]]:
        """Like Docker's embedded DNS, containers find the members of their networks by name."""
        members: dict[str, list[tuple[str, str]]] = {}
        for c in containers.values():
            for ep in c.endpoints:
                hostnames = dict.fromkeys([c.name, *c.aliases, *ep.aliases]) if c.aliases or ep.aliases else (c.name,)
                known = members.setdefault(ep.network, [])
                known += [(str(ip), name) for ip, _ in ep.addresses() for name in hostnames]
        groups: dict[str, list[tuple[str, str]]] = {}
        joined: dict[tuple[str, ...], tuple[list[str], str]] = {}   # networks as listed → sorted, and named
        for c in containers.values():
            listed = tuple(ep.network for ep in c.endpoints)
            if listed not in joined:
                nets = sorted(set(listed))
                # Network and container names start with a letter or digit: these never collide.
                joined[listed] = (nets, ",".join(nets) or "_none")
            nets, group = joined[listed]
            if c.hosts:
                group = f"{c.name}@{group}"
            if c.dns or c.dns_search:  # the group's folder holds its resolv.conf too
                group += "~" + hashlib.sha256(repr((c.dns, c.dns_search)).encode()).hexdigest()[:12]
            if len(group) > 200:
                group = "_" + hashlib.sha256(group.encode()).hexdigest()[:32]
            if group not in groups:
                entries = {entry for n in nets for entry in members[n]}
                groups[group] = sorted(entries, key=itemgetter(1, 0)) + c.hosts
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
            for key, pair in (("addresses", link.addresses), ("addresses6", link.addresses6)):
                if pair and (pair[0].network != pair[1].network or pair[0].ip == pair[1].ip):
                    self.fail(("links", i, key), "link addresses must be two different addresses in one subnet",
                              'write e.g. ["10.99.0.1/30", "10.99.0.2/30"]' if key == "addresses"
                              else 'write e.g. ["fd99::1/64", "fd99::2/64"]')
            if link.addresses6 and link.addresses and link.addresses[0].version == 6:
                self.fail(("links", i, "addresses6"), "addresses6 is the IPv6 pair beside IPv4 addresses, but "
                          "addresses are IPv6 already", "put IPv4 addresses in addresses, or drop addresses6")
            has_v6 = link.addresses6 or (link.addresses and link.addresses[0].version == 6)
            if has_v6 and link.mtu < IPV6_MIN_MTU:
                self.fail(("links", i, "mtu"), f"mtu {link.mtu} is below IPv6's minimum of {IPV6_MIN_MTU}",
                          f"use mtu: {IPV6_MIN_MTU} or more on a link with IPv6 addresses")
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
            addresses6 = tuple(str(x) for x in link.addresses6) if link.addresses6 else None
            macvlan = {"parent": link.macvlan.parent, "mode": link.macvlan.mode} if link.macvlan else None
            out.append(RLink(a, b, link.mtu, addresses, master or link.host_bridge, link.host_bridge is not None,
                             vxlan, macvlan, macs[:2], addresses6,
                             conditions=self.link_conditions(("links", i, "conditions"), link.conditions, link.mtu),
                             down=link.state == "down"))
        return out

    # -- cross checks --------------------------------------------------------------------
    def policies_and_expectations(self, containers: dict[str, RContainer]) -> None:
        for i, policy in enumerate(self.topo.policies):
            for side, value in (("from", policy.from_), ("to", policy.to)):
                if value not in self.topo.networks:
                    self.fail(("policies", i, side), f"policy names unknown network '{value}'",
                              f"use one of: {', '.join(self.topo.networks) or 'none'}")
                if self.topo.networks[value].internal:
                    self.fail(("policies", i, side), f"policy names internal network '{value}', which nothing "
                              "is forwarded in or out of", "remove the policy, or internal: true")
        for i, exp in enumerate(self.topo.expect):
            target = exp.to.partition(":")[0]
            for side, value in (("from", exp.from_), ("to", target)):
                if value not in containers:
                    self.fail(("expect", i, side), f"expect names unknown container '{value}'",
                              f"use one of: {', '.join(containers) or 'none'}")
            port = exp.to.partition(":")[2]
            if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                self.fail(("expect", i, "to"), f"'{port}' is not a port number", "use 1-65535")
        # (family, port, proto) → host address (None: every address of the family) → path
        published: dict[tuple[int, int, str], dict[IPAddress | None, tuple]] = {}
        for cname, c in self.topo.containers.items():
            if c.ports and all(self.topo.networks[n].internal for n in c.networks):
                self.fail(("containers", cname, "ports"), f"container '{cname}' publishes ports but has no "
                          "network that is not internal to reach it through", "join a network without internal: true")
            for i, port in enumerate(c.ports):
                path = ("containers", cname, "ports", i)
                number, families = port.published, published_families(port)
                has = {version for version in (4, 6) if published_target(containers[cname], self.networks_, version)}
                if port.host_ip is not None and not families <= has:
                    version = port.host_ip.version
                    self.fail(path, f"host address {port.host_ip} is IPv{version} but container '{cname}' has no "
                              f"IPv{version} address on a network that is not internal",
                              "publish on an address of a family the container has")
                host_ip = None if port.host_ip is None or port.host_ip.is_unspecified else port.host_ip
                for version in sorted(families) if number is not None else ():  # target-only: see host_ports
                    on = published.setdefault((version, number, port.protocol), {})
                    # A wildcard takes the port on every address of its family, so it overlaps any specific one.
                    clash = on.get(host_ip) or (next(iter(on.values())) if on and (host_ip is None or None in on)
                                                else None)
                    if clash:
                        shown = (f"[{host_ip}]" if version == 6 else str(host_ip)) if host_ip else \
                            ("[::]" if version == 6 else "0.0.0.0")
                        self.fail(path, f"host port {shown}:{number}/{port.protocol} is already published by "
                                  f"{'.'.join(map(str, clash))}", "publish each host port once")
                    on[host_ip] = path
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

    def host_ports(self, containers: dict[str, RContainer]) -> None:
        """The host port of every `ports:` entry.  A target-only one ("80") gets an ephemeral
        port, as in Compose: the one it had in the last apply, else the first free one from a
        hash of project, container and entry, so it stays the same across runs."""
        taken = {(port.published, port.protocol) for c in self.topo.containers.values() for port in c.ports
                 if port.published is not None} | set(self.facts.other_ports)
        span = EPHEMERAL_PORTS[1] - EPHEMERAL_PORTS[0] + 1
        for cname, c in self.topo.containers.items():
            chosen: dict[str, int] = {}
            for i, port in enumerate(c.ports):
                if port.published is not None:
                    containers[cname].host_ports.append(port.published)
                    continue
                key = port_key(port)
                if key in chosen:
                    self.fail(("containers", cname, "ports", i), f"target port {port.target}/{port.protocol} is "
                              "listed twice without a host port", "list it once, or give each a host port")
                number = self.facts.ports.get((cname, key))
                if number is None or (number, port.protocol) in taken:
                    avoid = taken | self.facts.listening_ports
                    start = int(hashlib.sha256(repr((self.project, cname, key)).encode()).hexdigest()[:8], 16)
                    number = next((EPHEMERAL_PORTS[0] + (start + k) % span for k in range(span)
                                   if (EPHEMERAL_PORTS[0] + (start + k) % span, port.protocol) not in avoid), None)
                    if number is None:
                        self.fail(("containers", cname, "ports", i), "no free ephemeral host port left",
                                  "give the port a host port: PUBLISHED:TARGET")
                taken.add((number, port.protocol))
                chosen[key] = number
                containers[cname].host_ports.append(number)

    def check_peer(self, path: tuple, peer: str | None) -> None:
        if peer in (None, "any") or peer in self.topo.networks or peer in self.topo.containers:
            return
        try:
            ip_network(peer, strict=False)
        except ValueError:
            self.fail(path, f"'{peer}' is not a network, container, CIDR or 'any'", "fix the reference")

    def hosts(self) -> None:
        """Every container of a multi-host file names its host, one of hosts:."""
        hosts = self.topo.hosts
        for cname, c in self.topo.containers.items():
            path = ("containers", cname, "host")
            if c.host is not None and hosts is None:
                self.fail(path, f"container '{cname}' names host '{c.host}' but the file declares no hosts:",
                          f"add hosts: {{{c.host}: {{}}}}, or remove host:")
            if hosts is not None and c.host is None:
                self.fail(("containers", cname), f"container '{cname}' has no host: and the file declares hosts:",
                          f"add host: with one of: {', '.join(hosts)}")
            if hosts is not None and c.host not in hosts:
                self.fail(path, f"container '{cname}' names unknown host '{c.host}'",
                          f"use one of: {', '.join(hosts)}")
        if hosts is not None and self.facts.host is not None and self.facts.host not in hosts:
            self.fail(("hosts",), f"this host is '{self.facts.host}' (--host / NETCOMPOSE_HOST), which hosts: does "
                      "not declare", f"use one of: {', '.join(hosts)}", key=True)
        ovn = self.topo.ovn
        if ovn is not None and ovn.gateway is not None:
            if hosts is None or ovn.gateway not in hosts:
                self.fail(("ovn", "gateway"), f"ovn.gateway names unknown host '{ovn.gateway}'",
                          f"use one of: {', '.join(hosts or {}) or 'none (declare hosts:)'}")
            if ovn.uplink is None:
                self.fail(("ovn", "gateway"), "ovn.gateway needs ovn.uplink (where its router meets the outside)",
                          "add uplink: {network: PHYSNET, address: A.B.C.D/NN, via: A.B.C.E}")
        if ovn is not None and ovn.uplink is not None:
            if ovn.gateway is None:
                self.fail(("ovn", "uplink"), "ovn.uplink needs ovn.gateway (the host of the gateway router)",
                          "add gateway: with one of the hosts", key=True)
            up = ovn.uplink.address
            if up.network.prefixlen > 30 or up.ip in (up.network.network_address, up.network.broadcast_address):
                self.fail(("ovn", "uplink", "address"), f"{up} is not a host address of a subnet",
                          "write the gateway router's address with its prefix, e.g. 172.31.0.10/24")
            if ovn.uplink.via not in up.network or ovn.uplink.via == up.ip:
                self.fail(("ovn", "uplink", "via"), f"via {ovn.uplink.via} is not another address of {up.network}",
                          "name the outside router on the uplink's subnet")

    def ovn(self, networks: dict[str, RNetwork], containers: dict[str, RContainer]) -> None:
        """What OVN networks support (see compile.ovn), and what a multi-host file may span."""
        ovn_nets = {name for name, net in networks.items() if net.driver == "ovn"}
        uplink = self.topo.ovn.uplink if self.topo.ovn else None
        for name in ovn_nets:
            spec, base, subnet = self.topo.networks[name], ("networks", name), networks[name].subnet
            if uplink is not None and subnet is not None and (subnet.overlaps(uplink.address.network)
                                                              or subnet.overlaps(JOIN_SUBNET)):
                self.fail(base + ("subnet",), f"subnet {subnet} of network '{name}' overlaps the "
                          f"uplink {uplink.address.network} or the gateway's join link {JOIN_SUBNET}",
                          "pick another subnet")
            if spec.subnet is None:
                self.fail(base + ("driver",), f"network '{name}' (driver: ovn) has no subnet:",
                          "set subnet: explicitly (every host must compute the same addresses)")
            if networks[name].subnet6 is not None:
                self.fail(base + ("subnet6" if spec.subnet6 else "enable_ipv6",),
                          f"IPv6 on driver: ovn network '{name}' is not supported yet", "use an IPv4 subnet only")
            if spec.ip_range is not None:
                self.fail(base + ("ip_range",), "ip_range is not supported on driver: ovn networks",
                          "remove it, or set ipv4_address on the endpoints")
        hosts = self.topo.hosts
        seen: dict[str, tuple[str, str | None]] = {}   # a host-local network → its first member and host
        for cname, c in self.topo.containers.items():
            for network, ep in c.networks.items():
                if network not in ovn_nets:
                    continue
                path = ("containers", cname, "networks", network)
                if ep.type != "veth" or ep.trunks:
                    self.fail(path + ("type" if ep.type != "veth" else "trunks",),
                              f"endpoint type {ep.type} / trunks are not supported on driver: ovn network "
                              f"'{network}'", "remove them: an OVN endpoint is a veth bound to br-int")
            for network in c.networks if hosts is not None else ():
                if network in ovn_nets:
                    continue
                first = seen.setdefault(network, (cname, c.host))
                if first[1] != c.host:
                    self.fail(("containers", cname, "networks", network),
                              f"network '{network}' (driver: {networks[network].driver}) joins containers of "
                              f"hosts '{first[1]}' and '{c.host}', but only driver: ovn networks span hosts",
                              "use driver: ovn, or put its containers on one host")
            for i, port in enumerate(c.ports):
                target = published_target(containers[cname], networks, 4)
                if target is None or target[1].driver != "ovn":
                    continue
                path = ("containers", cname, "ports", i)
                if uplink is None:
                    self.fail(path, f"ports of driver: ovn network '{target[1].name}' are published on the gateway "
                              "router's uplink, and the file has none", "set ovn.gateway and ovn.uplink")
                if port.published is None:
                    self.fail(path, "a port published through the OVN gateway router needs its published port",
                              "write PUBLISHED:TARGET, e.g. 8080:80")
                if port.host_ip is not None and port.host_ip != uplink.address.ip:
                    self.fail(path, f"{port.host_ip} is not the uplink address {uplink.address.ip}, where ports of "
                              "driver: ovn networks are published", "drop the host address")
        for i, link in enumerate(self.topo.links):
            ends = {e.partition(":")[0] for e in link.endpoints}
            where = {self.topo.containers[e].host for e in ends if e in self.topo.containers}
            if len(where) > 1:
                self.fail(("links", i, "endpoints"), f"link joins containers of hosts {', '.join(sorted(where))}; "
                          "a direct wire cannot span hosts", "use a driver: ovn network between them")
        for i, policy in enumerate(self.topo.policies):
            kinds = {networks[policy.from_].driver == "ovn", networks[policy.to].driver == "ovn"}
            if len(kinds) > 1:
                self.fail(("policies", i), f"policy joins OVN network and a non-OVN one ('{policy.from_}' to "
                          f"'{policy.to}'), which no router connects", "write policies between networks of one kind")

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
        self.hosts()
        networks = self.networks_ = self.networks()
        self.ovs_bridges(networks)
        containers = self.containers(networks)
        self.policies_and_expectations(containers)
        self.ovn(networks, containers)
        self.host_ports(containers)
        adopted = {c.netns: name for name, c in containers.items() if c.adopted}
        for name, c in containers.items():
            if not c.adopted and c.netns in adopted:
                self.fail(("containers", adopted[c.netns], "netns"), f"namespace '{c.netns}' is also the "
                          f"namespace netcompose creates for container '{name}'", "adopt another namespace")
        return Resolved(self.project, self.topo, networks, containers, self.links(networks), self.fill_hosts(containers),
                        self.host_names, self.facts.netem, self.facts.host)


def command_argv(command: str | list[str]) -> list[str]:
    """A list is the argv as is; a string is split as a POSIX shell would split it (quotes,
    escapes), but no shell ever runs it: no variables, globs or operators."""
    import shlex   # only files with process commands need it
    return list(command) if isinstance(command, list) else shlex.split(command)


def declared_processes(topo: Record, doc: Document, project: str) -> dict[str, RProcess]:
    """Each container's process, without resolving (or observing) the networks."""
    resolver = _Resolver(topo, doc, project, HostFacts())
    return {name: p for name, c in topo.containers.items() if (p := resolver.process(name, c)) is not None}


def published_families(port) -> set[int]:
    """The families a published port opens: no host address, or '::', both; 0.0.0.0 or any
    other IPv4 address, IPv4 only; an IPv6 address, IPv6 only."""
    if port.host_ip is None or str(port.host_ip) == "::":
        return {4, 6}
    return {port.host_ip.version}


def reaches_ipv4_loopback(port) -> bool:
    """The host reaches this published port at 127.0.0.1: published there, or on every IPv4
    address (as with Docker)."""
    return 4 in published_families(port) and (port.host_ip is None or port.host_ip.is_unspecified
                                                or port.host_ip.is_loopback)


def published_target(c: RContainer, networks: dict[str, RNetwork], version: int) -> tuple[str, RNetwork] | None:
    """Where a published port of `c` leads for one family: its first address of that family
    on a network that is not internal."""
    for ep in c.endpoints:
        net = networks[ep.network]
        address = ep.address_of(version)
        if address is not None and not net.internal:
            return str(address), net
    return None


def resolve(topo: Record, doc: Document, project: str, facts: HostFacts = HostFacts()) -> Resolved:
    return _Resolver(topo, doc, project, facts).run()
