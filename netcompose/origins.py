"""origins: which element of the file each resource comes from.  Pure.

A plan speaks of kernel objects (`link:/shop-l73beops`); a user reads the file.  This maps
each resource, desired or observed, to a path into the document (`("containers", "db",
"networks", "back")`) from its attributes alone (namespace, interface, bridge), so the
planner stays generic and a deleted object is placed as well as a created one.  The path
gives the declaration's file:line:col through `Document.where`, and a label in the file's
words (`endpoint db → back`).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from .plan import SYMBOLS, changed, note
from .resources import HOST, Resource, mark_key

Path = tuple[Any, ...]


def declared_at(where: Any, path: Path) -> str | None:
    """The file:line:col that declares `path` (None for no path, or without `where`, the
    document's Document.where): a mapping's key where the path ends at one, else the value."""
    if not path or where is None:
        return None
    return str(where(path, key=isinstance(path[-1], str)))


class Origins:
    def __init__(self, resolved: Any, where: Any = None) -> None:
        """`where`: the document's path → file:line:col (Document.where)."""
        self.resolved, self.where = resolved, where
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
        # Declarations in the order of the document: one line of a template declares many.
        self.rank = {element: i for i, element in enumerate(
            [("networks", n) for n in resolved.networks] + [("containers", c) for c in resolved.containers]
            + [("links", i) for i in range(len(resolved.links))])}
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
        return self._removed(res)

    def _removed(self, res: Resource) -> Path:
        """What a container the file no longer declares leaves behind, placed under it by its
        sandbox's name (`<project>-<container>`): a label for the reader, never a proof of
        ownership (the plan acts on marked objects only)."""
        a = res.attrs
        prefix = f"{self.resolved.project}-"
        for ns in (a.get("ns"), a.get("peer_ns"), a.get("name") if res.kind == "netns" else None,
                   str(a.get("path", "")).rsplit("/", 1)[-1] if res.kind == "file" else None):
            if ns and ns != HOST and ns.startswith(prefix):
                return ("containers", ns[len(prefix):])
        return ()

    def source(self, path: Path) -> str | None:
        return declared_at(self.where, path)

    def rule_path(self, comment: str) -> Path:
        """The element of the file a firewall rule comes from, from its comment
        (`containers.web.firewall.egress[0] [92dd9090]`, see compile.firewall): names may
        hold dots, so the known names are matched, longest first."""
        text = re.sub(r" \[[0-9a-f]+\]$", "", comment)
        text = re.sub(r" \([^)]*\)$", "", text)
        for section, names in (("containers", self.resolved.containers), ("networks", self.resolved.networks)):
            for name in sorted(names, key=len, reverse=True):
                head = f"{section}.{name}"
                if text == head or text.startswith(head + "."):
                    return (section, name, *_dotted(text[len(head) + 1:]))
        if re.fullmatch(r"\w+(\[\d+\])*", text):
            return _dotted(text)
        return PROJECT_RULES.get(text, ())

    @staticmethod
    def _ovn_path(res: Resource) -> Path:
        """A Northbound row by the file element its marks name (see compile.ovn)."""
        if res.kind == "ovn_port_up":   # named after its logical port: nc/<project>/<container>/<network>
            container, network = res.attrs["name"].split("/")[2:4]
            return ("containers", container, "networks", network)
        ids = res.attrs.get("external_ids", {})
        container, network = ids.get(mark_key("container")), ids.get(mark_key("network"))
        if container and network:
            return ("containers", container, "networks", network)
        if container:
            return ("containers", container, "firewall")
        if network:
            return ("networks", network)
        return ("ovn",)

    def label(self, path: Path) -> str:
        match path:
            case ("containers", c) if c not in self.resolved.containers:
                return f"container {c} (no longer in the file)"
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


def _dotted(text: str) -> Path:
    """`firewall.egress[0]` → ("firewall", "egress", 0)."""
    path: list[Any] = []
    for part in filter(None, text.split(".")):
        name, *indexes = part.split("[")
        path += [name] + [int(i.rstrip("]")) for i in indexes]
    return tuple(path)


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
    import difflib   # only a plan that changes a file shows a diff
    return [line.rstrip("\n") for line in difflib.unified_diff(
        (before or "").splitlines(True), (after or "").splitlines(True), f"a{path}", f"b{path}", n=1)]


def annotate(actions: Iterable[Any], origins: Origins) -> None:
    """Set each action's `origin` (a path into the document) and `source` (file:line:col)."""
    for action in actions:
        action.origin = origins.path(action.resource)
        action.source = origins.source(action.origin)


# Rules no single element declares, placed where the file decides them: isolation between
# networks holds unless a policy says otherwise; what is published is under containers.
PROJECT_RULES = {"isolation between networks": ("networks",), "no unsolicited inbound": ("networks",),
                 "published ports": ("containers",)}
COLLAPSE_AFTER = 10   # more groups than this of one kind, all created (or all deleted): one line


def _rule_changes(before: dict | None, after: dict | None, origins: Origins) -> list[str]:
    """An nft table's change, rule by rule: each rule's comment names its element of the file."""
    before, after = before or {}, after or {}
    lines = []
    for chain in list(after) + [c for c in before if c not in after]:
        old, new = before.get(chain), after.get(chain)
        if old is None or new is None:
            shown = new or old
            lines.append(f"{'+' if old is None else '-'} chain {chain} (hook {shown['hook']}, "
                         f"policy {shown['policy']}, {len(shown['rules'])} rules)")
            continue
        for key in ("type", "hook", "prio", "policy"):
            if old.get(key) != new.get(key):
                lines.append(f"~ chain {chain}: {key} {old.get(key)} → {new.get(key)}")
        gone = [r for r in old["rules"] if r not in new["rules"]]
        made = [r for r in new["rules"] if r not in old["rules"]]
        for symbol, rules in (("-", gone), ("+", made)):
            for rule in rules:
                if rule is None:   # every rule of ours carries a comment naming its element
                    lines.append(f"{symbol} chain {chain}: a rule without a comment (not netcompose's: added by hand)")
                    continue
                source = origins.source(origins.rule_path(rule))
                lines.append(f"{symbol} chain {chain}: rule {rule}" + (f"  ({source})" if source else ""))
    return lines


def _line(action: Any, origins: Origins) -> list[str]:
    chains = action.kind == "nft_table" and "chains" in action.changes
    changes = {k: v for k, v in action.changes.items()
               if not (action.kind == "file" and k == "content") and not (chains and k == "chains")}
    lines = [f"{SYMBOLS[action.op]} {object_name(action.resource)}{changed(changes)}{note(action)}"]
    if action.kind == "file" and "content" in action.changes:
        before, after = action.changes["content"]
        lines += ["    " + d for d in file_diff(before, after, action.resource.attrs["path"])]
    if chains:
        lines += ["    " + d for d in _rule_changes(*action.changes["chains"], origins)]
    return lines


def _file_order(source: str | None) -> tuple[str, int, int]:
    """Declarations in the order of the file (a source is file:line:col); undeclared first."""
    if source is None:
        return ("", 0, 0)
    file, line, column = source.rsplit(":", 2)
    return (file, int(line), int(column))


def _document_order(origins: Origins, path: tuple, source: str | None) -> tuple:
    """The file's order; among the elements one template line declares, the document's."""
    return (*_file_order(source), origins.rank.get(path[:2], -1), len(path))


def render(actions: list[Any], origins: Origins, verbose: bool = False) -> Iterable[tuple[Any, str]]:
    """(action or None, line) pairs: a heading per declaring element of the file with its
    position, its kernel objects indented beneath; many like elements made or removed
    together are one counted line unless `verbose`."""
    groups: dict[tuple, list[Any]] = {}
    for action in actions:
        groups.setdefault(action.origin or (), []).append(action)
    groups = dict(sorted(groups.items(), key=lambda g: _document_order(origins, g[0], g[1][0].source)))
    # An element of the file (`container n7`) with the groups beneath it (its endpoints, sysctls).
    parts: dict[tuple, list[tuple]] = {}
    for path in groups:
        if len(path) >= 2:
            parts.setdefault(path[:2], []).append(path)
    collapsed: dict[tuple[str, str], list[tuple]] = {}
    if not verbose:
        for element, paths in parts.items():
            ops = {a.op for p in paths for a in groups[p]}
            if len(ops) == 1:
                collapsed.setdefault((element[0], ops.pop()), []).append(element)
        collapsed = {k: v for k, v in collapsed.items() if len(v) > COLLAPSE_AFTER}
    hidden = {path for elements in collapsed.values() for element in elements for path in parts[element]}
    for (section, op), elements in collapsed.items():
        names = [str(e[1]) for e in elements]
        on = list(dict.fromkeys(p[3] for e in elements for p in parts[e] if len(p) > 3 and p[2] == "networks"))
        where = f" on {', '.join(on[:5])}{', …' if len(on) > 5 else ''}" if on else ""
        objects = sum(len(groups[p]) for e in elements for p in parts[e])
        yield groups[parts[elements[0]][0]][0], (f"{SYMBOLS[op]} {len(elements)} {section} ({names[0]} … {names[-1]})"
                                                 f"{where}: {objects} kernel objects; --verbose lists them")
    for path, members in groups.items():
        if path in hidden:
            continue
        source = members[0].source
        yield None, origins.label(path) + (f"  ({source})" if source else "")
        for action in members:
            for line in _line(action, origins):
                yield action, "  " + line
