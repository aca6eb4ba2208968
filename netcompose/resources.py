"""The resource vocabulary shared by desired state (compile) and observed state (drivers).

A resource is plain data: a kind, a stable key, attributes, the keys it needs to exist
first (`deps`) and the keys whose removal removes it too (`parents`, e.g. a namespace
takes its interfaces with it).  Constructors below are the only way either side builds
resources, so both sides always agree on keys and dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

HOST = ""  # the `ns` of objects in the host (initial) namespace


class KindSpec(NamedTuple):   # immutable, like a frozen dataclass, and cheaper to define at start-up
    driver: str
    replace_on: tuple[str, ...] = ()   # changing any of these recreates the resource
    compare: tuple[str, ...] | None = None  # attrs diffed; None = every attr
    transactional: bool = False        # the driver applies a whole phase of this kind in one transaction
    ordered: bool = False              # the driver sequences dependencies within one batch itself
    # Attributes naming the object for people, when its key says more: a foreign object
    # with the same names as a desired one is a conflict even if its key differs (an nft
    # table made by hand in another family, with the project's table name).
    identity: tuple[str, ...] = ()
    # The kernel does not remove it with its parents (a process outlives its namespace's
    # mount): removing a parent removes it explicitly (see plan._busy_parents).
    outlives_parents: bool = False


@dataclass(eq=False)  # not frozen: frozen dataclasses construct 3x slower, and a run builds ~10k
class Resource:
    """One object of the shared vocabulary, desired (compiled) or observed (a driver's reading)."""

    kind: str
    key: str
    attrs: dict[str, Any]
    deps: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    owner: str | None = None      # observed: the project that owns it; None: someone else
    external: bool = False        # must exist; netcompose never creates or deletes it
    # Never diffed.  Observed: facts (ifindex, uuid), "conflict_hint" (how to clear a conflict,
    # where the driver knows better than "rename or remove it"), "incomplete" (half-seen: a
    # rollback never makes it again); desired: "missing" (what to do when an external
    # resource is not there).
    meta: dict[str, Any] = field(default_factory=dict)
    _zones: frozenset[str] | None = field(default=None, init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "attrs": self.attrs, "deps": list(self.deps),
                "parents": list(self.parents), "owner": self.owner, "external": self.external}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Resource":
        return cls(data["kind"], data["key"], data["attrs"], tuple(data["deps"]), tuple(data["parents"]),
                   data.get("owner"), data.get("external", False))

    @property
    def zones(self) -> frozenset[str]:
        # Cached by hand: functools.cached_property takes a lock per access before Python 3.12.
        if self._zones is None:
            self._zones = zones_of(self)
        return self._zones

    def with_owner(self, owner: str | None) -> "Resource":
        return Resource(self.kind, self.key, self.attrs, self.deps, self.parents, owner, self.external, self.meta)


KINDS: dict[str, KindSpec] = {
    "netns": KindSpec("netlink", ordered=True),
    "bridge": KindSpec("netlink", ordered=True),
    "veth": KindSpec("netlink", replace_on=("peer_ns", "peer_ifname"), ordered=True),
    "address": KindSpec("netlink", ordered=True),
    "route": KindSpec("netlink", replace_on=("metric",), ordered=True),
    "claimed_link": KindSpec("netlink", replace_on=("source",), ordered=True),
    "vxlan": KindSpec("netlink", replace_on=("vni", "remote", "port"), ordered=True),
    "macvlan": KindSpec("netlink", replace_on=("parent", "mode"), ordered=True),
    "link": KindSpec("netlink", ordered=True),   # observed only: a device of a kind we do not make
    "ovs_bridge": KindSpec("ovsdb", replace_on=("datapath_type",), transactional=True),
    "ovs_port": KindSpec("ovsdb", replace_on=("bridge", "type", "attached"), transactional=True),
    "nft_table": KindSpec("nftables", compare=("chains",), identity=("ns", "name")),
    "port_proxy": KindSpec("proxies", replace_on=("target", "target_port")),
    "qdisc": KindSpec("tc"),
    "file": KindSpec("files", ordered=True),     # applied one by one, in the order given
    "sysctl": KindSpec("files", ordered=True),
    "process": KindSpec("processes", compare=("argv", "env", "cwd", "user"), outlives_parents=True),
    "exec": KindSpec("execs"),
    # OVN Northbound rows (drivers/ovn_nb.py maps each kind to its table and columns), all
    # written in one transaction (a row moving to another holder is made anew there); and
    # the wait for ovn-controller to bind a logical port on this host (on its br-int port).
    "ovn_switch": KindSpec("ovn_nb", transactional=True),
    "ovn_switch_port": KindSpec("ovn_nb", replace_on=("parent",), transactional=True),
    "ovn_router": KindSpec("ovn_nb", transactional=True),
    "ovn_router_port": KindSpec("ovn_nb", replace_on=("parent",), transactional=True),
    "ovn_static_route": KindSpec("ovn_nb", replace_on=("parent",), transactional=True),
    "ovn_nat": KindSpec("ovn_nb", replace_on=("parent",), transactional=True),
    "ovn_load_balancer": KindSpec("ovn_nb", transactional=True),
    "ovn_port_group": KindSpec("ovn_nb", transactional=True),
    "ovn_acl": KindSpec("ovn_nb", replace_on=("parent",), transactional=True),
    "ovn_port_up": KindSpec("ovsdb"),
}


def register_kind(kind: str, spec: KindSpec) -> None:
    KINDS[kind] = spec


# ---- keys ------------------------------------------------------------------------------

def netns_key(ns: str) -> str:
    return f"netns:{ns}"


def link_key(ns: str, ifname: str) -> str:
    return f"link:{ns}/{ifname}"


def _ns_parents(ns: str, peer_ns: str = HOST) -> tuple[str, ...]:
    """The namespaces whose removal takes an object along: its own and its peer's (a veth
    end's), never the host's.  (Called for nearly every resource a run builds.)"""
    if peer_ns == HOST or peer_ns == ns:
        return () if ns == HOST else (f"netns:{ns}",)
    return (f"netns:{peer_ns}",) if ns == HOST else (f"netns:{ns}", f"netns:{peer_ns}")


# ---- constructors ----------------------------------------------------------------------

def netns(name: str, owner: str | None = None, external: bool = False, marker: str | None = None) -> Resource:
    return Resource("netns", netns_key(name), {"name": name, "marker": marker}, owner=owner, external=external)


def bridge(ifname: str, mtu: int, alias: str, owner: str | None = None) -> Resource:
    return Resource("bridge", link_key(HOST, ifname),
                    {"ns": HOST, "ifname": ifname, "mtu": mtu, "alias": alias, "up": True}, owner=owner)


def veth(ns: str, ifname: str, peer_ns: str, peer_ifname: str, *, mtu: int, alias: str, peer_alias: str,
         mac: str | None = None, peer_mac: str | None = None, master: str | None = None,
         tx_checksum: bool | None = None, owner: str | None = None) -> Resource:
    """A veth pair, keyed by its first end.  tx_checksum=False turns TX checksum offload
    off on both ends (the OVS userspace datapath forwards partial checksums as they are)."""
    parents = _ns_parents(ns, peer_ns)
    return Resource("veth", link_key(ns, ifname),
                    {"ns": ns, "ifname": ifname, "mtu": mtu, "mac": mac, "master": master, "alias": alias,
                     "up": True, "peer_ns": peer_ns, "peer_ifname": peer_ifname, "peer_mtu": mtu,
                     "peer_mac": peer_mac, "peer_alias": peer_alias, "peer_up": True, "tx_checksum": tx_checksum},
                    deps=parents + ((link_key(HOST, master),) if master else ()), parents=parents, owner=owner)


def vxlan(ns: str, ifname: str, *, vni: int, remote: str, port: int, mtu: int, alias: str,
          mac: str | None = None, owner: str | None = None) -> Resource:
    """A VXLAN device in a sandbox.  It is created from the host, so its UDP socket (the
    underlay, towards `remote`) stays in the host namespace, as containerlab's do."""
    return Resource("vxlan", link_key(ns, ifname),
                    {"ns": ns, "ifname": ifname, "vni": vni, "remote": remote, "port": port, "mtu": mtu,
                     "mac": mac, "alias": alias, "up": True},
                    deps=_ns_parents(ns), parents=_ns_parents(ns), owner=owner)


def macvlan(ns: str, ifname: str, *, parent: str, mode: str, mtu: int, alias: str, mac: str | None = None,
            owner: str | None = None) -> Resource:
    """A macvlan device in a sandbox on a host interface netcompose neither creates nor changes."""
    return Resource("macvlan", link_key(ns, ifname),
                    {"ns": ns, "ifname": ifname, "parent": parent, "mode": mode, "mtu": mtu, "mac": mac,
                     "alias": alias, "up": True},
                    deps=_ns_parents(ns) + (link_key(HOST, parent),), parents=_ns_parents(ns), owner=owner)


def host_device(ifname: str) -> Resource:
    """A host interface that must exist (a macvlan's parent): never created, changed or deleted."""
    return Resource("link", link_key(HOST, ifname), {"name": ifname, "ifname": ifname}, external=True)


def claimed_link(ns: str, ifname: str, source: str, *, mtu: int, alias: str, mac: str | None = None,
                 creator: str, owner: str | None = None) -> Resource:
    """A device another backend creates (an OVS internal port) that netcompose configures,
    moving it from the host into `ns` under `ifname` when they differ."""
    return Resource("claimed_link", link_key(ns, ifname),
                    {"ns": ns, "ifname": ifname, "source": source, "mtu": mtu, "mac": mac, "alias": alias,
                     "up": True}, deps=(creator,) + _ns_parents(ns), parents=(creator,) + _ns_parents(ns),
                    owner=owner)


def ovs_bridge(name: str, datapath_type: str, fail_mode: str, project: str | None,
               owner: str | None = None, external: bool = False) -> Resource:
    return Resource("ovs_bridge", f"ovsbr:{name}", {"name": name, "datapath_type": datapath_type,
                                                     "fail_mode": fail_mode, "project": project},
                    owner=owner, external=external)


def ovs_port(name: str, bridge: str, *, type: str, tag: int | None, trunks: list[int] | None,
             external_ids: dict[str, str], attached: bool = True, owner: str | None = None) -> Resource:
    """A port of type "" attaches the host device of its name (a veth end), which must exist.
    `attached` (observed): False once that device is gone, when ovs-vswitchd has let go of
    it; the port is then made anew, as a device made again under its name is not picked up."""
    bridge_key = f"ovsbr:{bridge}"
    device = (link_key(HOST, name),) if type == "" else ()
    return Resource("ovs_port", f"ovsport:{name}",
                    {"name": name, "bridge": bridge, "type": type, "tag": tag, "trunks": sorted(trunks or []),
                     "external_ids": external_ids, "attached": attached},
                    deps=(bridge_key,) + device, parents=(bridge_key,), owner=owner)


def address(ns: str, ifname: str, ip: str, prefixlen: int, link: str, owner: str | None = None) -> Resource:
    return Resource("address", f"addr:{ns}/{ifname}/{ip}/{prefixlen}",
                    {"ns": ns, "ifname": ifname, "address": ip, "prefixlen": prefixlen},
                    deps=(link,), parents=(link,) + _ns_parents(ns), owner=owner)


def route(ns: str, dst: str, via: str | None, dev: str | None, metric: int | None, link: str | None,
          gateway_address: str | None = None, owner: str | None = None) -> Resource:
    # The kernel drops a route when its device goes, and when the address that makes
    # its gateway reachable goes.
    parents = ((link,) if link else ()) + ((gateway_address,) if gateway_address else ()) + _ns_parents(ns)
    return Resource("route", f"route:{ns}/{dst}", {"ns": ns, "dst": dst, "via": via, "dev": dev, "metric": metric},
                    deps=parents, parents=parents, owner=owner)


def file(path: str, content: str | None = None, owner: str | None = None, link_to: str | None = None,
         deps: tuple[str, ...] = ()) -> Resource:
    """A file with `content`, or a symbolic link to `link_to`."""
    return Resource("file", f"file:{path}", {"path": path, "content": content, "link_to": link_to},
                    deps=deps, owner=owner)


def sysctl(ns: str, name: str, value: str, owner: str | None = None, device: str | None = None,
           restore: bool = False) -> Resource:
    """A per-device sysctl (net.ipv4.conf.DEV.*) needs the device, when netcompose makes it:
    `device` names its resource when that is not keyed by the device's own name (the
    sandbox end of a veth is part of the pair keyed by its host end).  `restore`: in a
    namespace netcompose adopted, the value found first is recorded and written back when
    the file no longer sets it (our own namespaces take theirs along)."""
    value = " ".join(str(value).split())  # the kernel prints multi-value sysctls with tabs
    parts = name.split(".")
    if device is None and len(parts) > 4 and parts[1] in ("ipv4", "ipv6") and parts[2] == "conf" \
            and parts[3] not in ("all", "default", "lo"):
        device = link_key(ns, parts[3])
    attrs = {"ns": ns, "name": name, "value": value}
    if restore:
        attrs["restore"] = True
    return Resource("sysctl", f"sysctl:{ns}/{name}", attrs, deps=_ns_parents(ns) + ((device,) if device else ()),
                    owner=owner)


def sysctl_device(res: Resource) -> str | None:
    """The device resource a sysctl waits for, if any."""
    return next((dep for dep in res.deps if dep.startswith("link:")), None)


def port_proxy(listen: str, port: int, protocol: str, target: str, target_port: int,
               owner: str | None = None) -> Resource:
    """A userland relay of a host port to a container (ports published on [::1])."""
    return Resource("port_proxy", f"proxy:{protocol}/[{listen}]:{port}",
                    {"listen": listen, "port": port, "protocol": protocol, "target": target,
                     "target_port": target_port}, owner=owner)


def nft_table(ns: str, family: str, name: str, chains: dict[str, Any], rules: dict[str, list] | None = None,
              deps: tuple[str, ...] = (), owner: str | None = None) -> Resource:
    """A whole nftables table, replaced atomically.  `chains` holds each chain's hook,
    priority, policy and rule comments (origin + hash), which is what gets compared;
    `rules` holds the expressions to write (desired side only)."""
    return Resource("nft_table", f"nft:{ns}/{family}/{name}",
                    {"ns": ns, "family": family, "name": name, "chains": chains, "rules": rules},
                    deps=_ns_parents(ns) + deps, parents=_ns_parents(ns), owner=owner)


def process_key(ns: str) -> str:
    return f"process:{ns}"


def process(ns: str, container: str, argv: list[str], env: dict[str, str], cwd: str, user: str, *,
            restart: str = "no", ready: dict[str, Any] | None = None, deps: tuple[str, ...] = (),
            owner: str | None = None) -> Resource:
    """A container's declared process.  Changing argv, env, cwd or user restarts it; the
    restart policy and ready probe matter only to `watch` and `up --wait`."""
    return Resource("process", process_key(ns),
                    {"ns": ns, "container": container, "argv": argv, "env": env, "cwd": cwd, "user": user,
                     "restart": restart, "ready": ready},
                    deps=_ns_parents(ns) + deps, parents=_ns_parents(ns), owner=owner)


def exec_commands(ns: str, container: str, commands: list[list[str]], deps: tuple[str, ...] = (),
                  owner: str | None = None) -> Resource:
    """Commands run once inside a sandbox after its interfaces are up (containerlab's
    `exec:`), again when the list changes or the sandbox is new."""
    return Resource("exec", f"exec:{ns}", {"ns": ns, "container": container, "commands": commands},
                    deps=_ns_parents(ns) + deps, parents=_ns_parents(ns), owner=owner)


def tenant(ns: str, pid: int, argv: list[str]) -> Resource:
    """A process netcompose did not declare, found in one of its sandboxes: never ours to
    manage, but stopped when its sandbox is removed."""
    return Resource("process", f"{process_key(ns)}/pid/{pid}", {"ns": ns, "pid": pid, "argv": argv},
                    deps=_ns_parents(ns), parents=_ns_parents(ns))


def qdisc(ns: str, ifname: str, link: str, *, rate: int | None = None, burst: int | None = None,
          limit: int | None = None, netem: dict[str, Any] | None = None, owner: str | None = None) -> Resource:
    """The root qdisc netcompose puts on a device it owns (link conditions): tbf for a rate,
    netem under it (or alone) for delay and the percentages.  Changing a value changes it in
    place; the device, and whatever uses it, stay."""
    return Resource("qdisc", f"qdisc:{ns}/{ifname}",
                    {"ns": ns, "ifname": ifname, "rate": rate, "burst": burst, "limit": limit, "netem": netem},
                    deps=(link,) + _ns_parents(ns), parents=(link,) + _ns_parents(ns), owner=owner)


# ---- OVN Northbound rows ---------------------------------------------------------------------

def mark_key(field: str) -> str:
    """The external_ids key of one of our marks on an OVSDB row, of OVS or of the OVN
    Northbound DB: compile writes them, drivers and plan annotations read them back."""
    return f"netcompose-{field}"


NB_MARK, NB_NAME = mark_key("project"), mark_key("name")   # external_ids of every row we write


def nb_key(kind: str, name: str) -> str:
    return f"nb:{kind}/{name}"


def nb_row(kind: str, name: str, columns: dict[str, Any], project: str, *, parent: tuple[str, str] | None = None,
           deps: tuple[str, ...] = (), owner: str | None = None) -> Resource:
    """A Northbound row of `kind` named `name` (unique per kind: a row's name column, or its
    mark for tables without one), its other columns as the driver writes them, and the
    mark of `project` in external_ids.  `parent` (kind, name): the row that holds this one
    (a switch its ports), which takes it along when it goes."""
    parents = (nb_key(*parent),) if parent else ()
    attrs = {"name": name, **({"parent": parent[1]} if parent else {}), **columns,
             "external_ids": {**columns.get("external_ids", {}), NB_MARK: project, NB_NAME: name}}
    return Resource(kind, nb_key(kind, name), attrs, deps=parents + deps, parents=parents, owner=owner)


def ovn_port_up(name: str, host: str | None, deps: tuple[str, ...], owner: str | None = None) -> Resource:
    """Logical switch port `name` is bound here: ovn-controller has claimed it and installed
    its flows (external_ids:ovn-installed on its br-int Interface).  A wait, never a write."""
    return Resource("ovn_port_up", f"ovnup:{name}", {"name": name, "host": host or ""}, deps=deps, parents=deps,
                    owner=owner)


# ---- zones: where an observer looks to see a resource -------------------------------------

def _place(ns: str, ifname: str | None) -> str:
    if ns != HOST:
        return f"ns:{ns}"
    return f"dev:{ifname}" if ifname else "host"


def zones_of(res: Resource) -> frozenset[str]:
    """The places a focused observation must read to see `res`: "ns:NAME" (everything in
    one namespace, and its /etc/netns folder), "dev:NAME" (one host device), "host" (host
    routes and sysctls), "ovs", "nft" (host tables) or "file:PATH" (one file: an edit that
    rewrites the hosts files of a network's members need not read their namespaces)."""
    a = res.attrs
    kind = res.kind
    if kind == "netns":
        return frozenset((f"ns:{a['name']}",))
    if kind == "ovn_port_up":
        return frozenset(("ovs",))
    if kind.startswith("ovn_"):
        return frozenset(("nb",))
    if kind in ("ovs_bridge", "ovs_port"):
        return frozenset(("ovs",))
    if kind == "file":
        return frozenset((f"file:{a['path']}",))
    if kind == "nft_table":
        return frozenset((_place(a["ns"], None) if a["ns"] != HOST else "nft",))
    if kind == "route":
        return frozenset((_place(a["ns"], a["dev"]),))
    found = {_place(a.get("ns", HOST), a.get("ifname"))}
    if a.get("peer_ns") is not None:
        found.add(_place(a["peer_ns"], a["peer_ifname"]))
    if kind == "macvlan":  # its parent's index is read from the host
        found.add(f"dev:{a['parent']}")
    if kind == "claimed_link":  # an OVS internal port, moved in from the host
        found |= {"ovs", f"dev:{a['source']}"}
    return frozenset(found)
