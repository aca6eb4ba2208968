"""Linux bridge networks: a bridge carrying the gateway, and a veth per endpoint."""
from __future__ import annotations

from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import RContainer, REndpoint, Resolved, RNetwork


def network(res: Resolved, net: RNetwork) -> Iterable[Resource]:
    br = r.bridge(net.bridge, net.mtu, names.alias(res.project, "net", net.name))
    yield br
    yield from gateway_addresses(net, br.key, net.bridge)


# The gateway's link-local address on every IPv6 network (each network is its own link).
GATEWAY_LINK_LOCAL = "fe80::1"


def gateway_addresses(net: RNetwork, link_key: str, ifname: str) -> Iterable[Resource]:
    """The gateway address of each family on the host interface that routes for `net`.  An
    IPv6 gateway also needs a link-local address: a router solicits the neighbours it
    forwards to from it (the kernel makes none on our links, see no_ipv6_autoconf)."""
    for ip, prefixlen in net.gateways():
        yield r.address(HOST, ifname, str(ip), prefixlen, link_key)
    if net.subnet6 is not None:
        yield r.address(HOST, ifname, GATEWAY_LINK_LOCAL, 64, link_key)
        yield from no_router_advertisements(None, ifname, link_key)


def no_router_advertisements(c: RContainer | None, ifname: str, device: str) -> Iterable[Resource]:
    """An IPv6 interface of ours (in sandbox `c`, or the host's; made by resource `device`)
    takes its routes from the file only: a router advertisement from a peer would add a
    default route and SLAAC addresses.  A container's own `sysctls:` entry for it wins."""
    name = f"net.ipv6.conf.{ifname}.accept_ra"
    if c is None or name not in c.sysctls:
        yield r.sysctl(c.netns if c else HOST, name, "0", device=device)


def endpoint_veth(project: str, c: RContainer, ep: REndpoint, net: RNetwork, master: str | None,
                  tx_checksum: bool | None = None) -> Resource:
    ident = f"{c.name}/{ep.network}"
    return r.veth(HOST, ep.host_ifname, c.netns, ep.ifname, mtu=net.mtu,
                  alias=names.alias(project, "ep", ident), peer_alias=names.alias(project, "ep-peer", ident),
                  peer_mac=ep.mac, master=master, tx_checksum=tx_checksum)


def endpoint(project: str, c: RContainer, ep: REndpoint, net: RNetwork) -> tuple[str, list[Resource]]:
    link = endpoint_veth(project, c, ep, net, master=net.bridge)
    return link.key, [link]
