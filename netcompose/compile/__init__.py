"""compile: resolved topology → the desired set of resources.  Pure.

Each network driver (Linux bridge, Open vSwitch) and the p2p link kind live in their own
module and answer two questions: which resources make a network, and which make an
endpoint of it.
"""
from __future__ import annotations

from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import Resource
from ..spec.resolve import RContainer, Resolved
from . import bridge, firewall, ovs, p2p

NETWORK_DRIVERS = {"bridge": bridge, "ovs": ovs}

FILE_MARKER = "# netcompose project={project} container={container}: managed file, edits are overwritten"
HOSTS_MARKER = "# netcompose project={project} hosts={group}: managed file, edits are overwritten"


def netns_dir(ns: str) -> str:
    return f"/etc/netns/{ns}"


def _container(res: Resolved, c: RContainer) -> Iterable[Resource]:
    yield r.netns(c.netns, external=c.adopted, marker=None if c.adopted else names.alias(res.project, "ns", c.name))
    addr_keys: dict[str, tuple[str, str]] = {}  # ifname → (link key, address key)
    for ep in c.endpoints:
        net = res.networks[ep.network]
        link_key, parts = NETWORK_DRIVERS[net.driver].endpoint(res, c, ep, net)
        yield from parts
        addr = r.address(c.netns, ep.ifname, str(ep.address), ep.prefixlen, link_key)
        addr_keys[ep.ifname] = (link_key, addr.key)
        yield addr
    yield from _routes(c, addr_keys)
    if not c.adopted:
        yield from _files(res.project, c)
    for name, value in c.sysctls.items():
        yield r.sysctl(c.netns, name, value)


def _routes(c: RContainer, addr_keys: dict[str, tuple[str, str]]) -> Iterable[Resource]:
    wanted = [("0.0.0.0/0", str(c.default_gateway), c.default_ifname, None)] if c.default_gateway else []
    wanted += [(rt["to"], rt["via"], rt["dev"], rt["metric"]) for rt in c.routes]
    for dst, via, dev, metric in wanted:
        link, addr = addr_keys.get(dev, (None, None))
        yield r.route(c.netns, dst, via, dev, metric, link=link, gateway_address=addr)


def _hosts_file(project: str, group: str) -> str:
    return f"{names.hosts_dir(project)}/{group}"


def _host_groups(res: Resolved) -> Iterable[Resource]:
    used = {c.hosts_group for c in res.containers.values() if not c.adopted}
    for group in sorted(used):
        lines = [HOSTS_MARKER.format(project=res.project, group=group), "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{ip}\t{name}" for ip, name in res.host_groups[group]]
        yield r.file(_hosts_file(res.project, group), "\n".join(lines) + "\n")


def _files(project: str, c: RContainer) -> Iterable[Resource]:
    folder = netns_dir(c.netns)
    marker = FILE_MARKER.format(project=project, container=c.name)
    shared = _hosts_file(project, c.hosts_group)
    yield r.file(f"{folder}/hosts", link_to=shared, deps=(f"file:{shared}",))
    if c.dns or c.dns_search:
        lines = [marker] + [f"nameserver {d}" for d in c.dns]
        if c.dns_search:
            lines.append("search " + " ".join(c.dns_search))
        yield r.file(f"{folder}/resolv.conf", "\n".join(lines) + "\n")


def compile_resources(res: Resolved) -> dict[str, Resource]:
    out: dict[str, Resource] = {}
    parts = [*(NETWORK_DRIVERS[net.driver].network(res, net) for net in res.networks.values()),
             *(_container(res, c) for c in res.containers.values()), _host_groups(res), p2p.links(res),
             firewall.tables(res)]
    for part in parts:
        for resource in part:
            if resource.key in out:
                if out[resource.key].to_json() == resource.to_json():
                    continue  # e.g. an OVS bridge shared by several networks
                raise ValueError(f"two resources compile to {resource.key}")
            out[resource.key] = resource
    return out
