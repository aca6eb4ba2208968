"""Saved plans (`plan -o`, `up --plan`) and the resolved document (`config`)."""
from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from .engine import state_fingerprint
from .errors import SpecError, StalePlan, excerpt
from .inputs import read_text
from .plan import FORMAT_VERSION
from .spec.memo import Record
from .spec.resolve import Resolved


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
    """`netcompose config`: the file as netcompose reads it (includes merged, variables and
    templates applied, short forms in long form, every default filled in) plus `derived`:
    kernel names, hosts entries, default gateways, and which defaults depend on this host.
    Without `derived`, the document is itself a topology that resolves the same way."""
    topology = {k: v for k, v in _plain(res.topology).items() if k not in ("include", "template", "vars")}
    topology["name"] = res.project
    from_host: dict[str, str] = {}
    for name, net in res.networks.items():
        entry = topology["networks"][name]
        for subnet_key, gateway_key, subnet, gateway in (("subnet", "gateway", net.subnet, net.gateway),
                                                         ("subnet6", "gateway6", net.subnet6, net.gateway6)):
            if subnet is None:
                continue
            if entry.get(subnet_key) is None:
                from_host[f"networks.{name}.{subnet_key}"] = (
                    "not in the file: the subnet the network has on this host, else the first free one of "
                    "address_pools not on a route of this host")
            entry.update({subnet_key: str(subnet), gateway_key: _text(gateway)})
    derived_containers = {}
    for name, c in res.containers.items():
        entry = topology["containers"][name]
        for ep in c.endpoints:
            endpoint = entry["networks"][ep.network]
            for key, address in (("ipv4_address", ep.address), ("ipv6_address", ep.address6)):
                if address is None:
                    continue
                if endpoint.get(key) is None:
                    from_host[f"containers.{name}.networks.{ep.network}.{key}"] = (
                        "not in the file: the address the endpoint has on this host, else the next free one")
                endpoint[key] = str(address)
            endpoint["ifname"] = ep.ifname
        entry["default_route"] = entry["default_route"] or next(iter(entry["networks"]), None)
        if c.process is not None:  # the command as run; the working dir absolute, so the document works anywhere
            entry.update(command=c.process.argv, environment=c.process.env, working_dir=c.process.cwd)
        for port, number in zip(entry["ports"], c.host_ports):  # target-only: the stable ephemeral port
            port["published"] = number
        derived_containers[name] = {
            "netns": c.netns, "adopted": c.adopted,
            "host_ifnames": {ep.network: ep.host_ifname for ep in c.endpoints},
            "default_gateway": _text(c.default_gateway),
            **({"default_gateway6": str(c.default_gateway6)} if c.default_gateway6 else {}),
            "hosts": [f"{ip} {host}" for ip, host in res.host_groups.get(c.hosts_group, [])]}
    return {**topology, "derived": {
        "networks": {n.name: {"bridge": n.bridge} for n in res.networks.values()},
        "containers": derived_containers,
        "from_host": from_host}}


def _plain(value: Any) -> Any:
    """A validated topology (Records) as JSON data, keys as the file spells them: the one
    field named after a Python keyword, `from_`, is `from`."""
    if isinstance(value, Record):
        return {name.rstrip("_"): _plain(item) for name, item in vars(value).items()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, (IPv4Address, IPv6Address, IPv4Network, IPv6Network, IPv4Interface, IPv6Interface)):
        return str(value)
    return value
