"""containerlab topologies (`.clab.yml`) → netcompose data.

Every node becomes a sandbox (a container of the topology) with `eth0` on the management
network; `bridge` and `ovs-bridge` nodes become networks, `host` endpoints host links,
`ext-container` nodes adopted namespaces.  Vendor interface names map to the Linux names
containerlab gives them (SR Linux `ethernet-1/1` → `e1-1`).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from .. import names
from ..errors import Position, SpecError
from ..inputs import read_text
from ..spec.loader import Document, parse_yaml
from ..spec.patterns import IFNAME_PATTERN
from . import Translation, unsupported
from .compose import expand_port

# Node keys with a network meaning; the rest (image, startup-config, license, binds, ...)
# belong to the container runtime.
_NODE_KEYS = {"kind", "group", "mgmt-ipv4", "mgmt_ipv4", "mgmt-ipv6", "mgmt_ipv6", "network-mode", "ports",
              "dns", "exec"}
_BRIDGES = {"bridge": "bridge", "ovs-bridge": "ovs"}
DEFAULT_MGMT = {"network": "clab", "ipv4-subnet": "172.20.20.0/24"}
DEFAULT_MGMT_IPV6 = "3fff:172:20:20::/64"


def _srlinux(name: str) -> str:
    match = re.fullmatch(r"ethernet-(\d+)/(\d+)(?:/(\d+))?", name)
    if match:
        return "e" + "-".join(g for g in match.groups() if g)
    return "eth0" if name == "mgmt0" else name


def _sros(name: str) -> str:
    """SR OS (vrnetlab) ports: 1/1/N and the connector form 1/1/cN/1 are ethN."""
    match = re.fullmatch(r"1/1/(?:c)?(\d+)(?:/1)?", name)
    return f"eth{match[1]}" if match else name


def _srsim(name: str) -> str:
    """SR-SIM: card/mda/port (and connectors) as eCARD-MDA-PORT (e1-1-c1-1)."""
    if re.fullmatch(r"\d+/\d+/(?:c\d+/?)?\d*", name) and "/" in name:
        return "e" + name.replace("/", "-").rstrip("-")
    return name


_KIND_NAMES = {"nokia_srlinux": _srlinux, "srl": _srlinux, "nokia_sros": _sros, "vr-sros": _sros,
               "vr-nokia_sros": _sros, "nokia_srsim": _srsim}


def existing_bridge(name: str) -> bool:
    """Whether the host has a Linux bridge of this name (read from sysfs, no netlink)."""
    return re.fullmatch(IFNAME_PATTERN, name) is not None and len(name) <= 15 and \
        os.path.isdir(f"/sys/class/net/{name}/bridge")


def project_name(lab: str, prefix: Any) -> str:
    """containerlab's sandbox names are <prefix>-<lab>-<node> (default prefix `clab`); the
    project is that name without the node, so sandboxes are named as containerlab names them.
    `prefix: ""` and `__lab-name` give the lab name alone."""
    lab = re.sub(r"[^a-z0-9_-]", "", lab.lower()).lstrip("_-") or "lab"
    if prefix is None:
        return f"clab-{lab}"[:32]
    if prefix in ("", "__lab-name"):
        return lab[:32]
    prefix = re.sub(r"[^a-z0-9_-]", "", str(prefix).lower()).strip("_-")
    return f"{prefix}-{lab}"[:32] if prefix else lab[:32]


class _Clab:
    def __init__(self, doc: Document, tr: Translation):
        self.doc, self.tr = doc, tr
        topo = doc.data.get("topology") or {}
        if not isinstance(topo, dict):
            raise SpecError(doc.where(("topology",)), "topology: must be a mapping", "write topology: {nodes: ...}")
        self.topo = topo
        self.nodes: dict[str, dict] = {}       # node → its settings after defaults/kinds/groups
        self.kinds: dict[str, str] = {}
        self.ifnames: dict[tuple[str, str], str] = {}   # (node, clab name) → Linux name
        self.mgmt = "clab"
        self.shares: dict[str, str] = {}   # node → the node whose sandbox it uses (network-mode)
        self.existing: set[str] = set()    # bridge nodes whose bridge exists on the host already

    def at(self, *path: Any) -> Position:
        return self.doc.where(path)

    def key_at(self, *path: Any) -> Position:
        return self.doc.where(path, key=True)

    # -- nodes ----------------------------------------------------------------------------
    def inherit(self) -> None:
        defaults = self.topo.get("defaults") or {}
        kinds = self.topo.get("kinds") or {}
        groups = self.topo.get("groups") or {}
        for name, node in (self.topo.get("nodes") or {}).items():
            node = node or {}
            group = node.get("group") or defaults.get("group")   # a group not defined is only a label
            layers = [defaults, groups.get(group) or {} if group else {}, node]
            kind = next((layer["kind"] for layer in reversed(layers) if layer.get("kind")), None)
            if kind is None:
                raise SpecError(self.key_at("topology", "nodes", name), f"node '{name}' has no kind",
                                "set kind: on the node, its group or topology.defaults")
            merged: dict[str, Any] = {}
            for layer in (defaults, kinds.get(kind) or {}, layers[1], node):
                for key, value in layer.items():
                    if isinstance(value, dict) and isinstance(merged.get(key), dict):
                        merged[key] = {**merged[key], **value}
                    else:
                        merged[key] = copy.deepcopy(value)
            self.nodes[name], self.kinds[name] = merged, kind

    def node_at(self, name: str, key: str) -> Position:
        """Where a node's (possibly inherited) setting is written."""
        for path in (("topology", "nodes", name, key),):
            if path in self.doc.values:
                return self.doc.values[path]
        group = (self.topo.get("nodes", {}).get(name) or {}).get("group") or (self.topo.get("defaults") or {}).get("group")
        for path in (("topology", "groups", group, key), ("topology", "kinds", self.kinds[name], key),
                     ("topology", "defaults", key)):
            if path in self.doc.values:
                return self.doc.values[path]
        return self.key_at("topology", "nodes", name)

    def run(self) -> None:
        for key in self.doc.data:
            if key not in ("name", "prefix", "mgmt", "topology"):
                self.tr.ignore(key, self.key_at(key))
        for key in self.topo:
            if key not in ("nodes", "links", "kinds", "defaults", "groups"):
                self.tr.ignore(f"topology.{key}", self.key_at("topology", key))
        self.inherit()
        self.tr.section("networks", {}, self.key_at("topology"))
        self.tr.section("containers", {}, self.key_at("topology", "nodes"))
        self.management()
        for name, node in self.nodes.items():
            self.node(name, node)
        for i, link in enumerate(self.topo.get("links") or []):
            self.link(i, link or {})

    def management(self) -> None:
        mgmt = {**DEFAULT_MGMT, **(self.doc.data.get("mgmt") or {})}
        v6_nodes = [n for n, node in self.nodes.items() if node.get("mgmt-ipv6") or node.get("mgmt_ipv6")]
        if v6_nodes and not any(k.replace("_", "-") == "ipv6-subnet" for k in mgmt):
            mgmt["ipv6-subnet"] = DEFAULT_MGMT_IPV6   # containerlab's management network is dual stack
        self.mgmt = str(mgmt["network"])
        path = ("networks", self.mgmt)
        self.tr.set(path, {}, self.at("mgmt") if "mgmt" in self.doc.data else self.key_at("topology"))
        for key, value in mgmt.items():
            given = key in (self.doc.data.get("mgmt") or {})
            here = self.at("mgmt", key) if given else self.key_at("topology")   # a default: where it applies
            spelled = key.replace("_", "-")
            if spelled == "ipv4-subnet":
                self.tr.set(path + ("subnet",), value, here)
            elif spelled == "ipv4-gw":
                self.tr.set(path + ("gateway",), value, here)
            elif spelled == "ipv4-range":
                self.tr.set(path + ("ip_range",), value, here)
            elif spelled == "mtu":
                self.tr.set(path + ("mtu",), value, here)
            elif spelled == "external-access":
                self.tr.set(path + ("nat",), bool(value), here)
            elif spelled in ("ipv6-subnet", "ipv6-gw"):
                self.tr.set(path + ("subnet6" if spelled == "ipv6-subnet" else "gateway6",), value, here)
            elif spelled == "ipv6-range":
                raise unsupported(here, f"mgmt {key}", "IPv6 addresses come from the whole subnet")
            elif spelled == "bridge":
                self.tr.notes.append(f"the management bridge is netcompose's own (named in its alias), not '{value}'")
            elif spelled != "network":
                self.tr.ignore(f"mgmt.{key}", self.key_at("mgmt", key))

    def node(self, name: str, node: dict) -> None:
        kind = self.kinds[name]
        for key in node:
            if key not in _NODE_KEYS:
                self.tr.ignore(key, self.node_at(name, key))
        npath = ("topology", "nodes", name)
        if "|" in name:
            raise unsupported(self.key_at(*npath), f"node '{name}' (a bridge inside another node's namespace)",
                              "netcompose builds bridges in the host")
        if kind in _BRIDGES:
            self.bridge_network(name, kind)
            return
        if kind == "host":
            return
        mode = node.get("network-mode")
        target = str(mode).partition(":")[2] if mode and str(mode).startswith("container:") else None
        if mode == "host" or target in self.nodes:
            self.shares[name] = target or "host"
        if mode == "host":
            self.tr.notes.append(f"node {name} runs in the host namespace (network-mode: host): no sandbox")
            return
        if target in self.nodes:
            self.tr.notes.append(f"node {name} shares the sandbox of {target} ({mode})")
            return
        if mode not in (None, "none") and target is None:
            raise SpecError(self.node_at(name, "network-mode"), f"unknown network-mode '{mode}'",
                            "use host, none or container:NAME")
        cpath = ("containers", name)
        self.tr.set(cpath, {}, self.at(*npath), self.key_at(*npath))
        if kind == "ext-container" or target:   # a namespace of a container outside the lab
            self.tr.set(cpath + ("netns",), target or name, self.node_at(name, "network-mode") if target
                        else self.key_at(*npath))
            return
        if node.get("exec") and kind == "linux":
            self.tr.set(cpath + ("exec",), [str(c) for c in node["exec"]], self.node_at(name, "exec"))
        elif node.get("exec"):
            self.tr.ignore(f"exec of {kind} nodes (a network OS has its own CLI)", self.node_at(name, "exec"))
        if mode is None:
            self.tr.set(cpath + ("networks",), {}, self.key_at(*npath))
            self.tr.set(cpath + ("networks", self.mgmt), {}, self.key_at(*npath))
            self.tr.set(cpath + ("networks", self.mgmt, "ifname"), "eth0", self.key_at(*npath))
            for key in ("mgmt-ipv4", "mgmt_ipv4"):
                if node.get(key):
                    self.tr.set(cpath + ("networks", self.mgmt, "ipv4_address"), node[key], self.node_at(name, key))
            for key in ("mgmt-ipv6", "mgmt_ipv6"):
                if node.get(key):
                    self.tr.set(cpath + ("networks", self.mgmt, "ipv6_address"), node[key], self.node_at(name, key))
        dns = node.get("dns") or {}
        if dns.get("options"):
            self.tr.ignore("dns.options", self.node_at(name, "dns"))
        for key, target in (("servers", "dns"), ("search", "dns_search")):
            if dns.get(key):
                self.tr.set(cpath + (target,), list(dns[key]), self.node_at(name, "dns"))
        ports = []
        for i, entry in enumerate(node.get("ports") or []):
            ports += expand_port(entry, self.node_at(name, "ports"))
        if ports:
            self.tr.set(cpath + ("ports",), ports, self.node_at(name, "ports"))

    def bridge_network(self, name: str, kind: str) -> None:
        npath = ("topology", "nodes", name)
        if kind == "bridge" and existing_bridge(name):
            # containerlab's way: the lab's links become ports of the bridge made beforehand,
            # which netcompose uses but never changes or deletes.
            self.existing.add(name)
            self.tr.notes.append(f"bridge node {name}: the existing bridge {name} is used (never changed or deleted)")
            return
        path = ("networks", name)
        self.tr.set(path, {}, self.at(*npath), self.key_at(*npath))
        # A containerlab bridge is plain L2: nothing routed or masqueraded through the host.
        self.tr.set(path + ("internal",), True, self.key_at(*npath))
        if kind == "ovs-bridge":
            self.tr.set(path + ("driver",), "ovs", self.at(*npath, "kind"))
            self.tr.set(path + ("ovs",), {"bridge": name, "datapath_type": "netdev"}, self.key_at(*npath))
        else:
            self.tr.notes.append(f"bridge node {name}: no bridge {name} exists, so netcompose makes one of its own "
                                 "(named in its alias); its ports have netcompose's host-side names")

    # -- links ----------------------------------------------------------------------------
    def ifname(self, node: str, name: str, where: Position) -> str:
        """The Linux name of a node's interface: containerlab's per-kind mapping; names that
        are still no valid Linux name get the project's collision-free short form."""
        mapped = _KIND_NAMES.get(self.kinds.get(node, ""), lambda n: n)(str(name))
        if not re.fullmatch(IFNAME_PATTERN, mapped) or len(mapped.encode()) > 15:
            mapped = names.short_ifname(node, str(name))
        known = self.ifnames.setdefault((node, mapped), str(name))
        if known != str(name):
            raise SpecError(where, f"interfaces '{known}' and '{name}' of node '{node}' are both {mapped}",
                            "use one spelling per interface")
        return mapped

    def link(self, i: int, link: dict) -> None:
        path = ("topology", "links", i)
        kind = link.get("type")
        for key in ("vars", "labels"):
            if key in link:
                self.tr.ignore(f"links.{key}", self.key_at(*path, key))
        if kind is None:
            ends = link.get("endpoints") or []
            if len(ends) != 2:
                raise SpecError(self.at(*path, "endpoints"), "a link needs two endpoints", 'write ["a:e1-1", "b:eth1"]')
            parsed = [self.parse_end(end, self.at(*path, "endpoints", j)) for j, end in enumerate(ends)]
            self.wire(path, parsed, link)
            return
        if kind == "veth":
            ends = [self.extended_end(e, path + ("endpoints", j)) for j, e in enumerate(link.get("endpoints") or [])]
            if len(ends) != 2:
                raise SpecError(self.at(*path), "a veth link needs two endpoints", "list both ends")
            self.wire(path, ends, link)
        elif kind in ("host", "mgmt-net", "macvlan"):
            end = self.extended_end(link.get("endpoint"), path + ("endpoint",))
            other = (kind, str(link.get("host-interface") or ""), self.at(*path, "host-interface"), None)
            self.wire(path, [end, other], link)
        elif kind in ("vxlan", "vxlan-stitch"):
            self.vxlan(path, link)
        elif kind == "dummy":
            raise unsupported(self.at(*path, "type"), "type: dummy", "this kernel has no dummy module")
        else:
            raise unsupported(self.at(*path, "type"), f"link type {kind}",
                              "netcompose builds veth, host, mgmt-net, vxlan and macvlan links")

    def vxlan(self, path: tuple, link: dict) -> None:
        """The node's interface is the VXLAN device itself (containerlab's vxlan-stitch joins
        a veth to a host VXLAN device with tc: the node sees the same link)."""
        node, iface, where, end = self.extended_end(link.get("endpoint"), path + ("endpoint",))
        if node not in self.nodes or self.kinds[node] in _BRIDGES or self.kinds[node] == "host":
            raise SpecError(where, f"a vxlan endpoint must be a node with a sandbox, not '{node}'", "fix the node")
        node = self.owner(node, where)
        for key in ("remote", "vni"):
            if link.get(key) is None:
                raise SpecError(self.at(*path), f"a vxlan link needs {key}", f"add {key}:")
        port_key = "udp-port" if "udp-port" in link else "dst-port"
        vxlan = {"remote": link["remote"], "vni": link["vni"], "port": link.get(port_key, 4789)}
        if ":" in str(link["remote"]):
            raise unsupported(self.at(*path, "remote"), "an IPv6 vxlan remote", "the underlay is IPv4")
        lpath = ("links", len(self.tr.section("links", [], self.key_at("topology", "links"))))
        self.tr.set(lpath, {}, self.at(*path))
        self.tr.set(lpath + ("endpoints",), [f"{node}:{self.ifname(node, iface, where)}"], where)
        self.tr.set(lpath + ("vxlan",), vxlan, self.at(*path, "remote"))
        if end and end.get("mac"):
            self.tr.set(lpath + ("mac_addresses",), [end["mac"]], where)
        if link.get("mtu"):
            self.tr.set(lpath + ("mtu",), link["mtu"], self.at(*path, "mtu"))

    def macvlan(self, path: tuple, end: tuple, parent: tuple, link: dict) -> None:
        """A macvlan device in the node on an existing host interface (the parent)."""
        node, iface, where, spec = end
        if self.kinds.get(node) in (*_BRIDGES, "host", None) or node in ("mgmt-net", "macvlan", "host"):
            raise unsupported(where, f"a macvlan on '{node}'", "the other end must be a node with a sandbox")
        lpath = ("links", len(self.tr.section("links", [], self.key_at("topology", "links"))))
        self.tr.set(lpath, {}, self.at(*path))
        self.tr.set(lpath + ("endpoints",), [f"{node}:{self.ifname(node, iface, where)}"], where)
        self.tr.set(lpath + ("macvlan",), {"parent": parent[1], "mode": link.get("mode", "bridge")}, parent[2])
        if spec and spec.get("mac"):
            self.tr.set(lpath + ("mac_addresses",), [spec["mac"]], where)
        if link.get("mtu"):
            self.tr.set(lpath + ("mtu",), link["mtu"], self.at(*path, "mtu"))

    def parse_end(self, end: Any, where: Position) -> tuple[str, str, Position, dict | None]:
        node, sep, iface = str(end).partition(":")
        if not sep or not iface:
            raise SpecError(where, f"endpoint '{end}' is not NODE:INTERFACE", 'write it like "srl1:e1-1"')
        return node, iface, where, None

    def extended_end(self, end: Any, path: tuple) -> tuple[str, str, Position, dict | None]:
        if not isinstance(end, dict) or "node" not in end:
            if isinstance(end, str):
                return self.parse_end(end, self.at(*path))
            raise SpecError(self.at(*path), "an endpoint needs node and interface", "write {node: a, interface: eth1}")
        return str(end["node"]), str(end.get("interface") or ""), self.at(*path), end

    def owner(self, node: str, where: Position) -> str:
        """The node whose sandbox holds `node`'s interfaces (network-mode container:x)."""
        seen = [node]
        while node in self.shares:
            node = self.shares[node]
            if node == "host" or node in seen or node not in self.nodes:
                raise unsupported(where, f"a link to node '{seen[0]}' (network-mode of {seen[-1]})",
                                  "its interfaces would be in a sandbox netcompose does not build")
            seen.append(node)
        return node

    def wire(self, path: tuple, ends: list, link: dict) -> None:
        special = {"host", "mgmt-net", "macvlan"}
        ends = [(self.owner(node, where) if node in self.nodes else node, iface, where, end)
                for node, iface, where, end in ends]
        kinds = [self.kinds.get(node, node if node in special else None) for node, *_ in ends]
        for (node, iface, where, _), kind in zip(ends, kinds):
            if kind is None:
                raise SpecError(where, f"link endpoint names unknown node '{node}'",
                                f"use one of: {', '.join(self.nodes) or 'none'}")
        if "macvlan" in kinds:
            self.macvlan(path, ends[1 - kinds.index("macvlan")], ends[kinds.index("macvlan")], link)
            return
        attached = [j for j, kind in enumerate(kinds) if kind == "ovs-bridge"]
        hosts = [j for j, kind in enumerate(kinds) if kind in ("host", "mgmt-net", "bridge")]
        if len(attached) + len(hosts) == 2:
            raise unsupported(self.at(*path), "a link between two bridges or host ends", "one end must be a node")
        mtu = link.get("mtu")
        if attached:  # an OVS port of the bridge's network
            j = attached[0]
            node, iface, where, end = ends[1 - j]
            network = ends[j][0]
            epath = ("containers", node, "networks", network)
            if network in (self.tr.doc.data["containers"][node].get("networks") or {}):
                raise unsupported(where, f"a second link of node '{node}' to {network}",
                                  "a node has one endpoint per network")
            self.tr.doc.data["containers"][node].setdefault("networks", {})
            self.tr.set(epath, {}, where)
            self.tr.set(epath + ("ifname",), self.ifname(node, iface, where), where)
            self.ipv4(epath + ("ipv4_address",), end, where, plain=True)
            if end and end.get("mac"):
                self.tr.set(epath + ("mac_address",), end["mac"], where)
            self.tr.ignore("bridge port names (host side)", ends[j][2])
            return
        lpath = ("links", len(self.tr.section("links", [], self.key_at("topology", "links"))))
        self.tr.set(lpath, {}, self.at(*path))
        names_, macs = [], []
        for (node, iface, where, end), kind in zip(ends, kinds):
            if kind == "bridge" and node in self.existing:
                self.tr.set(lpath + ("host_bridge",), node, where)
            elif kind in ("mgmt-net", "bridge"):
                self.tr.set(lpath + ("network",), self.mgmt if kind == "mgmt-net" else node, where)
            if kind == "bridge":  # a port of the bridge: its host end is named like every host-side device
                self.tr.set(lpath + ("host_interface",),
                            names.host_ifname(self.tr.doc.data["name"], "port", f"{node}:{iface}"), where)
            elif kind in ("host", "mgmt-net"):
                if not re.fullmatch(IFNAME_PATTERN, iface) or len(iface.encode()) > 15:
                    short = names.short_ifname("host", iface)
                    self.tr.notes.append(f"host interface {iface} is named {short} (Linux names have at most 15 bytes)")
                    iface = short
                self.tr.set(lpath + ("host_interface",), iface, where)
            else:
                names_.append((f"{node}:{self.ifname(node, iface, where)}", where))
                macs.append(end.get("mac") if end else None)
        self.tr.set(lpath + ("endpoints",), [], self.at(*path))
        for j, (text, where) in enumerate(names_):
            self.tr.set(lpath + ("endpoints", j), text, where)
        if mtu:
            self.tr.set(lpath + ("mtu",), mtu, self.at(*path, "mtu"))
        if any(macs):
            self.tr.set(lpath + ("mac_addresses",), macs, self.at(*path))
        addresses = [end.get("ipv4") if end else None for *_, end in ends]
        if any(addresses):
            if not all(addresses) or hosts:
                raise unsupported(self.at(*path), "an address on one end only", "give both ends an ipv4 address")
            self.tr.set(lpath + ("addresses",), addresses, self.at(*path))
        addresses6 = [end.get("ipv6") if end else None for *_, end in ends]
        if any(addresses6):
            if not all(addresses6) or hosts:
                raise unsupported(self.at(*path), "an IPv6 address on one end only", "give both ends an ipv6 address")
            self.tr.set(lpath + ("addresses6" if any(addresses) else "addresses",), addresses6, self.at(*path))

    def ipv4(self, path: tuple, end: dict | None, where: Position, plain: bool) -> None:
        if end and end.get("ipv4"):
            self.tr.set(path, str(end["ipv4"]).partition("/")[0] if plain else end["ipv4"], where)


_GO_TEMPLATE = re.compile(r"\{\{.*?\}\}")


def translate(path: Path, env: dict[str, str], project: str | None = None) -> Translation:
    text = read_text(path)
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        match = _GO_TEMPLATE.search(code)
        if match:
            raise SpecError(Position(str(path), number, match.start() + 1), "Go templates are not rendered",
                            "render the topology first (as containerlab does) and pass the rendered file")
    doc = parse_yaml(text, str(path), dict(env), unset_is_empty=True)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("topology"), dict):
        raise SpecError(doc.where(()), "a containerlab topology needs topology: with nodes:", "add topology: nodes:")
    tr = Translation(Document({}, str(path)), [path])
    lab = doc.data.get("name")
    if not lab:
        raise SpecError(doc.where(()), "a containerlab topology needs name:", "add name: LAB")
    tr.set(("name",), project or project_name(str(lab), doc.data.get("prefix")), doc.where(("name",)))
    _Clab(doc, tr).run()
    return tr
