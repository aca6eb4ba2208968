"""Open vSwitch networks: an OVS bridge (possibly shared, networks separated by VLAN tag),
a tagged internal port carrying the gateway, and per endpoint either a veth whose host end
is an OVS port (access or trunk) or an OVS internal port moved into the sandbox."""
from __future__ import annotations

from typing import Iterable

from .. import names
from .. import resources as r
from ..resources import HOST, Resource
from ..spec.resolve import RContainer, REndpoint, Resolved, RNetwork
from .bridge import endpoint_veth, gateway_addresses


def _ids(project: str, net: RNetwork, endpoint: str | None = None) -> dict[str, str]:
    ids = {r.mark_key("project"): project, r.mark_key("network"): net.name}
    if endpoint:
        ids[r.mark_key("endpoint")] = endpoint
    return ids


def gateway_port(res: Resolved, net: RNetwork) -> str:
    return res.host_names[("gw", net.name)]


def network(res: Resolved, net: RNetwork) -> Iterable[Resource]:
    ovs = net.ovs or {}
    yield r.ovs_bridge(net.bridge, ovs.get("datapath_type", "system"), ovs.get("fail_mode", "standalone"),
                       res.project)
    gw = gateway_port(res, net)
    port = r.ovs_port(gw, net.bridge, type="internal", tag=net.vlan, trunks=None, external_ids=_ids(res.project, net))
    yield port
    link = r.claimed_link(HOST, gw, gw, mtu=net.mtu, alias=names.alias(res.project, "gw", net.name),
                          creator=port.key)
    yield link
    yield from gateway_addresses(net, link.key, gw)


def endpoint(project: str, c: RContainer, ep: REndpoint, net: RNetwork) -> tuple[str, list[Resource]]:
    ident = f"{c.name}/{ep.network}"
    tag = None if ep.trunks else net.vlan
    if ep.type == "ovs-internal":
        port = r.ovs_port(ep.host_ifname, net.bridge, type="internal", tag=tag, trunks=ep.trunks,
                          external_ids=_ids(project, net, ident))
        link = r.claimed_link(c.netns, ep.ifname, ep.host_ifname, mtu=net.mtu, mac=ep.mac,
                              alias=names.alias(project, "ep-int", ident), creator=port.key)
        return link.key, [port, link]
    veth = endpoint_veth(project, c, ep, net, master=None, tx_checksum=False)
    port = r.ovs_port(ep.host_ifname, net.bridge, type="", tag=tag, trunks=ep.trunks,
                      external_ids=_ids(project, net, ident))
    return veth.key, [veth, port]
