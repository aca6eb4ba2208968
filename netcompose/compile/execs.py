"""`exec:` of a container: its commands, run once its interfaces and addresses exist."""
from __future__ import annotations

from typing import Iterable

from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import Resolved


def commands(res: Resolved) -> Iterable[Resource]:
    wires: dict[str, list[str]] = {}   # container → keys of its direct wires (see p2p)
    for link in res.links:
        a_ns = res.containers[link.a[0]].netns
        host_end = link.b[0] is None and link.vxlan is None and link.macvlan is None
        key = r.link_key(HOST, link.b[1]) if host_end else r.link_key(a_ns, link.a[1])
        for container in {link.a[0], link.b[0]} - {None}:
            wires.setdefault(container, []).append(key)
    for c in res.local_containers():
        if not c.execs:
            continue
        deps = []
        for ep in c.endpoints:
            link = r.link_key(c.netns, ep.ifname) if ep.type == "ovs-internal" else r.link_key(HOST, ep.host_ifname)
            deps += [link, r.address(c.netns, ep.ifname, str(ep.address), ep.prefixlen, link).key]
        yield r.exec_commands(c.netns, c.name, c.execs, tuple(deps + wires.get(c.name, [])))
