"""The topology file, as pydantic models.  `schemas/netcompose.schema.json` is generated from here."""
from __future__ import annotations

import re
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network,
                       ip_address, ip_interface, ip_network)
from typing import Annotated, Any, Callable, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator,
                      model_validator)

from .. import conditions
from ..errors import excerpt
from .patterns import (DEFAULT_IPV4_POOL, DEFAULT_POOL_SIZE, HOSTNAME_PATTERN, IFNAME_PATTERN, MAC_PATTERN,
                       NAME_MAX_LENGTH, NAME_PATTERN, PROJECT_PATTERN, RESERVED_IFNAMES)

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=NAME_MAX_LENGTH)]
ProjectName = Annotated[str, Field(pattern=PROJECT_PATTERN, min_length=1, max_length=32)]
# IFNAMSIZ is 16 bytes with the terminating NUL.
IfName = Annotated[str, Field(pattern=IFNAME_PATTERN, min_length=1, max_length=15)]


def _unicast_mac(value: str) -> str:
    first = int(value[:2], 16)
    if first & 1:
        raise ValueError(f"{value} is a multicast MAC address; an interface needs a unicast one "
                         "(the first byte even, e.g. 02:42:0a:00:00:01)")
    if int(value.replace(":", ""), 16) == 0:
        raise ValueError("00:00:00:00:00:00 is not a usable MAC address; use e.g. 02:42:0a:00:00:01")
    return value


Mac = Annotated[str, Field(pattern=MAC_PATTERN), AfterValidator(_unicast_mac)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
VlanId = Annotated[int, Field(ge=1, le=4094)]
Mtu = Annotated[int, Field(ge=68, le=65535)]
HostName = Annotated[str, Field(pattern=HOSTNAME_PATTERN, max_length=253)]


def _written_as_text(value: Any) -> Any:
    # pydantic would read `subnet: 5` (or `false`) as an integer address.
    if isinstance(value, (bool, int, float)):
        raise ValueError("expected an IP address or subnet written like 10.0.0.1, 10.0.0.0/24 or fd00:1::/64, "
                         "not a number or boolean")
    return value


def _one_family(version: int, parse: Any, other_key: str) -> Any:
    """A v4-only (or v6-only) field that names the other family's field when given the other family."""
    def check(value: Any) -> Any:
        value = _written_as_text(value)
        if isinstance(value, str):
            try:
                parsed = parse(value.strip())
            except ValueError:
                return value  # pydantic explains what is wrong with it
            if parsed.version != version:
                raise ValueError(f"{value} is an IPv{parsed.version} value; write it under '{other_key}'")
        return value
    return BeforeValidator(check)


def _either_family(parse: Any) -> Any:
    """A field that takes either family: parsed here, so an error is one message rather than one per family."""
    def check(value: Any) -> Any:
        value = _written_as_text(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return parse(text.strip("[]") if parse is ip_address else text)
            except ValueError as exc:
                if parse is ip_network and "has host bits set" in str(exc):
                    raise ValueError(f"{text} has host bits set; did you mean {ip_network(text, strict=False)}?")
                raise ValueError(f"'{text}' is not an IPv4 or IPv6 "
                                 f"{'address' if parse is ip_address else 'subnet' if parse is ip_network else 'address/prefix'}")
        return value
    return BeforeValidator(check)


IPv4Net = Annotated[IPv4Network, _one_family(4, lambda v: ip_network(v, strict=False), "subnet6")]
IPv4Addr = Annotated[IPv4Address, BeforeValidator(_written_as_text)]
IPv4Iface = Annotated[IPv4Interface, BeforeValidator(_written_as_text)]
IPv6Net = Annotated[IPv6Network, _one_family(6, lambda v: ip_network(v, strict=False), "subnet")]
IPv6Addr = Annotated[IPv6Address, BeforeValidator(_written_as_text)]
IPv6Iface = Annotated[IPv6Interface, _one_family(6, ip_interface, "addresses")]
IPNet = Annotated[IPv4Network | IPv6Network, _either_family(ip_network)]
IPAddr = Annotated[IPv4Address | IPv6Address, _either_family(ip_address)]
IPIface = Annotated[IPv4Interface | IPv6Interface, _either_family(ip_interface)]


NULL = {"type": "null"}


def short_forms(*forms: dict[str, Any], each: str = "") -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` of a field whose before-validator also takes `forms` (Compose's
    short forms), so the JSON Schema accepts whatever the loader accepts.  `each` widens a
    part instead of the whole: "item" (of a list) or "value" (of a mapping)."""
    def widen(schema: dict[str, Any]) -> None:
        if each == "item":
            schema["items"] = {"anyOf": [schema["items"], *forms]}
        elif each == "value":  # values of named keys, or of any key
            values = schema.get("patternProperties", schema)
            for key in ("additionalProperties",) if values is schema else list(values):
                values[key] = {"anyOf": [values[key], *forms]}
        else:
            long_form = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description", "default")}
            schema["anyOf"] = [long_form, *forms]
    return widen


def _chain(*widens: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def widen(schema: dict[str, Any]) -> None:
        for step in widens:
            step(schema)
    return widen


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OvsOptions(Strict):
    bridge: IfName | None = Field(None, description="OVS bridge name; networks sharing one are separated by VLAN tag")
    datapath_type: Literal["system", "netdev"] = "system"
    fail_mode: Literal["standalone", "secure"] = "standalone"


class Network(Strict):
    driver: Literal["bridge", "ovs", "ovn"] = Field("bridge", description="ovn: an OVN logical switch, spanning "
                                                    "hosts (needs ovn.northbound and subnet)")
    subnet: IPv4Net | None = Field(None, description="IPv4 subnet; default: a free /24 from address_pools")
    gateway: IPv4Addr | None = Field(None, description="host-side address; default: first usable address")
    ip_range: IPv4Net | None = Field(None, description="where automatic addresses come from (inside subnet)")
    aux_addresses: dict[str, IPv4Addr] = Field(default_factory=dict,
                                               description="addresses reserved for other hosts, never assigned")
    enable_ipv4: bool | None = Field(None, description="default true, false when only subnet6 is set")
    subnet6: IPv6Net | None = Field(None, description="IPv6 subnet (also turns IPv6 on)")
    gateway6: IPv6Addr | None = Field(None, description="host-side IPv6 address; default: first address")
    enable_ipv6: bool | None = Field(None, description="IPv6 from address_pools when subnet6 is not set")
    mtu: Mtu = 1500
    nat: bool = Field(True, description="masquerade traffic leaving through non-project interfaces")
    nat6: bool | None = Field(None, description="masquerade IPv6 out; default: true for ULA (fc00::/7) subnets, "
                                                "false for global ones")
    internal: bool = Field(False, description="no traffic in or out except between members")
    icc: bool = Field(True, description="members may talk to each other directly")
    vlan: VlanId | None = Field(None, description="OVS access tag for every endpoint of this network")
    ovs: OvsOptions | None = None

    @model_validator(mode="after")
    def _ovs_only_keys(self) -> "Network":
        if self.driver != "ovs" and (self.vlan is not None or self.ovs is not None):
            raise ValueError("'vlan' and 'ovs' need driver: ovs")
        return self


def check_ifname(value: str) -> str:
    if value in RESERVED_IFNAMES:
        raise ValueError(f"interface name '{value}' is reserved by the kernel; pick another, e.g. eth0")
    return value


def _unit_checked(parse):
    """Keep the text as written (tc's units); only check that `parse` reads it."""
    def check(value: Any) -> Any:
        parse(value)
        return value
    return AfterValidator(check)


class LinkConditions(Strict):
    """What one direction of a link does to its traffic (units as tc writes them)."""
    rate: Annotated[str, BeforeValidator(str), _unit_checked(conditions.rate_bits)] | None = Field(
        None, description="bandwidth cap, e.g. 10mbit, 1gbit, 100gbit (tbf)")
    burst: Annotated[str, BeforeValidator(str), _unit_checked(conditions.size_bytes)] | None = Field(
        None, description="tbf bucket size, e.g. 32kb; default 4 ms at the rate")
    loss: Annotated[str, _unit_checked(conditions.percent)] | None = Field(
        None, description="random loss, e.g. 1% (netem, or an nftables rule where the kernel has no netem)")
    delay: Annotated[str, _unit_checked(conditions.time_ns)] | None = Field(None, description="e.g. 40ms (netem)")
    jitter: Annotated[str, _unit_checked(conditions.time_ns)] | None = Field(None, description="e.g. 5ms (netem)")
    corrupt: Annotated[str, _unit_checked(conditions.percent)] | None = Field(None, description="netem")
    duplicate: Annotated[str, _unit_checked(conditions.percent)] | None = Field(None, description="netem")
    reorder: Annotated[str, _unit_checked(conditions.percent)] | None = Field(None, description="netem")


LinkState = Literal["up", "down"]


class Endpoint(Strict):
    ipv4_address: Annotated[IPv4Address, _one_family(4, ip_address, "ipv6_address")] | None = None
    ipv6_address: Annotated[IPv6Address, _one_family(6, ip_address, "ipv4_address")] | None = None
    ifname: IfName | None = Field(None, description="default eth0, eth1, ... in declaration order")
    mac_address: Mac | None = None
    type: Literal["veth", "ovs-internal"] = "veth"
    trunks: list[VlanId] | None = Field(None, description="OVS trunk port carrying these tags")
    aliases: list[HostName] = Field(default_factory=list,
                                    description="more names of the container on this network (hosts files)")
    egress: LinkConditions | None = Field(None, description="conditions of what the container sends")
    ingress: LinkConditions | None = Field(None, description="conditions of what the container receives")
    state: LinkState = Field("up", description="down: the network's side of the endpoint is shut (a failure drill)")

    @field_validator("ifname")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        return check_ifname(value) if value is not None else None

    @field_validator("trunks")
    @classmethod
    def _distinct_trunks(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            twice = sorted({tag for tag in value if value.count(tag) > 1})
            raise ValueError(f"VLAN {twice[0]} is listed twice in trunks")
        return value


class Route(Strict):
    to: IPNet
    via: IPAddr | None = None
    metric: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = Field(None, description="0 to 4294967295 (u32)")


class PortMapping(Strict):
    target: PortNumber
    published: PortNumber | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: IPAddr | None = Field(None, description="default: every address of both families; 0.0.0.0: IPv4 "
                                                    "only; '::': both families; ::1 or 127.0.0.1: the host only")


# Plain groups (ip, published, target, protocol): JSON Schema patterns are ECMA-262 regexes.
SHORT_PORT_PATTERN = r"^ *(?:(\d+\.\d+\.\d+\.\d+|\[[0-9A-Fa-f:.]+\]):)?(?:(\d+):)?(\d+)(?:/(tcp|udp))? *$"
_SHORT_PORT = re.compile(SHORT_PORT_PATTERN)


def parse_short_port(text: str) -> dict[str, Any]:
    match = _SHORT_PORT.fullmatch(text)
    if not match:
        raise ValueError(f"{excerpt(text)} is not [HOST_IP:][PUBLISHED:]TARGET[/tcp|udp] (an IPv6 HOST_IP in "
                         "brackets: [::1]:8080:80)")
    host_ip, published, target, protocol = match.groups()
    parts = {"target": int(target), "protocol": protocol or "tcp"}
    if published:
        parts["published"] = int(published)
    if host_ip:
        parts["host_ip"] = host_ip
    return parts


class FirewallRule(Strict):
    proto: Literal["tcp", "udp", "icmp", "any"] = "any"
    ports: list[PortNumber] | None = None
    from_: str | None = Field(None, alias="from", description="network, container, CIDR or 'any'")
    to: str | None = Field(None, description="network, container, CIDR or 'any'")


class Firewall(Strict):
    ingress: list[FirewallRule] | None = None
    egress: list[FirewallRule] | None = None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(value: Any) -> float:
    """Seconds from 2, 2.5, "2s", "500ms" or "1m"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 2s or 500ms")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a duration like 2s, 500ms or 1m")
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]


class Ready(Strict):
    """When a container's process counts as ready (`up --wait`); exactly one probe."""

    tcp: PortNumber | None = Field(None, description="a TCP port accepts connections inside the sandbox")
    udp: PortNumber | None = Field(None, description="a UDP port is bound inside the sandbox")
    exec: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="a command, run inside the sandbox, exits 0")
    delay: Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION.pattern}]})] | None = Field(
        None, description="the process has been running this long (2s, 500ms)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Ready":
        given = [k for k in ("tcp", "udp", "exec", "delay") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("ready: needs exactly one of tcp, udp, exec or delay")
        return self


def _restart_word(value: Any) -> Any:
    # YAML 1.1 reads a bare `no` as false.
    return "no" if value is False else value


def _environment_map(value: Any) -> Any:
    """Compose's two forms: a mapping, or a list of NAME=VALUE."""
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"environment entry {item!r} is not NAME=VALUE")
            name, _, text = item.partition("=")
            out[name] = text
        value = out
    if isinstance(value, dict):
        return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    return value


EnvName = Annotated[str, Field(pattern=r"^[^=\x00]+$")]


class Container(Strict):
    networks: dict[Name, Endpoint] = Field(
        default_factory=dict, description="one endpoint each; short form: a list of network names",
        json_schema_extra=_chain(short_forms(NULL, each="value"),
                                 short_forms({"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN}})))
    default_route: Name | None = Field(None, description="network whose gateway is the default route")
    routes: list[Route] = Field(default_factory=list)
    dns: list[IPAddr] = Field(default_factory=list)
    dns_search: list[str] = Field(default_factory=list)
    extra_hosts: dict[str, IPAddr | Literal["host-gateway"]] = Field(
        default_factory=dict, description="name → address; host-gateway: the gateway of the default route's network")
    aliases: list[HostName] = Field(default_factory=list,
                                    description="more names of the container on all its networks (hosts files)")
    sysctls: dict[str, str] = Field(default_factory=dict, description="net.* sysctls of the sandbox (per-namespace ones)",
                                    json_schema_extra=short_forms({"type": ["number", "boolean"]}, each="value"))
    netns: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = Field(
        None, description="adopt this existing named namespace")
    pid: Annotated[int, Field(ge=1)] | None = Field(None, description="adopt the namespace of this process")
    ports: list[PortMapping] = Field(default_factory=list, description="Compose syntax", json_schema_extra=short_forms(
        {"type": "string", "pattern": SHORT_PORT_PATTERN}, {"type": "integer", "minimum": 1, "maximum": 65535},
        each="item"))
    firewall: Firewall | None = None
    command: str | list[str] | None = Field(
        None, description="the container's process: a list exec'd as is, or a string split like a shell "
                          "(never run by one)")
    exec: list[str | list[str]] = Field(
        default_factory=list, description="commands run once inside the sandbox after its interfaces are up, "
                                          "again when the list changes (each split like command:)")
    environment: Annotated[dict[EnvName, str], BeforeValidator(_environment_map)] = Field(
        default_factory=dict, description="environment of the process (mapping or NAME=VALUE list)",
        json_schema_extra=_chain(short_forms({"type": ["number", "boolean", "null"]}, each="value"),
                                 short_forms({"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}})))
    working_dir: str | None = Field(None, description="default: the topology's folder; relative to it")
    user: Annotated[str, Field(min_length=1)] | None = Field(None, description="run the process as this user")
    restart: Annotated[Literal["no", "on-failure", "always"], BeforeValidator(_restart_word)] = Field(
        "no", description="what `watch` does when the process exits",
        json_schema_extra=short_forms({"const": False}))   # YAML 1.1 reads a bare `no` as false
    ready: Ready | None = Field(None, description="readiness probe for `up --wait`")
    host: Name | None = Field(None, description="the host (of hosts:) whose netcompose runs this container")

    @field_validator("networks", mode="before")
    @classmethod
    def _short_networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {name: {} for name in value} if all(isinstance(n, str) for n in value) else value
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("sysctls", mode="before")
    @classmethod
    def _sysctl_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v
                    for k, v in value.items()}
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _short_ports(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_short_port(v) if isinstance(v, str) else {"target": v} if isinstance(v, int) else v
                    for v in value]
        return value

    @model_validator(mode="after")
    def _one_namespace_source(self) -> "Container":
        if self.netns is not None and self.pid is not None:
            raise ValueError("use either 'netns' or 'pid', not both")
        return self


class Vxlan(Strict):
    remote: IPv4Addr = Field(description="the far VTEP, reached from the host namespace")
    vni: Annotated[int, Field(ge=1, le=16777215)]
    port: PortNumber = Field(4789, description="UDP port, local and remote")


class Macvlan(Strict):
    parent: IfName = Field(description="an existing host interface (never created or changed)")
    mode: Literal["bridge", "vepa", "private", "passthru"] = "bridge"


class Link(Strict):
    endpoints: Annotated[list[str], Field(min_length=1, max_length=2)] = Field(
        description='two "container:ifname" ends of a direct veth wire (one with host_interface); '
                    'both ends may be in one container')
    host_interface: IfName | None = Field(
        None, description="the other end is this interface of the host namespace (created and owned)")
    network: Name | None = Field(None, description="with host_interface: the host end is a plain port of this "
                                                   "bridge network (no address on the container end)")
    host_bridge: IfName | None = Field(None, description="with host_interface: the host end is a port of this "
                                                         "existing host bridge (never created, changed or deleted)")
    vxlan: Vxlan | None = Field(None, description="the one container end is a VXLAN device towards a remote VTEP")
    macvlan: Macvlan | None = Field(None, description="the one container end is a macvlan device on a host "
                                                      "interface")
    mac_addresses: Annotated[list[Mac | None], Field(min_length=1, max_length=2)] | None = Field(
        None, description="MAC address of each container end, in the order of endpoints (null: the kernel's)")
    mtu: Mtu = 1500
    addresses: Annotated[list[IPIface], Field(min_length=2, max_length=2)] | None = Field(
        None, description='addresses of the two ends, e.g. ["10.99.0.1/30", "10.99.0.2/30"]')
    addresses6: Annotated[list[IPv6Iface], Field(min_length=2, max_length=2)] | None = Field(
        None, description='IPv6 addresses of the two ends beside IPv4 `addresses` (a dual-stack wire), e.g. '
                          '["fd99::1/64", "fd99::2/64"]')
    conditions: LinkConditions | None = Field(None, description="conditions of both directions")
    state: LinkState = Field("up", description="down: both ends administratively down (a failure drill)")

    @model_validator(mode="after")
    def _two_ends(self) -> "Link":
        far = [k for k in ("host_interface", "vxlan", "macvlan") if getattr(self, k)]
        if len(far) > 1:
            raise ValueError(f"use one of {', '.join(far)}")
        if len(self.endpoints) != (1 if far else 2):
            raise ValueError("a link has two container ends, or one with host_interface, vxlan or macvlan")
        if far and self.addresses:
            raise ValueError("addresses are for links between containers")
        if self.mac_addresses is not None and len(self.mac_addresses) != len(self.endpoints):
            raise ValueError("mac_addresses needs one entry (or null) per container end")
        if (self.network or self.host_bridge) and not self.host_interface:
            raise ValueError("network: and host_bridge: need host_interface (the end that joins the bridge)")
        if self.network and self.host_bridge:
            raise ValueError("use either network or host_bridge")
        return self


class Policy(Strict):
    from_: Name = Field(alias="from")
    to: Name
    proto: Literal["tcp", "udp", "icmp", "any"] = "any"
    ports: list[PortNumber] | None = None


class Expectation(Strict):
    from_: Name = Field(alias="from")
    to: str = Field(description='container, or "container:port"')
    proto: Literal["tcp", "udp", "icmp"] | None = None
    port: PortNumber | None = None
    reachable: bool = True


class AddressPool(Strict):
    base: IPNet
    size: Annotated[int, Field(ge=8, le=127)] | None = Field(None, description="prefix length of each subnet; "
                                                                       "default 24 for IPv4, 64 for IPv6")

    @model_validator(mode="after")
    def _size_fits_family(self) -> "AddressPool":
        longest = 30 if self.base.version == 4 else 127
        if self.size is not None and self.size > longest:
            raise ValueError(f"size /{self.size} leaves no usable address in an IPv{self.base.version} subnet; "
                             f"use /{longest} or shorter")
        return self


class HostEntry(Strict):
    """A machine of a multi-host topology; each runs `netcompose up --host NAME` for its slice."""
    chassis: str | None = Field(None, description="its OVN chassis name (external_ids:system-id of its OVS); "
                                                  "default: the host's name")


class OvnUplink(Strict):
    network: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)] = Field(
        description="the physical network, as ovn-bridge-mappings on the gateway host names it")
    address: IPv4Iface = Field(description="the gateway router's address there, e.g. 172.31.0.10/24")
    via: IPv4Addr = Field(description="the router of that network, where the outside is")


class Ovn(Strict):
    northbound: Annotated[str, Field(pattern=r"^(tcp|ssl|unix):\S+$")] | None = Field(
        None, description="the OVN Northbound DB remote, e.g. tcp:10.240.0.1:6641 (or --ovn-nb / NETCOMPOSE_OVN_NB)")
    gateway: Name | None = Field(None, description="the host of the gateway router: egress (SNAT) of driver: "
                                                   "ovn networks through its uplink")
    uplink: OvnUplink | None = Field(None, description="where the gateway router meets the outside")


DEFAULT_POOLS = [AddressPool(base=IPv4Network(DEFAULT_IPV4_POOL), size=DEFAULT_POOL_SIZE[4])]


class Topology(Strict):
    name: ProjectName | None = None
    include: list[str] = Field(default_factory=list, description="fragments merged into this file")
    template: bool = Field(False, description="render this file with Jinja2 first")
    vars: dict[str, Any] = Field(default_factory=dict, description="template variables")
    address_pools: list[AddressPool] = Field(
        default_factory=lambda: list(DEFAULT_POOLS),
        description="where subnets come from when a network sets none; a family without an entry uses its default: "
                    "10.128.0.0/9 in /24s, and a ULA /48 derived from the project name in /64s")
    hosts: dict[Name, HostEntry | None] | None = Field(
        None, description="the machines the topology spans (absent: everything on the local host)")
    ovn: Ovn | None = Field(None, description="OVN settings of driver: ovn networks")
    networks: dict[Name, Network] = Field(default_factory=dict, json_schema_extra=short_forms(NULL, each="value"))
    containers: dict[Name, Container] = Field(default_factory=dict, json_schema_extra=short_forms(NULL, each="value"))
    links: list[Link] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    @field_validator("networks", "containers", mode="before")
    @classmethod
    def _null_entries(cls, value: Any) -> Any:
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, dict) else value


def json_schema() -> dict:
    schema = Topology.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "netcompose topology"
    return schema
