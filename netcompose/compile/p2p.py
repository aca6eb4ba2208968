"""Direct container-to-container veth wires (`links:`)."""
from __future__ import annotations

from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import Resource
from ..spec.resolve import Resolved


def links(res: Resolved) -> Iterable[Resource]:
    for link in res.links:
        a, b = res.containers[link.a[0]], res.containers[link.b[0]]
        ident = f"{link.a[0]}:{link.a[1]}={link.b[0]}:{link.b[1]}"
        wire = r.veth(a.netns, link.a[1], b.netns, link.b[1], mtu=link.mtu,
                      alias=names.alias(res.project, "link", ident),
                      peer_alias=names.alias(res.project, "link-peer", ident))
        yield wire
        for (container, ifname), cidr in zip((link.a, link.b), link.addresses or ()):
            ip, _, plen = cidr.partition("/")
            yield r.address(res.containers[container].netns, ifname, ip, int(plen), wire.key)
