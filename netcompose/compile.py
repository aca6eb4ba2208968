"""compile: resolved topology → the desired set of resources.  Pure."""
from __future__ import annotations

from typing import Callable, Iterable

from . import names
from . import resources as r
from .resources import HOST, Resource
from .spec.resolve import RContainer, Resolved

# Compilers for optional features (OVS, nftables) add their resources here.
Extension = Callable[[Resolved], Iterable[Resource]]
EXTENSIONS: list[Extension] = []

FILE_MARKER = "# netcompose project={project} container={container}: managed file, edits are overwritten"


def netns_dir(ns: str) -> str:
    return f"/etc/netns/{ns}"


def _container(res: Resolved, c: RContainer) -> Iterable[Resource]:
    project = res.project
    yield r.netns(c.netns, external=c.adopted, marker=None if c.adopted else names.alias(project, "ns", c.name))
    addr_keys: dict[str, tuple[str, str]] = {}  # ifname → (link key, address key)
    for ep in c.endpoints:
        net = res.networks[ep.network]
        if net.driver != "bridge" and ep.type != "veth":
            continue  # driver-specific endpoints come from extensions
        ident = f"{c.name}/{ep.network}"
        link = r.veth(HOST, ep.host_ifname, c.netns, ep.ifname, mtu=net.mtu,
                      alias=names.alias(project, "ep", ident), peer_alias=names.alias(project, "ep-peer", ident),
                      peer_mac=ep.mac, master=net.bridge if net.driver == "bridge" else None)
        yield link
        addr = r.address(c.netns, ep.ifname, str(ep.address), ep.prefixlen, link.key)
        addr_keys[ep.ifname] = (link.key, addr.key)
        yield addr
    yield from _routes(c, addr_keys)
    if not c.adopted:
        yield from _files(project, c)
    for name, value in c.sysctls.items():
        yield r.sysctl(c.netns, name, value)


def _routes(c: RContainer, addr_keys: dict[str, tuple[str, str]]) -> Iterable[Resource]:
    # A route's gateway must be reachable first: depend on the address of its device.
    wanted = [("0.0.0.0/0", str(c.default_gateway), c.default_ifname, None)] if c.default_gateway else []
    wanted += [(rt["to"], rt["via"], rt["dev"], rt["metric"]) for rt in c.routes]
    for dst, via, dev, metric in wanted:
        link, addr = addr_keys.get(dev, (None, None))
        yield r.route(c.netns, dst, via, dev, metric, link=link, gateway_address=addr)


def _files(project: str, c: RContainer) -> Iterable[Resource]:
    folder = netns_dir(c.netns)
    marker = FILE_MARKER.format(project=project, container=c.name)
    hosts = [marker, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += [f"{ip}\t{name}" for ip, name in c.hosts]
    yield r.file(f"{folder}/hosts", "\n".join(hosts) + "\n")
    if c.dns or c.dns_search:
        lines = [marker] + [f"nameserver {d}" for d in c.dns]
        if c.dns_search:
            lines.append("search " + " ".join(c.dns_search))
        yield r.file(f"{folder}/resolv.conf", "\n".join(lines) + "\n")


def _links(res: Resolved) -> Iterable[Resource]:
    for link in res.links:
        a, b = res.containers[link.a[0]], res.containers[link.b[0]]
        ident = f"{link.a[0]}:{link.a[1]}={link.b[0]}:{link.b[1]}"
        alias = names.alias(res.project, "link", ident)
        wire = r.veth(a.netns, link.a[1], b.netns, link.b[1], mtu=link.mtu, alias=alias,
                      peer_alias=names.alias(res.project, "link-peer", ident))
        yield wire
        for (container, ifname), cidr in zip((link.a, link.b), link.addresses or ()):
            ip, _, plen = cidr.partition("/")
            yield r.address(res.containers[container].netns, ifname, ip, int(plen), wire.key)


def _networks(res: Resolved) -> Iterable[Resource]:
    for net in res.networks.values():
        if net.driver != "bridge":
            continue
        br = r.bridge(net.bridge, net.mtu, names.alias(res.project, "net", net.name))
        yield br
        yield r.address(HOST, net.bridge, str(net.gateway), net.subnet.prefixlen, br.key)


def compile_resources(res: Resolved) -> dict[str, Resource]:
    out: dict[str, Resource] = {}
    parts = [_networks(res), *(_container(res, c) for c in res.containers.values()), _links(res),
             *(ext(res) for ext in EXTENSIONS)]
    for part in parts:
        for resource in part:
            if resource.key in out:
                raise ValueError(f"two resources compile to {resource.key}")
            out[resource.key] = resource
    return out
