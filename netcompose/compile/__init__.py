"""compile: resolved topology → the desired set of resources.  Pure.

Each network driver (Linux bridge, Open vSwitch) and the p2p link kind live in their own
module and answer two questions: which resources make a network, and which make an
endpoint of it.

The resources of one container compile from that container and its networks alone (a
`Unit`), so an edit of a large file recompiles only the containers it touches.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import Resource
from ..spec.resolve import RContainer, Resolved, RNetwork
from . import bridge, conditions, execs, firewall, ovn, ovs, p2p
from .bridge import no_router_advertisements

NETWORK_DRIVERS = {"bridge": bridge, "ovs": ovs, "ovn": ovn}

FILE_MARKER = "# netcompose project={project} group={group}: managed file, edits are overwritten"


def netns_dir(ns: str) -> str:
    return f"/etc/netns/{ns}"


# The metric the kernel gives an IPv6 route added without one (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC = 1024
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


def _container(project: str, c: RContainer, networks: dict[str, RNetwork], netem: bool,
               down_ends: frozenset[str]) -> Iterable[Resource]:
    yield r.netns(c.netns, external=c.adopted, marker=None if c.adopted else names.alias(project, "ns", c.name))
    addr_keys: dict[tuple[str, int], tuple[str, str]] = {}  # (ifname, family) → (link key, address key)
    devices: dict[str, str] = {}   # ifname → the resource that makes it
    for ep in c.endpoints:
        net = networks[ep.network]
        link_key, parts = NETWORK_DRIVERS[net.driver].endpoint(project, c, ep, net)
        devices[ep.ifname] = link_key
        if ep.egress or ep.ingress or ep.down:
            yield from conditions.endpoint(c, ep, link_key, parts, netem)
        yield from parts
        for ip, prefixlen in ep.addresses():
            addr = r.address(c.netns, ep.ifname, str(ip), prefixlen, link_key)
            addr_keys[(ep.ifname, ip.version)] = (link_key, addr.key)
            yield addr
        if ep.address6 is not None:
            yield from no_router_advertisements(c, ep.ifname, link_key)
    routes = [route for route in _routes(c, addr_keys) if not down_ends or route.attrs["dev"] not in down_ends]
    yield from routes
    etc = _etc_link(project, c) if not c.adopted else None
    if etc is not None:
        yield etc
    sysctls = [r.sysctl(c.netns, name, value, device=devices.get(name.split(".")[3]) if name.count(".") > 3 else None,
                         restore=c.adopted)
               for name, value in c.sysctls.items()] if c.sysctls else []
    yield from sysctls
    if c.process is not None:
        # Started once its sandbox is complete: a server binds its address, a router
        # finds its interfaces, a resolver reads its files.
        before = [addr for _, addr in addr_keys.values()] + [x.key for x in routes + sysctls]
        before += [etc.key] if etc is not None else []
        p = c.process
        yield r.process(c.netns, c.name, p.argv, p.env, p.cwd, p.user, restart=p.restart, ready=p.ready,
                        deps=tuple(before))


def _routes(c: RContainer, addr_keys: dict[tuple[str, int], tuple[str, str]]) -> Iterable[Resource]:
    wanted = [(DEFAULT_ROUTE[version], str(gateway), dev, None)
              for version, gateway, dev in ((4, c.default_gateway, c.default_ifname),
                                            (6, c.default_gateway6, c.default_ifname6)) if gateway is not None]
    wanted += [(rt["to"], rt["via"], rt["dev"], rt["metric"]) for rt in c.routes]
    for dst, via, dev, metric in wanted:
        version = 6 if ":" in dst else 4
        if version == 6 and metric is None:
            metric = IPV6_DEFAULT_METRIC  # what the kernel reports back, so observing it matches
        link, addr = addr_keys.get((dev, version), (None, None))
        yield r.route(c.netns, dst, via, dev, metric, link=link, gateway_address=addr)


def _group_dir(project: str, group: str) -> str:
    return f"{names.shared_etc_dir(project)}/{group}"


def _etc_groups(res: Resolved) -> Iterable[Resource]:
    """One folder per group: `hosts` (the members of its networks, like Docker's embedded
    DNS) and, when the group sets DNS, `resolv.conf`."""
    members: dict[str, RContainer] = {}
    for c in res.local_containers():
        if not c.adopted:
            members.setdefault(c.hosts_group, c)
    for group, c in sorted(members.items()):
        folder, marker = _group_dir(res.project, group), FILE_MARKER.format(project=res.project, group=group)
        lines = [marker, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{ip}\t{name}" for ip, name in res.host_groups[group]]
        yield r.file(f"{folder}/hosts", "\n".join(lines) + "\n")
        if c.dns or c.dns_search:
            lines = [marker] + [f"nameserver {d}" for d in c.dns]
            if c.dns_search:
                lines.append("search " + " ".join(c.dns_search))
            yield r.file(f"{folder}/resolv.conf", "\n".join(lines) + "\n")


def _etc_link(project: str, c: RContainer) -> Resource:
    """/etc/netns/<ns> is a symbolic link to its group's folder (`ip netns exec` follows it):
    one symlink per container instead of a folder, which costs the filesystem 5x more."""
    folder = _group_dir(project, c.hosts_group)
    return r.file(netns_dir(c.netns), link_to=folder, deps=(f"file:{folder}/hosts",))


@lru_cache(maxsize=1)
def _compiler_fingerprint() -> bytes:
    """Changes with the code that compiles a unit, so a new version recompiles every unit."""
    hasher = hashlib.blake2b(digest_size=8)
    for source in sorted(Path(__file__).parent.glob("*.py")) + [Path(r.__file__)]:
        hasher.update(source.read_bytes())
    return hasher.digest()


@dataclass
class Unit:
    """One container's resources, compiled from exactly what `digest` covers."""

    project: str
    container: RContainer
    networks: dict[str, RNetwork]
    networks_shown: str          # their repr, made once per network rather than per member
    netem: bool = False          # link conditions use netem
    down_ends: frozenset[str] = frozenset()   # its ends of downed links: no routes over them

    @cached_property
    def digest(self) -> str:
        """Only an edit's focused path and the record of an apply need it: made on demand."""
        inputs = repr((self.project, self.container, self.netem, sorted(self.down_ends))) + self.networks_shown
        return hashlib.blake2b(_compiler_fingerprint() + inputs.encode(), digest_size=8).hexdigest()

    def compile(self) -> list[Resource]:
        return list(_container(self.project, self.container, self.networks, self.netem, self.down_ends))


def units(res: Resolved) -> dict[str, Unit]:
    shown = {name: repr(net) for name, net in res.networks.items()}
    down: dict[str, set[str]] = {}
    for name, ifname in conditions.down_ends(res):
        down.setdefault(name, set()).add(ifname)
    out = {}
    for c in res.local_containers():   # the others are other hosts' to make
        networks = {ep.network: res.networks[ep.network] for ep in c.endpoints}
        out[c.name] = Unit(res.project, c, networks, "".join(shown[name] for name in networks), res.netem,
                           frozenset(down.get(c.name, ())))
    return out


def shared_resources(res: Resolved) -> Iterable[Resource]:
    """Everything not in a unit: networks, shared /etc folders, p2p links, firewall tables."""
    for net in res.networks.values():
        yield from NETWORK_DRIVERS[net.driver].network(res, net)
    yield from _etc_groups(res)
    yield from p2p.links(res)
    yield from execs.commands(res)
    yield from firewall.tables(res)
    yield from ovn.logical(res)
    yield from ovn.integration_bridge(res)


def collect(parts: Iterable[Iterable[Resource]], into: dict[str, Resource] | None = None) -> dict[str, Resource]:
    """Resources by key; the same key twice is an error unless both compile alike."""
    out = {} if into is None else into
    for part in parts:
        for resource in part:
            have = out.setdefault(resource.key, resource)
            if have is not resource and have.to_json() != resource.to_json():  # alike: an OVS bridge shared by networks
                raise ValueError(f"two resources compile to {resource.key}")
    return out


class Desired:
    """A file's resources, its units compiled on demand: all of them for a full plan, only
    the touched ones for an edit."""

    def __init__(self, res: Resolved) -> None:
        self.resolved = res
        self.units = units(res)
        self.unit_keys: dict[str, list[str]] = {}   # compiled units → the keys they produced
        self.resources = collect([shared_resources(res)])

    def add(self, name: str) -> None:
        if name not in self.unit_keys:
            built = self.units[name].compile()
            collect([built], into=self.resources)
            self.unit_keys[name] = [res.key for res in built]

    def complete(self) -> dict[str, Resource]:
        for name in self.units:
            self.add(name)
        return self.resources


def compile_resources(res: Resolved) -> dict[str, Resource]:
    return Desired(res).complete()
