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
    yield r.address(HOST, net.bridge, str(net.gateway), net.subnet.prefixlen, br.key)


def endpoint_veth(project: str, c: RContainer, ep: REndpoint, net: RNetwork, master: str | None,
                  tx_checksum: bool | None = None) -> Resource:
    ident = f"{c.name}/{ep.network}"
    return r.veth(HOST, ep.host_ifname, c.netns, ep.ifname, mtu=net.mtu,
                  alias=names.alias(project, "ep", ident), peer_alias=names.alias(project, "ep-peer", ident),
                  peer_mac=ep.mac, master=master, tx_checksum=tx_checksum)


def endpoint(project: str, c: RContainer, ep: REndpoint, net: RNetwork) -> tuple[str, list[Resource]]:
    link = endpoint_veth(project, c, ep, net, master=net.bridge)
    return link.key, [link]
