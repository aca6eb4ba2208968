"""Saved plans (`plan -o`, `up --plan`) and the resolved document (`config`)."""
from __future__ import annotations

import json
from typing import Any

from .engine import state_fingerprint
from .errors import SpecError, StalePlan, excerpt
from .inputs import read_text
from .plan import FORMAT_VERSION
from .spec.resolve import Resolved, shown_port


def save_plan(path: str, project, state) -> None:
    document = {**state.plan.to_json(), "project": project.name, "fingerprint": state_fingerprint(state)}
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


def read_plan(path: str, project) -> str:
    """The fingerprint a saved plan was made against, after checking it fits this project."""
    try:
        saved = json.loads(read_text(path, name=f"saved plan {path}"))
    except ValueError as exc:
        raise SpecError(None, f"cannot read saved plan {path}: {excerpt(str(exc), 120)}",
                        "pass a file written by `plan -o`") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), str):
        raise SpecError(None, f"{path} is not a saved plan (no fingerprint)", "pass a file written by `plan -o`")
    if saved.get("format_version") != FORMAT_VERSION or saved.get("project") != project.name:
        raise StalePlan(f"stale plan: {path} was made for another project or netcompose version; run plan again")
    return saved["fingerprint"]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def resolved_document(res: Resolved) -> dict[str, Any]:
    return {
        "name": res.project,
        # IPv6 keys where there is IPv6: an IPv4-only document stays as it was.
        "networks": {n.name: {"driver": n.driver, "subnet": _text(n.subnet), "gateway": _text(n.gateway),
                              **({"subnet6": str(n.subnet6), "gateway6": str(n.gateway6)} if n.subnet6 else {}),
                              "mtu": n.mtu, "bridge": n.bridge, "nat": n.nat,
                              **({"nat6": n.nat6} if n.subnet6 else {}), "internal": n.internal, "icc": n.icc,
                              **({"vlan": n.vlan} if n.vlan else {}), **({"ovs": n.ovs} if n.ovs else {})}
                     for n in res.networks.values()},
        "containers": {c.name: {"netns": c.netns, "adopted": c.adopted,
                                "networks": {ep.network: {"ifname": ep.ifname,
                                                          "ipv4_address": f"{ep.address}/{ep.prefixlen}"
                                                          if ep.address else None,
                                                          **({"ipv6_address": f"{ep.address6}/{ep.prefixlen6}"}
                                                             if ep.address6 else {}),
                                                          "mac_address": ep.mac, "type": ep.type,
                                                          "host_ifname": ep.host_ifname,
                                                          **({"trunks": ep.trunks} if ep.trunks else {})}
                                             for ep in c.endpoints},
                                "default_gateway": _text(c.default_gateway),
                                **({"default_gateway6": str(c.default_gateway6)} if c.default_gateway6 else {}),
                                "routes": c.routes, "dns": c.dns, "dns_search": c.dns_search,
                                "hosts": [f"{ip} {name}" for ip, name in res.host_groups.get(c.hosts_group, [])], "sysctls": c.sysctls,
                                **({"ports": [shown_port(port, host_port) for port, host_port in
                                              zip(res.topology.containers[c.name].ports, c.host_ports)]}
                                   if c.host_ports else {}),
                                **({"command": c.process.argv, "environment": c.process.env,
                                    "working_dir": c.process.cwd, "user": c.process.user or None,
                                    "restart": c.process.restart, "ready": c.process.ready} if c.process else {})}
                       for c in res.containers.values()},
        "links": [{"endpoints": [f"{l.a[0]}:{l.a[1]}"] + ([f"{l.b[0]}:{l.b[1]}"] if l.b[0] else []),
                   **({"vxlan": l.vxlan} if l.vxlan else {"macvlan": l.macvlan} if l.macvlan else {} if l.b[0]
                      else {"host_interface": l.b[1]}),
                   **({"bridge": l.master} if l.master else {}),
                   **({"mac_addresses": list(l.macs[:1 if l.b[0] is None else 2])} if any(l.macs) else {}),
                   "mtu": l.mtu,
                   "addresses": list(l.addresses) if l.addresses else None,
                   **({"addresses6": list(l.addresses6)} if l.addresses6 else {})} for l in res.links],
    }
