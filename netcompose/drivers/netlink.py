"""The kernel driver: namespaces, links, addresses and routes over rtnetlink.

One netlink socket per namespace, opened by entering the namespace in-process; a batch
of actions goes out in rounds of pipelined requests per socket (see NetlinkDriver.apply).
"""
from __future__ import annotations

import errno
import os
import resource
import socket
import threading
from collections import defaultdict
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Callable, NamedTuple

from .. import names
from .. import resources as r
from ..plan import Action
from ..resources import HOST, Resource
from . import Outcome, Scope, ethtool, namespaces, rtnl


def _ip_int(address: str) -> int:
    return int.from_bytes(rtnl.pack_ip(address), "big")


def _prefix(address: str, prefixlen: int) -> tuple[int, int, int]:
    """(family bits, network, mask) of address/prefixlen, to test which address reaches a gateway."""
    bits = 128 if ":" in address else 32
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1)
    return bits, _ip_int(address) & mask, mask


class Namespaces:
    """Open namespace fds and netlink sockets, one each per namespace, for one run."""

    def __init__(self) -> None:
        # Two descriptors per namespace (its fd and a socket): a lab of thousands outgrows
        # a 1024 soft limit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard != resource.RLIM_INFINITY:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.fds: dict[str, int] = {}
        self.socks: dict[str, rtnl.RtnlSocket] = {HOST: rtnl.RtnlSocket()}
        self.inets: dict[str, socket.socket] = {}
        self.nft_socks: dict[str, rtnl.RtnlSocket] = {}
        self._opening = threading.RLock()  # drivers of one plan level run in parallel threads

    @staticmethod
    def path(ns: str) -> str:
        return ns if ns.startswith("/") else namespaces.netns_path(ns)

    def exists(self, ns: str) -> bool:
        """A real namespace (a create that died before its mount leaves a bare file)."""
        try:
            return ns == HOST or namespaces.is_namespace(self.path(ns))
        except FileNotFoundError:
            return False

    def fd(self, ns: str) -> int:
        fd = self.fds.get(ns)
        if fd is None:
            with self._opening:
                fd = self.fds.get(ns)
                if fd is None:
                    fd = self.fds[ns] = namespaces.open_fd(self.path(ns))
        return fd

    def sock(self, ns: str) -> rtnl.RtnlSocket:
        return self._cached(self.socks, ns, socket.NETLINK_ROUTE)

    def nft_sock(self, ns: str) -> rtnl.RtnlSocket:
        """A NETLINK_NETFILTER socket in `ns`."""
        return self._cached(self.nft_socks, ns, rtnl.NETLINK_NETFILTER)

    def _cached(self, table: dict[str, rtnl.RtnlSocket], ns: str, protocol: int) -> rtnl.RtnlSocket:
        sock = table.get(ns)
        if sock is None:
            with self._opening:
                sock = table.get(ns)
                if sock is None:
                    sock = table[ns] = self._open(ns, protocol)
        return sock

    def open_socks(self, names: list[str]) -> None:
        """Open the netlink sockets of many namespaces in one pass (see namespaces.made_in_each);
        one that vanished is left to `sock`, which then fails for its caller."""
        with self._opening:
            fds = {}
            for ns in names:
                if ns != HOST and ns not in self.socks:
                    try:
                        fds[ns] = self.fd(ns)
                    except OSError:
                        continue
            self.socks.update(namespaces.made_in_each(fds, rtnl.RtnlSocket))

    def _open(self, ns: str, protocol: int) -> rtnl.RtnlSocket:
        if ns == HOST:
            return rtnl.RtnlSocket(protocol)
        with namespaces.entered(self.fd(ns)):
            return rtnl.RtnlSocket(protocol)

    def inet(self, ns: str) -> socket.socket:
        """A plain socket in `ns`, for ioctls."""
        with self._opening:
            if ns not in self.inets:
                if ns == HOST:
                    self.inets[ns] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                else:
                    with namespaces.entered(self.fd(ns)):
                        self.inets[ns] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            return self.inets[ns]

    def forget(self, ns: str) -> None:
        if ns in self.nft_socks:
            self.nft_socks.pop(ns).close()
        if ns in self.inets:
            self.inets.pop(ns).close()
        if ns in self.socks and ns != HOST:
            self.socks.pop(ns).close()
        if ns in self.fds:
            os.close(self.fds.pop(ns))

    def close(self) -> None:
        for ns in list(self.fds) + list(self.socks) + list(self.inets) + list(self.nft_socks):
            self.forget(ns)
        self.socks[HOST].close()


# What a delete of a link, address or route answers when the object is already gone.
GONE = frozenset((errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL))

# Alias role of a claimed device → role whose host_ifname names the device before the move.
CLAIMED_ROLES = {"gw": "gw", "ep-int": "ep"}
# Roles of veth ends inside a sandbox (named by the file, so only the kind can be checked).
SANDBOX_VETH_ROLES = ("ep-peer", "link", "link-peer")


def proven_mark(project: str, ns: str, link: rtnl.Link) -> tuple[str, str, str] | None:
    """The link's alias as (project, role, ident) when it proves the link is `project`'s:
    the alias alone could be copied by hand or by another tool, so its role must fit the
    device's kind, and a host device must carry the very name netcompose derives from
    the alias (a SHA-256 of project, role and name).  Anything else is not ours."""
    mark = names.parse_alias(link.alias)
    if mark is None or mark[0] != project:
        return None
    role, ident = mark[1], mark[2]
    claimed = link.kind not in ("veth", "bridge")
    if ns == HOST and role == "link":  # a host link's end: its name, given by the file, ends the alias
        return mark if link.kind == "veth" and ident.endswith(f"=host:{link.name}") else None
    if ns == HOST:
        named = {"net": "net", "ep": "ep", **CLAIMED_ROLES}.get(role)
        fits = {"net": link.kind == "bridge", "ep": link.kind == "veth"}.get(role, claimed)
        return mark if named and fits and names.derived(project, named, ident, link.name) else None
    if role in SANDBOX_VETH_ROLES:
        return mark if link.kind == "veth" else None
    if role in ("vxlan", "macvlan"):
        return mark if link.kind == role else None
    return mark if role == "ep-int" and claimed else None


def namespace_owner(ns: str, lo_alias: str | None) -> str | None:
    """The project whose mark the namespace's loopback carries, when the namespace bears
    the name that mark gives it (`<project>-<container>`)."""
    mark = names.parse_alias(lo_alias)
    return mark[0] if mark and mark[1] == "ns" and names.netns_name(mark[0], mark[2]) == ns else None


def read_namespace_owner(nss: Namespaces, ns: str) -> str | None:
    lo = nss.sock(ns).get_links(names=["lo"])
    return namespace_owner(ns, lo[0].alias if lo else None)


class NetlinkDriver:
    name = "netlink"

    def __init__(self, nss: Namespaces) -> None:
        self.nss = nss
        self.index: dict[str, dict[str, int]] = {}
        self.fresh: set[str] = set()   # namespaces this run created
        self.host_space: list[tuple[IPv4Network | IPv6Network, str]] = []
        # Addresses without our protocol on links of ours, by the key an address of ours
        # would have: one the file wants is a conflict (see observe_named).
        self.unmarked: dict[str, tuple[str, str, str, int]] = {}

    def close(self) -> None:
        pass

    def observe_named(self, wanted: list[Resource], project: str) -> list[Resource]:
        """Unmarked addresses where the file wants one of ours: someone's `ip addr add`, or
        an address an older netcompose added before addresses carried its mark."""
        out = []
        for res in wanted:
            if res.kind == "address" and (found := self.unmarked.get(res.key)) is not None:
                ns, ifname, ip, prefixlen = found
                command = f"ip{'' if ns == HOST else f' -n {ns}'} addr del {ip}/{prefixlen} dev {ifname}"
                address = r.address(ns, ifname, ip, prefixlen, res.deps[0])
                address.meta["conflict_hint"] = (
                    "it has no owner mark (older netcompose versions added addresses without one); if it is "
                    f"this project's, remove it (`{command}`), or the whole lab with `netcompose down`, and run "
                    "`netcompose up` again")
                out.append(address)
        return out

    # ---- observe -------------------------------------------------------------------
    def _address_found(self, out: list[Resource], ns: str, ifname: str, item: rtnl.Addr, link: str,
                       project: str) -> Resource | None:
        """An address on a link of ours: ours when it carries our protocol, else noted."""
        if item.proto == rtnl.RTPROT_NETCOMPOSE:
            out.append(addr := r.address(ns, ifname, item.address, item.prefixlen, link, owner=project))
            return addr
        self.unmarked[f"addr:{ns}/{ifname}/{item.address}/{item.prefixlen}"] = (ns, ifname, item.address, item.prefixlen)
        return None

    def read_host_space(self, project: str, addrs: list[rtnl.Addr] | None = None,
                        known: dict[int, rtnl.Link] | None = None) -> list[tuple[IPv4Network | IPv6Network, str]]:
        """Address space the host uses that is not `project`'s, each with who holds it: the
        host's routes (but its default routes) and addresses, of both families, and other projects' subnets
        (the addresses on links another project marked).  Subnets must avoid all of it.
        `addrs` and `known` (links by index): the host's, when the caller has just read them."""
        host = self.nss.sock(HOST)
        routes = [rt for rt in host.routes() if rt.protocol != rtnl.RTPROT_NETCOMPOSE and not rt.dst.endswith("/0")]
        addrs = host.addrs() if addrs is None else addrs
        known = known or {}
        indexes = sorted({rt.oif for rt in routes if rt.oif} | {a.index for a in addrs})
        links = {i: known[i] for i in indexes if i in known}
        links.update((link.index, link) for link in host.get_links(indexes=[i for i in indexes if i not in links]))

        def holder(index: int | None) -> str | None:
            link = links.get(index) if index else None
            if link is not None and proven_mark(project, HOST, link):
                return None
            mark = names.parse_alias(link.alias) if link else None
            if mark is None or mark[0] == project:
                return f"the host (dev {link.name})" if link else "the host"
            return f"project '{mark[0]}' (dev {link.name})"
        space = []
        for rt in routes:
            if (who := holder(rt.oif)) is not None:
                space.append((ip_network(rt.dst, strict=False), f"a route of {who}"))
        for a in addrs:
            if (who := holder(a.index)) is not None:
                space.append((ip_network(f"{a.address}/{a.prefixlen}", strict=False), f"an address of {who}"))
        self.host_space = space
        return space

    def candidate_namespaces(self, scope: Scope) -> list[str]:
        if scope.focus is not None:
            named = [z[3:] for z in scope.focus if z.startswith("ns:")]
        else:
            prefix = f"{scope.project}-"
            named = [n for n in namespaces.list_named() if n.startswith(prefix)] + list(scope.namespaces)
        return sorted(n for n in set(named) if self.nss.exists(n))

    @staticmethod
    def _host_links(host: rtnl.RtnlSocket, scope: Scope) -> list[rtnl.Link]:
        if scope.focus is None:
            return host.links()
        links = host.get_links(names=sorted(z[4:] for z in scope.focus if z.startswith("dev:")))
        known = {link.index for link in links}
        masters = {link.master for link in links if link.master and link.master not in known}
        return links + host.get_links(indexes=sorted(masters))

    def observe(self, scope: Scope) -> list[Resource]:
        project = scope.project
        self.unmarked.clear()
        out: list[Resource] = []
        ends: dict[tuple[str, str], dict] = {}     # (role, ident) → facts about one veth end
        on_links: list[tuple[str, str, object]] = []  # (ns, ifname, addr-or-route) to attach to links
        host = self.nss.sock(HOST)
        host_links = self._host_links(host, scope)
        if scope.focus is None:
            self.index[HOST] = {link.name: link.index for link in host_links}
        else:  # a partial view: refresh only the names we asked for
            table = self.index.setdefault(HOST, {})
            for zone in scope.focus:
                if zone.startswith("dev:"):
                    table.pop(zone[4:], None)
            table.update((link.name, link.index) for link in host_links)
        by_index = {link.index: link for link in host_links}
        carriers: dict[int, Resource] = {}   # our host links that may carry gateway addresses
        for link in host_links:
            mark = proven_mark(project, HOST, link)
            ours = mark is not None
            if not ours and link.name not in scope.host_ifnames:
                continue
            other = names.parse_alias(link.alias)  # another project's mark, proven only by conflict
            owner = project if ours else (other[0] if other and other[0] != project else None)
            if link.kind == "veth" and ours:
                ends[(mark[1], mark[2])] = {"ns": HOST, "link": link, "master": by_index.get(link.master)}
            elif ours and mark[1] in CLAIMED_ROLES:
                claimed = self._claimed(HOST, link, scope, mark)
                carriers[link.index] = claimed
                out.append(claimed)
            elif link.kind == "bridge":
                res = r.bridge(link.name, link.mtu, link.alias or "", owner=owner)
                res.attrs["up"] = link.up
                if owner == project:
                    carriers[link.index] = res
                out.append(res)
            else:  # someone else's interface with a name we want: the planner reports the conflict
                out.append(self._unmarked(HOST, link, owner))
        addrs = host.addrs()
        if scope.focus is None:   # (what a full plan compiles against; an edit reads it before it compiles)
            self.read_host_space(project, addrs, by_index)
        for addr in addrs:
            if addr.index in carriers:
                link = carriers[addr.index]
                self._address_found(out, HOST, link.attrs["ifname"], addr, link.key, project)
        candidates = self.candidate_namespaces(scope)
        self.nss.open_socks(candidates)
        for ns in candidates:
            out.extend(self._observe_namespace(ns, project, scope, ends, on_links))
        veths = self._pair_veths(ends, project, complete=scope.focus is None)
        out.extend(veths)
        link_of = {}
        for v in veths:
            link_of[(v.attrs["ns"], v.attrs["ifname"])] = v.key
            link_of[(v.attrs["peer_ns"], v.attrs["peer_ifname"])] = v.key
        # (family bits, net, mask, key)
        on_device: dict[tuple[str, str], list[tuple[int, int, int, str]]] = defaultdict(list)
        for ns, ifname, item in on_links:
            if isinstance(item, rtnl.Addr):
                link = link_of.get((ns, ifname), r.link_key(ns, ifname))
                if (addr := self._address_found(out, ns, ifname, item, link, project)) is not None:
                    on_device[(ns, ifname)].append((*_prefix(item.address, item.prefixlen), addr.key))
        for ns, ifname, item in on_links:
            if isinstance(item, rtnl.Route):
                link = link_of.get((ns, ifname), r.link_key(ns, ifname)) if ifname else None
                via = _ip_int(item.gateway) if item.gateway else None
                bits = 128 if item.gateway and ":" in item.gateway else 32
                reach = next((key for family, net, mask, key in on_device.get((ns, ifname), ())
                              if via is not None and family == bits and via & mask == net), None)
                out.append(r.route(ns, item.dst, item.gateway, ifname, item.metric, link=link,
                                   gateway_address=reach, owner=project))
        return out

    def _observe_namespace(self, ns: str, project: str, scope: Scope, ends: dict,
                           on_links: list) -> list[Resource]:
        try:
            sock = self.nss.sock(ns)
            links = sock.links()
        except OSError:
            return []  # vanished while we looked
        self.index[ns] = {link.name: link.index for link in links}
        lo = next((link for link in links if link.name == "lo"), None)
        owner = namespace_owner(ns, lo.alias if lo else None)
        found = [r.netns(ns, owner=owner, marker=lo.alias if lo else None)]
        if owner != project and ns not in scope.namespaces:
            return []
        ours: dict[int, str] = {}
        for link in links:
            m = proven_mark(project, ns, link)
            if m is None:
                if link.name != "lo":  # a name we may want, held by someone else (or by a crashed run)
                    other = names.parse_alias(link.alias)
                    found.append(self._unmarked(ns, link, other[0] if other and other[0] != project else None))
                continue
            if link.kind == "veth":
                ends[(m[1], m[2])] = {"ns": ns, "link": link, "master": None}
                ours[link.index] = link.name
            elif link.kind == "vxlan" and link.vxlan is not None:
                vni, remote, port = link.vxlan
                found.append(r.vxlan(ns, link.name, vni=vni, remote=remote, port=port, mtu=link.mtu,
                                     alias=link.alias or "", mac=link.mac, owner=project))
                found[-1].attrs["up"] = link.up
                ours[link.index] = link.name
            elif link.kind == "macvlan" and link.macvlan_mode is not None:
                parent = next((n for n, i in self.index.get(HOST, {}).items() if i == link.peer_index), None)
                found.append(r.macvlan(ns, link.name, parent=parent, mode=link.macvlan_mode, mtu=link.mtu,
                                       alias=link.alias or "", mac=link.mac, owner=project))
                found[-1].attrs["up"] = link.up
                ours[link.index] = link.name
            elif m[1] in CLAIMED_ROLES:
                found.append(self._claimed(ns, link, scope, m))
                ours[link.index] = link.name
        if ours:  # addresses matter only on links of ours: a sandbox has one, mostly
            addrs = sock.addrs(next(iter(ours))) if len(ours) == 1 else sock.addrs()
            on_links.extend((ns, ours[a.index], a) for a in addrs if a.index in ours)
        names_by_index = {link.index: link.name for link in links}
        # In an adopted namespace, routes of others are read too: one with a destination the
        # file wants is a conflict, never replaced.
        for rt in sock.routes(0 if owner != project else rtnl.RTPROT_NETCOMPOSE):
            if rt.protocol == rtnl.RTPROT_NETCOMPOSE:
                on_links.append((ns, names_by_index.get(rt.oif), rt))
            else:
                found.append(r.route(ns, rt.dst, rt.gateway, names_by_index.get(rt.oif), rt.metric, link=None))
        return found

    @staticmethod
    def _unmarked(ns: str, link: rtnl.Link, owner: str | None) -> Resource:
        """A link without our mark: a conflict when the file wants its name, unless the
        journal says a crashed run made it (then it is replaced; a veth's far end is unknown)."""
        if link.kind == "veth":
            res = r.veth(ns, link.name, None, None, mtu=link.mtu, alias=link.alias, peer_alias=None, owner=owner)
            res.meta["incomplete"] = True
            return res
        if link.kind == "bridge" and ns == HOST:
            res = r.bridge(link.name, link.mtu, link.alias or "", owner=owner)
            res.attrs["up"] = link.up
            return res
        return Resource("link", r.link_key(ns, link.name), {"ns": ns, "ifname": link.name}, owner=owner)

    @staticmethod
    def _claimed(ns: str, link: rtnl.Link, scope: Scope, mark: tuple[str, str, str]) -> Resource:
        project, pair = scope.project, (CLAIMED_ROLES[mark[1]], mark[2])
        source = scope.renamed.get(pair) or names.host_ifname(project, *pair)
        res = r.claimed_link(ns, link.name, source, mtu=link.mtu, mac=link.mac, alias=link.alias or "",
                             creator=f"ovsport:{source}", owner=project)
        res.attrs["up"] = link.up
        return res

    def _pair_veths(self, ends: dict, project: str, complete: bool) -> list[Resource]:
        out = []
        for (role, ident), a in ends.items():
            if role.endswith("-peer"):
                # Its first end lost its mark (seen only by a full observation: a focused one
                # may not have looked where the first end is).
                if complete and (role.removesuffix("-peer"), ident) not in ends:
                    orphan = r.veth(a["ns"], a["link"].name, None, None, mtu=a["link"].mtu, alias=a["link"].alias,
                                    peer_alias=None, owner=project)
                    orphan.meta["incomplete"] = True
                    out.append(orphan)
                continue
            b = ends.get((role + "-peer", ident))
            la, lb = a["link"], b["link"] if b else None
            # Without its marked peer (a crash between creating and marking it), the pair's
            # far end is unknown: the planner replaces it, rollback cannot recreate it.
            res = r.veth(a["ns"], la.name, b["ns"] if b else None, lb.name if lb else None,
                         mtu=la.mtu, alias=la.alias, peer_alias=lb.alias if lb else None, mac=la.mac,
                         peer_mac=lb.mac if lb else None, master=a["master"].name if a["master"] else None,
                         owner=project)
            res.attrs.update(up=la.up, peer_mtu=lb.mtu if lb else None, peer_up=lb.up if lb else None)
            if la.master is None and lb is not None and role == "ep":  # OVS endpoints: offload matters
                res.attrs["tx_checksum"] = (ethtool.tx_checksum(self.nss.inet(a["ns"]), la.name)
                                            or ethtool.tx_checksum(self.nss.inet(b["ns"]), lb.name))
            res.meta.update(ifindex=la.index, peer_ifindex=lb.index if lb else None, incomplete=lb is None)
            out.append(res)
        return out

    # ---- apply ---------------------------------------------------------------------
    def ifindex(self, ns: str, ifname: str) -> int:
        table = self.index.get(ns)
        if table is None or ifname not in table:
            table = self.index[ns] = {link.name: link.index for link in self.nss.sock(ns).links()}
        if ifname not in table:
            raise LookupError(f"no interface {ifname} in {'the host' if ns == HOST else 'namespace ' + ns}")
        return table[ifname]

    def _predict_index(self, ns: str, ifname: str) -> None:
        """In a namespace created by this run, nothing else adds devices and the kernel numbers
        them in sequence (lo is 1): knowing the index saves dumping the namespace again."""
        if ns in self.fresh:
            table = self.index[ns]
            table[ifname] = max(table.values()) + 1

    def apply(self, actions: list[Action]) -> Outcome:
        """Send a batch (in dependency order, possibly several plan levels) in rounds.

        Requests to one socket are processed in order, so a request may share a round with
        what it depends on when both go to the same socket and it names its device by name,
        or lives in a namespace created by this run (whose indexes are predicted).  Anything
        else waits for the next round, which is built only after the previous one is acked.
        """
        outcome = Outcome()
        fresh = self._fresh_after(actions)
        rounds: dict[int, list[tuple[str, Step]]] = defaultdict(list)
        placed: dict[str, list[tuple[int, Step]]] = {}    # key → its non-trailing steps
        trailing: list[tuple[str, Step, int]] = []
        last_round: dict[str | None, int] = defaultdict(int)
        for action in actions:
            before = [p for k in self._waits_on(action, actions) for p in placed.get(k, ())]
            mine: list[tuple[int, Step]] = []
            for step in self._steps(action):
                rnd = max((r + self._gap(prev, step, fresh) for r, prev in before + mine), default=0)
                if step.trailing:
                    trailing.append((action.key, step, rnd))
                    continue
                mine.append((rnd, step))
                rounds[rnd].append((action.key, step))
                last_round[step.ns] = max(last_round[step.ns], rnd)
            placed[action.key] = mine
        for key, step, rnd in trailing:  # nothing waits on these: ride along with the socket's last round
            rounds[max(rnd, last_round[step.ns])].append((key, step))
        order = {a.key: i for i, a in enumerate(actions)}
        deleting = {a.key for a in actions if a.op == "delete"}
        for rnd in sorted(rounds):
            self._run_round(sorted(rounds[rnd], key=lambda item: order[item[0]]), fresh, deleting, outcome)
        for action in actions:
            a = action.resource.attrs
            if action.op != "delete" and a.get("tx_checksum") is False and action.key not in outcome.errors:
                try:
                    ethtool.set_tx_checksum(self.nss.inet(a["ns"]), a["ifname"], False)
                    ethtool.set_tx_checksum(self.nss.inet(a["peer_ns"]), a["peer_ifname"], False)
                except OSError as exc:
                    outcome.errors[action.key] = f"turning TX checksum offload off: {exc.strerror}"
        return outcome

    def _run_round(self, items: list[tuple[str, "Step"]], fresh: set[str], deleting: set[str],
                   outcome: Outcome) -> None:
        by_sock: dict[str, list[tuple[str, rtnl.Request]]] = defaultdict(list)
        for key, step in items:
            if key in outcome.errors:
                continue
            try:
                request = step.build(fresh)
            except (OSError, LookupError) as exc:
                outcome.errors[key] = str(exc)
                continue
            except Exception as exc:  # e.g. a value the wire format cannot carry: this action fails
                outcome.errors[key] = f"{type(exc).__name__}: {exc}"
                continue
            if request is not None:
                by_sock[step.ns].append((key, request))
        self.nss.open_socks(list(by_sock))
        for ns, batch in by_sock.items():
            try:
                codes = self.nss.sock(ns).execute([q for _, q in batch])
            except OSError as exc:
                codes = [exc.errno or 1] * len(batch)
            for (key, _), code in zip(batch, codes):
                if code in GONE and key in deleting:
                    continue  # already gone (with its namespace, or by hand): what a delete wants
                if code and key not in outcome.errors:
                    outcome.errors[key] = rtnl.strerror(code)

    @staticmethod
    def _gap(prev: "Step", step: "Step", fresh: set[str]) -> int:
        """Rounds between a step and one it must follow."""
        if prev.ns is None or (prev.ns == step.ns and (step.by_name or step.ns in fresh)):
            return 0
        return 1

    @staticmethod
    def _waits_on(action: Action, batch: list[Action]) -> list[str]:
        if action.op != "delete":
            return list(action.resource.deps)
        # Deletes run dependents first.
        return [a.key for a in batch if a.op == "delete" and action.key in a.observed.deps]

    def _fresh_after(self, actions: list[Action]) -> set[str]:
        """Namespaces whose device indexes can be predicted through this batch.

        Prediction holds only while every device enters a fresh namespace through the host
        socket, in order; anything else (p2p wires, moved OVS ports) falls back to a dump.
        """
        fresh = set(self.fresh) | {a.resource.attrs["name"] for a in actions
                                   if a.kind == "netns" and a.op == "create"}
        for action in actions:
            a = action.resource.attrs
            if action.op == "create" and (action.kind in ("claimed_link", "vxlan", "macvlan") or
                                          (action.kind == "veth" and a["ns"] != HOST)):
                for ns in (a["ns"], a.get("peer_ns")):
                    if ns in fresh:
                        fresh.discard(ns)
                        self.fresh.discard(ns)
                        self.index.pop(ns, None)
        return fresh

    def _steps(self, action: Action):
        res = action.resource
        a = res.attrs
        op = action.op
        if res.kind == "netns":
            name = a["name"]
            if op == "create":
                def create(fresh: set[str]) -> None:
                    namespaces.create(name, a["marker"])
                    self.index[name] = {"lo": 1}
                    if name in fresh:
                        self.fresh.add(name)
                yield Step(None, create)
            if op != "delete":  # the loopback alias marks the namespace as ours
                yield Step(name, lambda _: rtnl.set_link("lo", rtnl.link_attrs(alias=a["marker"]), up=True),
                           by_name=True, trailing=True)
            else:
                def delete(_: set[str]) -> None:
                    self.fresh.discard(name)
                    self.nss.forget(name)
                    self.index.pop(name, None)
                    namespaces.delete(name)
                yield Step(None, delete)
            return
        if res.kind in ("bridge", "veth", "link"):
            yield from self._link_steps(action)
        elif res.kind == "claimed_link":
            yield from self._claimed_steps(action)
        elif res.kind == "vxlan":  # sent through the host socket: its UDP socket stays in the host
            yield from self._made_from_host(action, lambda own: rtnl.new_vxlan(own, a["vni"], a["remote"], a["port"]))
        elif res.kind == "macvlan":
            yield from self._made_from_host(action, lambda own: rtnl.new_macvlan(
                own, self.ifindex(HOST, a["parent"]), a["mode"]))
        elif res.kind == "address":
            make = rtnl.new_addr if op == "create" else rtnl.del_addr
            yield Step(a["ns"], lambda _: make(self.ifindex(a["ns"], a["ifname"]), a["address"], a["prefixlen"]))
        elif res.kind == "route":
            def route(_: set[str]) -> rtnl.Request:
                oif = self.ifindex(a["ns"], a["dev"]) if a["dev"] else None
                if op == "delete":
                    return rtnl.del_route(a["dst"], oif, a["via"], a["metric"])
                # Only our own route is replaced in place: a create never takes over another's.
                make = rtnl.new_route if op == "create" else rtnl.replace_route
                return make(a["dst"], oif, a["via"], a["metric"])
            yield Step(a["ns"], route)

    def _made_from_host(self, action: Action, make: Callable[[bytes], rtnl.Request]):
        """A device created by a request to the host socket straight into its sandbox (it
        keeps its tie to the host: a VXLAN's underlay socket, a macvlan's parent)."""
        a = action.resource.attrs
        ns, name = a["ns"], a["ifname"]
        if action.op == "delete":
            yield Step(ns, lambda _: rtnl.del_link(name), by_name=True)
            return
        if action.op == "create":
            def create(_: set[str]) -> rtnl.Request:
                self.index.get(ns, {}).pop(name, None)
                return make(rtnl.link_attrs(name=name, mtu=a["mtu"], mac=a.get("mac"),
                                            netns_fd=self.nss.fd(ns) if ns != HOST else None))
            yield Step(HOST, create)
            yield Step(ns, lambda _: rtnl.no_ipv6_autoconf(name), by_name=True)
        settings = {k: a[k] for k in ("mtu", "mac", "alias") if action.op == "create" and k != "mac"
                    or k in action.changes}
        yield Step(ns, lambda _: rtnl.set_link(name, rtnl.link_attrs(**settings), up=a["up"]), by_name=True)

    def _claimed_steps(self, action: Action):
        a = action.resource.attrs
        if action.op == "delete":
            return  # the device goes with the OVS port that created it
        ns, name = a["ns"], a["ifname"]
        settings = {k: a[k] for k in ("mtu", "mac", "alias") if action.op == "create" or k in action.changes}
        settings = {k: v for k, v in settings.items() if v is not None}
        if action.op == "create" and (ns != HOST or a["source"] != name):
            def move(_: set[str]) -> rtnl.Request:
                index = self.ifindex(HOST, a["source"])
                self.index[HOST].pop(a["source"], None)
                self.index.get(ns, {}).pop(name, None)
                # Move and rename in one request; addresses are set later, from inside.
                return rtnl.Request(rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(index) + rtnl.link_attrs(
                    name=name, netns_fd=self.nss.fd(ns) if ns != HOST else None))
            yield Step(HOST, move)
        if action.op == "create":  # as for our veths: no IPv6 autoconfiguration before it comes up
            yield Step(ns, lambda _: rtnl.no_ipv6_autoconf(name), by_name=True)
        yield Step(ns, lambda _: rtnl.set_link(name, rtnl.link_attrs(**settings), up=a["up"]), by_name=True)

    def _link_steps(self, action: Action):
        a = action.resource.attrs
        ns, name = a["ns"], a["ifname"]

        def master() -> int | None:
            return self.ifindex(HOST, a["master"]) if a.get("master") else None

        def forget_indexes() -> None:
            # Creating or deleting a pair changes names in both namespaces.
            self.index.get(ns, {}).pop(name, None)
            if a.get("peer_ns") is not None:
                self.index.get(a["peer_ns"], {}).pop(a["peer_ifname"], None)

        if action.op == "delete":
            def delete(_: set[str]) -> rtnl.Request:
                forget_indexes()
                return rtnl.del_link(name)
            yield Step(ns, delete, by_name=True)
            return
        if action.op == "create":
            def create(_: set[str]) -> rtnl.Request:
                forget_indexes()
                own = rtnl.link_attrs(name=name, mtu=a["mtu"], mac=a.get("mac"), master=master())
                if action.resource.kind == "bridge":
                    return rtnl.new_link("bridge", own, up=False)
                peer = rtnl.link_attrs(name=a["peer_ifname"], mtu=a["peer_mtu"], mac=a.get("peer_mac"),
                                       netns_fd=self.nss.fd(a["peer_ns"]) if a["peer_ns"] != ns else None)
                self._predict_index(a["peer_ns"], a["peer_ifname"])
                return rtnl.new_veth(own, peer, up=False)
            yield Step(ns, create)
            # Every link of ours comes up only after IPv6 autoconfiguration is off (see
            # no_ipv6_autoconf): no link-local address left `tentative` by DAD when `up` returns.
            if action.resource.kind == "bridge":
                yield Step(ns, lambda _: rtnl.no_ipv6_autoconf(name), by_name=True)
                yield Step(ns, lambda _: rtnl.set_link(name, rtnl.link_attrs(alias=a["alias"]), up=a["up"]),
                           by_name=True)
                return
            for end, prefix in ((ns, ""), (a["peer_ns"], "peer_")):
                ifname, alias, up = a[f"{prefix}ifname"], a[f"{prefix}alias"], a[f"{prefix}up"]
                yield Step(end, lambda _, i=ifname: rtnl.no_ipv6_autoconf(i), by_name=True)
                yield Step(end, lambda _, i=ifname, al=alias, u=up: rtnl.set_link(i, rtnl.link_attrs(alias=al), up=u),
                           by_name=True)
            return
        changed = action.changes
        own = {k: a[k] for k in ("mtu", "mac", "alias") if k in changed}
        if own or "master" in changed or "up" in changed:
            yield Step(ns, lambda _: rtnl.set_link(
                name, rtnl.link_attrs(master=master() if "master" in changed else None, **own),
                up=a["up"] if "up" in changed else None), by_name="master" not in changed)
        peer = {k.removeprefix("peer_"): a[k] for k in ("peer_mtu", "peer_mac", "peer_alias") if k in changed}
        if peer or "peer_up" in changed:
            yield Step(a["peer_ns"], lambda _: rtnl.set_link(a["peer_ifname"], rtnl.link_attrs(**peer),
                                                             up=a["peer_up"] if "peer_up" in changed else None),
                       by_name=True)


class Step(NamedTuple):
    """One request of an action, built only when its round comes (indexes are known then)."""
    ns: str | None                 # the socket's namespace; None: done in-process when built
    build: Callable[[set[str]], rtnl.Request | None]
    by_name: bool = False          # names its device, so needs no index from an earlier request
    trailing: bool = False         # nothing waits on it
