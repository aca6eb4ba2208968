"""origins: which element of the file each resource comes from.  Pure.

A plan speaks of kernel objects (`link:/shop-l73beops`); a user reads the file.  This maps
each resource, desired or observed, to a path into the document (`("containers", "db",
"networks", "back")`) from its attributes alone (namespace, interface, bridge), so the
planner stays generic and a deleted object is placed as well as a created one.  The path
gives the declaration's file:line:col through `Document.where`, and a label in the file's
words (`endpoint db → back`).
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from .resources import HOST, Resource

Path = tuple[Any, ...]


class Origins:
    def __init__(self, resolved: Any) -> None:
        self.resolved = resolved
        self.container_of = {c.netns: c.name for c in resolved.containers.values()}
        self.interfaces: dict[tuple[str, str], Path] = {}
        self.bridges: dict[str, Path] = {}
        for net in resolved.networks.values():
            self.bridges[net.bridge] = ("networks", net.name)
        for c in resolved.containers.values():
            for ep in c.endpoints:
                path = ("containers", c.name, "networks", ep.network)
                self.interfaces[(c.netns, ep.ifname)] = path
                self.interfaces[(HOST, ep.host_ifname)] = path
        for i, link in enumerate(resolved.links):
            for container, ifname in (link.a, link.b):
                ns = resolved.containers[container].netns if container is not None else HOST
                self.interfaces[(ns, ifname)] = ("links", i)

    def path(self, res: Resource) -> Path:
        attrs = res.attrs
        if res.kind.startswith("ovn_"):
            return self._ovn_path(res)
        ns = attrs.get("ns", HOST)
        ifname = attrs.get("ifname") or attrs.get("dev") or (attrs.get("name") if res.kind == "ovs_port" else None)
        if res.kind == "sysctl" and str(attrs.get("name", "")).count(".") > 3:
            ifname = attrs["name"].split(".")[3]
        if ifname is not None:
            if (ns, ifname) in self.interfaces:
                return self.interfaces[(ns, ifname)]
            if ns == HOST and ifname in self.bridges:
                return self.bridges[ifname]
        if res.kind == "ovs_bridge":
            owners = [p for name, p in self.bridges.items() if name == attrs.get("name")]
            if owners:
                return owners[0]
        if res.kind == "route" and ns == HOST:
            return ("networks",)
        container = self.container_of.get(ns) or self.container_of.get(attrs.get("name", ""))
        if res.kind == "file":
            container = self.container_of.get(str(attrs.get("path", "")).rsplit("/", 1)[-1])
            if container is None:
                return ("containers",)
        if container is not None:
            tail = {"nft_table": ("firewall",), "process": ("command",), "exec": ("exec",),
                    "route": ("routes",), "sysctl": ("sysctls",)}.get(res.kind, ())
            return ("containers", container, *tail)
        if res.kind == "nft_table" and self.resolved.topology.policies:
            return ("policies",)
        return ()

    @staticmethod
    def _ovn_path(res: Resource) -> Path:
        """A Northbound row by the file element its marks name (see compile.ovn)."""
        if res.kind == "ovn_port_up":   # named after its logical port: nc/<project>/<container>/<network>
            container, network = res.attrs["name"].split("/")[2:4]
            return ("containers", container, "networks", network)
        ids = res.attrs.get("external_ids", {})
        container, network = ids.get("netcompose-container"), ids.get("netcompose-network")
        if container and network:
            return ("containers", container, "networks", network)
        if container:
            return ("containers", container, "firewall")
        if network:
            return ("networks", network)
        return ("ovn",)

    def label(self, path: Path) -> str:
        match path:
            case ("networks", name, *_):
                return f"network {name}"
            case ("containers", c, "networks", net, *_):
                return f"endpoint {c} → {net}"
            case ("containers", c, "command", *_):
                return f"process of {c}"
            case ("containers", c, key, *_):
                return f"{key} of {c}"
            case ("containers", c):
                return f"container {c}"
            case ("links", i, *_) if i < len(self.resolved.links):
                link = self.resolved.links[i]
                b = f"{link.b[0]}:{link.b[1]}" if link.b[0] is not None else f"host:{link.b[1]}"
                return f"link {link.a[0]}:{link.a[1]} ↔ {b}"
            case ("containers",):
                return "hosts files"
            case ("networks",):
                return "networks (host routes)"
            case ("policies", *_):
                return "policies"
            case ("ovn", *_):
                return "OVN logical router and policies"
        return "project"


def object_name(res: Resource) -> str:
    """The kernel object as a user finds it (`ip link`, `ip route`, `nft list tables`)."""
    a = res.attrs
    where = f" in {a['ns']}" if a.get("ns") else ""
    if res.kind == "address":
        return f"address {a['address']}/{a['prefixlen']} on {a['ifname']}{where}"
    if res.kind == "route":
        via = f" via {a['via']}" if a.get("via") else ""
        return f"route {a['dst']}{via} dev {a.get('dev')}{where}"
    if res.kind == "file":
        return f"file {a['path']}"
    if res.kind == "nft_table":
        return f"nft table {a.get('family')} {a.get('name')}{where}"
    if res.kind == "process":
        return f"process {a.get('container', '')}{where}".replace("  ", " ")
    if res.kind == "ovn_acl":
        return f"ovn_acl {a['name'].split('/', 2)[-1]} ({a.get('direction')} {a.get('priority')}: {a.get('match')} " \
               f"→ {a.get('action')})"
    name = a.get("ifname") or a.get("name") or res.key
    return f"{res.kind} {name}{where}"


def file_diff(before: str | None, after: str | None, path: str) -> list[str]:
    return [line.rstrip("\n") for line in difflib.unified_diff(
        (before or "").splitlines(True), (after or "").splitlines(True), f"a{path}", f"b{path}", n=1)]


def annotate(actions: Iterable[Any], origins: Origins, where: Any) -> None:
    """Set each action's `origin` (a path into the document) and `source` (file:line:col)."""
    for action in actions:
        action.origin = origins.path(action.resource)
        action.source = str(where(action.origin, key=isinstance(action.origin[-1], str))) if action.origin else None


SYMBOLS = {"create": "+", "update": "~", "delete": "-"}
COLLAPSE_AFTER = 10   # more groups than this of one kind, all created (or all deleted): one line


def _line(action: Any) -> list[str]:
    changes = {k: v for k, v in action.changes.items() if not (action.kind == "file" and k == "content")}
    extra = " (" + ", ".join(f"{k}: {b!r} → {c!r}" for k, (b, c) in changes.items()) + ")" if changes else ""
    note = " (removed with its parent)" if action.implicit else ""
    note += f" [{action.cause}]" if action.cause != "config" else ""
    lines = [f"{SYMBOLS[action.op]} {object_name(action.resource)}{extra}{note}"]
    if action.kind == "file" and "content" in action.changes:
        before, after = action.changes["content"]
        lines += ["    " + d for d in file_diff(before, after, action.resource.attrs["path"])]
    return lines


def _file_order(source: str | None) -> tuple[str, int, int]:
    """Declarations in the order of the file (a source is file:line:col); undeclared first."""
    if source is None:
        return ("", 0, 0)
    file, line, column = source.rsplit(":", 2)
    return (file, int(line), int(column))


def render(actions: list[Any], origins: Origins, verbose: bool = False) -> Iterable[tuple[Any, str]]:
    """(action or None, line) pairs: a heading per declaring element of the file with its
    position, its kernel objects indented beneath; many like elements made or removed
    together are one counted line unless `verbose`."""
    groups: dict[tuple, list[Any]] = {}
    for action in actions:
        groups.setdefault(action.origin or (), []).append(action)
    groups = dict(sorted(groups.items(), key=lambda g: _file_order(g[1][0].source)))
    collapsed: dict[tuple[str, str], list[tuple]] = {}
    if not verbose:
        for path, members in groups.items():
            ops = {a.op for a in members}
            if len(path) == 2 and len(ops) == 1:
                collapsed.setdefault((path[0], ops.pop()), []).append(path)
        collapsed = {k: v for k, v in collapsed.items() if len(v) > COLLAPSE_AFTER}
    hidden = {path for paths in collapsed.values() for path in paths}
    for (section, op), paths in collapsed.items():
        names = [str(p[1]) for p in paths]
        objects = sum(len(groups[p]) for p in paths)
        yield groups[paths[0]][0], (f"{SYMBOLS[op]} {len(paths)} {section} ({names[0]} … {names[-1]}): "
                                    f"{objects} kernel objects; --verbose lists them")
    for path, members in groups.items():
        if path in hidden:
            continue
        source = members[0].source
        yield None, origins.label(path) + (f"  ({source})" if source else "")
        for action in members:
            for line in _line(action):
                yield action, "  " + line
