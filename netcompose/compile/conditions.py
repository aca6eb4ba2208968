"""Link conditions and link state: the root qdiscs of the devices that send, and the
administrative state of the veth ends.  (Loss without netem is an nftables rule: see
`compile/firewall.py`.)"""
from __future__ import annotations

from typing import Any, Iterable

from .. import conditions
from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import RContainer, REndpoint, Resolved, RLink


def _qdisc(ns: str, ifname: str, link: str, wanted: dict[str, Any] | None, netem: bool) -> Iterable[Resource]:
    params = conditions.qdisc_params(wanted or {}, netem)
    if params is not None:
        yield r.qdisc(ns, ifname, link, **params)


def endpoint(c: RContainer, ep: REndpoint, link: str, parts: list[Resource],
             netem: bool) -> Iterable[Resource]:
    """Egress shapes the sandbox's end; ingress the other end of its veth, on the host (what
    enters one end of a veth is what leaves the other).  `state: down` shuts the network's
    side: the sandbox keeps its address and routes and sees its carrier go."""
    yield from _qdisc(c.netns, ep.ifname, link, ep.egress, netem)
    yield from _qdisc(HOST, ep.host_ifname, link, ep.ingress, netem)
    if ep.down:
        veth = next(res for res in parts if res.key == link)
        veth.attrs["up"] = False


def link(wire: Resource, link: RLink, netem: bool) -> Iterable[Resource]:
    """A wire's conditions apply to both directions: each end's qdisc shapes what it sends.
    `state: down` takes both ends down."""
    ends = [(wire.attrs["ns"], wire.attrs["ifname"]), (wire.attrs["peer_ns"], wire.attrs["peer_ifname"])]
    for ns, ifname in ends:
        yield from _qdisc(ns, ifname, wire.key, link.conditions, netem)
    if link.down:
        wire.attrs.update(up=False, peer_up=False)


def down_ends(res: Resolved) -> set[tuple[str, str]]:
    """(container, ifname) of every sandbox end of a downed link: the kernel drops the routes
    of a device that goes down, so none are asked for."""
    return {end for link in res.links if link.down for end in (link.a, link.b) if end[0] is not None}


def loss_rules(res: Resolved, c: RContainer) -> list[tuple[str, str, float, str]]:
    """(direction, ifname, percent, origin) of the random-drop rules a sandbox's table holds
    when the kernel has no netem."""
    if res.netem:   # loss is netem's then
        return []
    found = []
    for ep in c.endpoints:
        if ep.egress is None and ep.ingress is None:
            continue
        origin = f"containers.{c.name}.networks.{ep.network}"
        for direction, wanted in (("egress", ep.egress), ("ingress", ep.ingress)):
            loss = conditions.loss_percent(wanted)
            if loss:
                found.append((direction, ep.ifname, loss, f"{origin}.{direction}.loss"))
    for i, link in enumerate(res.links):
        loss = conditions.loss_percent(link.conditions)
        if not loss:
            continue
        origin = f"links[{i}].conditions.loss"
        found += [("egress", end[1], loss, origin) for end in (link.a, link.b) if end[0] == c.name]
        if link.b[0] is None and link.a[0] == c.name:  # the host end has no table of ours: drop on arrival
            found.append(("ingress", link.a[1], loss, origin))
    return found
