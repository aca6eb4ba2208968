"""Direct wires (`links:`): veths container to container (or to itself) or to the host, and VXLAN
ends towards remote VTEPs."""
from __future__ import annotations

from typing import Iterable

from .. import names
from . import conditions
from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import Resolved
from .bridge import no_router_advertisements


def links(res: Resolved) -> Iterable[Resource]:
    for link in res.links:
        if not res.is_local(link.a[0]):
            continue   # a wire of another host's containers (a wire never spans hosts)
        a_ns = res.containers[link.a[0]].netns
        if link.vxlan is not None:
            yield r.vxlan(a_ns, link.a[1], mtu=link.mtu, alias=names.alias(res.project, "vxlan", ":".join(link.a)),
                          mac=link.macs[0], **link.vxlan)
            continue
        if link.macvlan is not None:
            yield r.host_device(link.macvlan["parent"])
            yield r.macvlan(a_ns, link.a[1], mtu=link.mtu, alias=names.alias(res.project, "macvlan", ":".join(link.a)),
                            mac=link.macs[0], **link.macvlan)
            continue
        ident = f"{link.a[0]}:{link.a[1]}={link.b[0] or 'host'}:{link.b[1]}"
        aliases = {"alias": names.alias(res.project, "link", ident),
                   "peer_alias": names.alias(res.project, "link-peer", ident)}
        if link.master_external:
            yield r.host_device(link.master)
        if link.b[0] is None:  # a host link: its host end first, which may join a bridge
            wire = r.veth(HOST, link.b[1], a_ns, link.a[1], mtu=link.mtu, master=link.master,
                          peer_mac=link.macs[0], **aliases)
        else:
            wire = r.veth(a_ns, link.a[1], res.containers[link.b[0]].netns, link.b[1], mtu=link.mtu,
                          mac=link.macs[0], peer_mac=link.macs[1], **aliases)
        yield from conditions.link(wire, link, res.netem)
        yield wire
        # A device that goes down loses its IPv6 addresses (and every route): a downed
        # wire keeps only its IPv4 ones until it comes back.
        for pair in (link.addresses, None if link.down else link.addresses6):
            for (container, ifname), cidr in zip((link.a, link.b), pair or ()):
                ip, _, plen = cidr.partition("/")
                yield r.address(res.containers[container].netns, ifname, ip, int(plen), wire.key)
                if ":" in ip:
                    yield from no_router_advertisements(res.containers[container], ifname, wire.key)
