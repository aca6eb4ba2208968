"""A small rtnetlink codec and a pipelining socket.

pyroute2 decodes every attribute of every message; observing 1000 namespaces that way
costs ~10x the kernel floor.  This module builds the few request types netcompose sends
and decodes only the attributes the planner compares.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass

# Constants from <linux/netlink.h> and <linux/rtnetlink.h> (stable kernel ABI).
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELNEIGH, RTM_GETNEIGH = 29, 30
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_EXT_MASK = 16, 18, 20, 28, 29
IFLA_LINK_NETNSID = 37
RTM_GETNSID, NETNSA_NSID = 90, 1
RTEXT_FILTER_SKIP_STATS = 1 << 3   # the planner needs no counters; skipping them halves a link dump
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_PORT = 1, 2, 15
IFLA_MACVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_PROTO = 1, 2, 8, 11   # IFA_PROTO: Linux 5.18+
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
NDA_DST = 1
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
IFF_UP = 1
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6


def family_of(address: str) -> int:
    return AF_INET6 if ":" in address else AF_INET


def pack_ip(address: str) -> bytes:
    return socket.inet_pton(family_of(address), address)


def unpack_ip(family: int, raw: bytes | memoryview) -> str:
    return socket.inet_ntop(family, bytes(raw))
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTN_UNICAST = 1
# Routes netcompose adds carry this protocol number: it marks them as ours.
RTPROT_NETCOMPOSE = 157
NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 10, 11, 12
SOL_NETLINK = 270

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")   # family, 3 pad bytes, ifindex, state, flags, type
_RTA = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    size = _RTA.size + len(payload)
    return _RTA.pack(size, kind) + payload + b"\0" * (_align(size) - size)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def parse_attrs(data: bytes | memoryview, offset: int, end: int,
                wanted: frozenset[int] | None = None) -> dict[int, memoryview]:
    """Attributes by type; with `wanted`, only those (a link carries dozens the planner ignores)."""
    found: dict[int, memoryview] = {}
    view = memoryview(data)
    unpack = _RTA.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(view, offset)
        if size < 4:
            break
        kind &= 0x3FFF
        if wanted is None or kind in wanted:
            found[kind] = view[offset + 4: offset + size]
        offset += (size + 3) & ~3
    return found


def _cstr(value: memoryview | None) -> str | None:
    return None if value is None else bytes(value).split(b"\0", 1)[0].decode()


def _u32(value: memoryview | None) -> int | None:
    return None if value is None else struct.unpack_from("=I", value)[0]


def mac_str(value: bytes | memoryview | None) -> str | None:
    return None if value is None else bytes(value).hex(":")


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


# ---- requests -----------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    type: int
    flags: int
    body: bytes


def get_nsid(nsid: int) -> Request:
    """Look a namespace up by its id: fails (ENOENT) once nothing holds it any more, even
    while the kernel has not yet freed it."""
    return Request(RTM_GETNSID, 0, struct.pack("=B3x", socket.AF_UNSPEC) + attr(NETNSA_NSID, struct.pack("=i", nsid)))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(0, 0, index, flags, change)


def link_attrs(name: str | None = None, mtu: int | None = None, mac: str | None = None,
               alias: str | None = None, master: int | None = None,
               netns_fd: int | None = None) -> bytes:
    parts = []
    if name is not None:
        parts.append(attr_str(IFLA_IFNAME, name))
    if mtu is not None:
        parts.append(attr_u32(IFLA_MTU, mtu))
    if mac is not None:
        parts.append(attr(IFLA_ADDRESS, mac_bytes(mac)))
    if alias is not None:
        parts.append(attr(IFLA_IFALIAS, alias.encode()))
    if master is not None:
        parts.append(attr_u32(IFLA_MASTER, master))
    if netns_fd is not None:
        parts.append(attr_u32(IFLA_NET_NS_FD, netns_fd))
    return b"".join(parts)


def new_link(kind: str, attrs: bytes, up: bool = True, info_data: bytes = b"") -> Request:
    linkinfo = attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, kind)
                    + (attr(IFLA_INFO_DATA, info_data) if info_data else b""))
    flags = IFF_UP if up else 0
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                   ifinfo(0, flags, IFF_UP) + attrs + linkinfo)


def new_veth(attrs: bytes, peer_attrs: bytes, up: bool = True) -> Request:
    # The kernel opens the peer before the pair is linked, so the peer cannot be
    # created up (ENOTCONN); it is brought up by a later request in its namespace.
    peer = attr(VETH_INFO_PEER, ifinfo() + peer_attrs)
    return new_link("veth", attrs, up, peer)


def new_vxlan(attrs: bytes, vni: int, remote: str, port: int) -> Request:
    data = (attr_u32(IFLA_VXLAN_ID, vni) + attr(IFLA_VXLAN_GROUP, socket.inet_aton(remote))
            + attr(IFLA_VXLAN_PORT, struct.pack("!H", port)))
    return new_link("vxlan", attrs, up=False, info_data=data)


def new_macvlan(attrs: bytes, parent_index: int, mode: str) -> Request:
    return new_link("macvlan", attrs + attr_u32(IFLA_LINK, parent_index), up=False,
                    info_data=attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode]))


def set_link(name: str, attrs: bytes = b"", up: bool | None = None) -> Request:
    change = 0 if up is None else IFF_UP
    flags = IFF_UP if up else 0
    return Request(RTM_NEWLINK, 0, ifinfo(0, flags, change) + attr_str(IFLA_IFNAME, name) + attrs)


IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1


def no_ipv6_autoconf(name: str) -> Request:
    """No IPv6 link-local address on `name` (set while down): without it the device sends
    no DAD, router solicitations or MLD reports, which on a shared bridge every other port
    would receive.  IPv6 itself stays enabled."""
    mode = attr(IFLA_INET6_ADDR_GEN_MODE, struct.pack("=B", IN6_ADDR_GEN_MODE_NONE))
    return set_link(name, attr(IFLA_AF_SPEC, attr(AF_INET6, mode)))


def del_link(name: str) -> Request:
    return Request(RTM_DELLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name))


def _addr_body(index: int, address: str, prefixlen: int) -> bytes:
    family, packed = family_of(address), pack_ip(address)
    if family == AF_INET:
        return (_IFADDRMSG.pack(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed))
    # IPv6: no Duplicate Address Detection, so the address is usable (not `tentative`) at once;
    # netcompose's own allocation keeps addresses unique on its networks.
    return (_IFADDRMSG.pack(AF_INET6, prefixlen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_ADDRESS, packed) + attr_u32(IFA_FLAGS, IFA_F_NODAD))


def new_addr(index: int, address: str, prefixlen: int) -> Request:
    # Marked as ours like our routes: an address someone adds beside it (a lab's own
    # `ip addr add`, an `exec:` command) is not ours to remove.
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _addr_body(index, address, prefixlen)
                   + attr(IFA_PROTO, struct.pack("=B", RTPROT_NETCOMPOSE)))


def del_addr(index: int, address: str, prefixlen: int) -> Request:
    return Request(RTM_DELADDR, 0, _addr_body(index, address, prefixlen))


def _route_body(dst: str, oif: int | None, via: str | None, metric: int | None) -> bytes:
    net, _, plen = dst.partition("/")
    dst_len = int(plen)
    family = family_of(net)
    # IPv6 routes have no scope; an IPv4 route without a gateway is on-link.
    scope = RT_SCOPE_UNIVERSE if via or family == AF_INET6 else RT_SCOPE_LINK
    body = _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_NETCOMPOSE, scope, RTN_UNICAST, 0)
    if dst_len:
        body += attr(RTA_DST, pack_ip(net))
    if via:
        body += attr(RTA_GATEWAY, pack_ip(via))
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    if metric is not None:
        body += attr_u32(RTA_PRIORITY, metric)
    return body


def del_neighbour(index: int, address: str) -> Request:
    return Request(RTM_DELNEIGH, 0, _NDMSG.pack(family_of(address), index, 0, 0, 0) + attr(NDA_DST, pack_ip(address)))


def new_route(dst: str, oif: int | None, via: str | None, metric: int | None = None) -> Request:
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, _route_body(dst, oif, via, metric))


def replace_route(dst: str, oif: int | None, via: str | None, metric: int | None = None) -> Request:
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, _route_body(dst, oif, via, metric))


def del_route(dst: str, oif: int | None, via: str | None, metric: int | None = None) -> Request:
    return Request(RTM_DELROUTE, 0, _route_body(dst, oif, via, metric))


# ---- decoded dump rows -----------------------------------------------------------------

@dataclass
class Link:
    index: int
    name: str
    kind: str | None
    mtu: int
    mac: str | None
    up: bool
    master: int | None
    alias: str | None
    peer_index: int | None
    vxlan: tuple[int, str, int] | None = None   # (vni, remote, port) of a VXLAN device
    link_netnsid: int | None = None   # the peer's namespace, by its id in this one (veths)
    macvlan_mode: str | None = None             # of a macvlan device (its parent: peer_index)


@dataclass
class Addr:
    index: int
    address: str
    prefixlen: int
    proto: int = 0      # who added it (IFA_PROTO); ours: RTPROT_NETCOMPOSE


@dataclass
class Neighbour:
    index: int
    address: str
    state: int      # NUD_* bits


@dataclass
class Route:
    dst: str
    gateway: str | None
    oif: int | None
    protocol: int
    metric: int | None


_LINK_ATTRS = frozenset((IFLA_IFNAME, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_MTU, IFLA_ADDRESS, IFLA_MASTER, IFLA_LINK,
                         IFLA_LINK_NETNSID))


def _decode_link(msg: memoryview) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg, 0)
    attrs = parse_attrs(msg, _IFINFOMSG.size, len(msg), _LINK_ATTRS)
    kind = vxlan = macvlan_mode = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        parts = parse_attrs(info, 0, len(info))
        kind = _cstr(parts.get(IFLA_INFO_KIND))
        if kind == "macvlan" and IFLA_INFO_DATA in parts:
            data = parts[IFLA_INFO_DATA]
            mode = _u32(parse_attrs(data, 0, len(data)).get(IFLA_MACVLAN_MODE))
            macvlan_mode = next((name for name, value in MACVLAN_MODES.items() if value == mode), None)
        if kind == "vxlan" and IFLA_INFO_DATA in parts:
            data = parts[IFLA_INFO_DATA]
            found = parse_attrs(data, 0, len(data))
            group, port = found.get(IFLA_VXLAN_GROUP), found.get(IFLA_VXLAN_PORT)
            vxlan = (_u32(found.get(IFLA_VXLAN_ID)), socket.inet_ntoa(bytes(group)) if group else "",
                     struct.unpack("!H", port)[0] if port else 0)
    alias = attrs.get(IFLA_IFALIAS)
    return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME)) or "", kind=kind,
                mtu=_u32(attrs.get(IFLA_MTU)) or 0, mac=mac_str(attrs.get(IFLA_ADDRESS)),
                up=bool(flags & IFF_UP), master=_u32(attrs.get(IFLA_MASTER)),
                alias=bytes(alias).rstrip(b"\0").decode() if alias is not None else None,
                peer_index=_u32(attrs.get(IFLA_LINK)), vxlan=vxlan, macvlan_mode=macvlan_mode,
                link_netnsid=struct.unpack_from("=i", attrs[IFLA_LINK_NETNSID])[0]
                if IFLA_LINK_NETNSID in attrs else None)


def _decode_addr(msg: memoryview) -> Addr | None:
    family, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(msg, 0)
    if family == AF_INET6 and scope == RT_SCOPE_HOST:
        return None   # ::1
    if family not in (AF_INET, AF_INET6):
        return None
    attrs = parse_attrs(msg, _IFADDRMSG.size, len(msg))
    raw = (attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)) if family == AF_INET else attrs.get(IFA_ADDRESS)
    proto = attrs.get(IFA_PROTO)
    return Addr(index=index, address=unpack_ip(family, raw), prefixlen=prefixlen,
                proto=proto[0] if proto is not None else 0)


_ANY = {AF_INET: "0.0.0.0", AF_INET6: "::"}


def _decode_route(msg: memoryview) -> Route | None:
    family, dst_len, _src, _tos, table, protocol, _scope, rtype, _flags = _RTMSG.unpack_from(msg, 0)
    if family not in (AF_INET, AF_INET6) or rtype != RTN_UNICAST:
        return None
    attrs = parse_attrs(msg, _RTMSG.size, len(msg))
    if _u32(attrs.get(RTA_TABLE)) not in (None, RT_TABLE_MAIN) or table not in (RT_TABLE_MAIN, 252):
        return None
    dst = attrs.get(RTA_DST)
    gateway = attrs.get(RTA_GATEWAY)
    return Route(dst=f"{unpack_ip(family, dst) if dst is not None else _ANY[family]}/{dst_len}",
                 gateway=unpack_ip(family, gateway) if gateway is not None else None,
                 oif=_u32(attrs.get(RTA_OIF)), protocol=protocol,
                 metric=_u32(attrs.get(RTA_PRIORITY)))


class NetlinkError(OSError):
    pass


_local = threading.local()


def _receive_buffer() -> bytearray:
    """One reusable buffer per thread: `recv(1 MiB)` would allocate (mmap) and free a fresh
    megabyte for every datagram, and an apply reads one ack datagram per request."""
    if not hasattr(_local, "buffer"):
        _local.buffer = bytearray(1 << 20)
    return _local.buffer


class RtnlSocket:
    """A netlink socket (NETLINK_ROUTE unless told) bound to whichever namespace was
    current when it opened."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self.strict = False   # NETLINK_GET_STRICT_CHK asked for: the kernel honours dump filters

    def close(self) -> None:
        self.sock.close()

    def _frame(self, msg_type: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self.seq += 1
        return self.seq, _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, self.seq, 0) + body

    def _messages(self):
        buffer = _receive_buffer()
        while True:
            size = self.sock.recv_into(buffer)
            data = bytes(buffer[:size])
            view = memoryview(data)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(view, offset)
                yield msg_type, seq, view[offset + _NLMSGHDR.size: offset + length]
                offset += _align(length)

    def execute(self, requests: list[Request], chunk: int = 256) -> list[int]:
        """Send requests pipelined; return one errno (0 = ok) per request.

        The kernel answers every failed request with an error whether or not it asked for
        an ack, and handles a socket's requests in order: so only the last request of a
        chunk asks for one, and its ack says every request before it is done.  One
        datagram to read per chunk instead of one per request."""
        results: list[int] = []
        for start in range(0, len(requests), chunk):
            batch = requests[start:start + chunk]
            first = self.seq + 1
            last = first + len(batch) - 1
            frames = [self._frame(r.type, r.flags | NLM_F_REQUEST, r.body)[1] for r in batch[:-1]]
            frames.append(self._frame(batch[-1].type, batch[-1].flags | NLM_F_REQUEST | NLM_F_ACK, batch[-1].body)[1])
            self._send_all(frames)
            codes = [0] * len(batch)
            for msg_type, seq, payload in self._messages():
                if msg_type == NLMSG_ERROR and first <= seq <= last:
                    codes[seq - first] = -struct.unpack_from("=i", payload, 0)[0]
                    if seq == last:
                        break
            results.extend(codes)
        return results

    def _send_all(self, frames: list[bytes]) -> None:
        # One datagram carries several messages; keep each well under the socket's wmem.
        buf: list[bytes] = []
        size = 0
        for frame in frames:
            if size + len(frame) > 32768 and buf:
                self.sock.send(b"".join(buf))
                buf, size = [], 0
            buf.append(frame)
            size += len(frame)
        if buf:
            self.sock.send(b"".join(buf))

    def dump(self, msg_type: int, body: bytes) -> list[memoryview]:
        seq, frame = self._frame(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body)
        self.sock.send(frame)
        rows = []
        for kind, got_seq, payload in self._messages():
            if got_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return rows
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload, 0)[0]
                if code:
                    raise NetlinkError(code, os.strerror(code))
                return rows
            rows.append(payload)
        return rows

    def get(self, msg_type: int, body: bytes) -> memoryview:
        """The kernel's answer to one request that is not a dump."""
        seq, frame = self._frame(msg_type, NLM_F_REQUEST, body)
        self.sock.send(frame)
        for kind, got_seq, payload in self._messages():
            if got_seq != seq:
                continue
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload, 0)[0]
                raise NetlinkError(code, os.strerror(code))
            return payload

    def links(self) -> list[Link]:
        no_stats = attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [_decode_link(m) for m in self.dump(RTM_GETLINK, ifinfo() + no_stats)]

    def get_links(self, names: list[str] = (), indexes: list[int] = ()) -> list[Link]:
        """The named (or numbered) links that exist, asked for pipelined: no whole-table dump."""
        no_stats = attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        bodies = [ifinfo() + attr_str(IFLA_IFNAME, n) + no_stats for n in names]
        bodies += [ifinfo(i) + no_stats for i in indexes]
        if not bodies:
            return []
        first = self.seq + 1
        self._send_all([self._frame(RTM_GETLINK, NLM_F_REQUEST, body)[1] for body in bodies])
        found, pending = [], len(bodies)
        for msg_type, seq, payload in self._messages():
            if not first <= seq < first + len(bodies):
                continue
            if msg_type == RTM_NEWLINK:
                found.append(_decode_link(payload))
            pending -= 1   # a link, or an error (ENODEV: no such link)
            if pending == 0:
                return found

    def addrs(self, index: int = 0) -> list[Addr]:
        """IPv4 and global IPv6 addresses; with `index`, only that link's (the kernel filters
        the dump: a sandbox's loopback addresses are never sent)."""
        if index:
            self._strict_dumps()
        try:
            found = self.dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, index))
        except NetlinkError as exc:
            if index and exc.errno == errno.ENODEV:
                return []   # the link went away
            raise
        rows = (_decode_addr(m) for m in found)
        return [a for a in rows if a is not None and (not index or a.index == index)]

    def neighbours(self) -> list[Neighbour]:
        """IPv4 (ARP) and IPv6 (neighbour discovery) entries."""
        found = []
        for msg in self.dump(RTM_GETNEIGH, _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, index, state, _flags, _type = _NDMSG.unpack_from(msg, 0)
            dst = parse_attrs(msg, _NDMSG.size, len(msg), frozenset((NDA_DST,))).get(NDA_DST)
            if dst is not None and len(dst) == {AF_INET: 4, AF_INET6: 16}.get(family):
                found.append(Neighbour(index, unpack_ip(family, dst), state))
        return found

    def _strict_dumps(self) -> None:
        """Ask the kernel to honour the filters of dump requests (NETLINK_GET_STRICT_CHK)."""
        if not self.strict:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass  # before Linux 4.20 the kernel sends everything; callers filter again
            self.strict = True

    def routes(self, protocol: int = 0) -> list[Route]:
        """IPv4 and IPv6 unicast routes of the main table; with `protocol`, only those.  The
        kernel filters the dump (strict checking), so the local table (a multicast route per
        IPv6 interface, a local and a broadcast route per address) is never sent; the
        decoder filters again for kernels before 4.20."""
        self._strict_dumps()
        request = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, RT_TABLE_MAIN, protocol, 0, RTN_UNICAST, 0)
        rows = (_decode_route(m) for m in self.dump(RTM_GETROUTE, request))
        return [r for r in rows if r is not None and (not protocol or r.protocol == protocol)]


NETLINK_NETFILTER = 12
NFT_MSG_GETTABLE = (10 << 8) | 1   # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
NFTA_TABLE_NAME = 1


def nft_tables(sock: RtnlSocket) -> list[tuple[int, str]]:
    """(family, name) of every nftables table, from a NETLINK_NETFILTER socket: no `nft` process."""
    found = []
    for payload in sock.dump(NFT_MSG_GETTABLE, struct.pack("=BBH", 0, 0, 0)):
        name = _cstr(parse_attrs(payload, 4, len(payload)).get(NFTA_TABLE_NAME))
        found.append((payload[0], name or ""))
    return found


NFT_MSG_GETGEN = (10 << 8) | 16
NFTA_GEN_ID = 1
SO_NETNS_COOKIE = 71   # Linux 5.14+


def nft_generation(sock: RtnlSocket) -> int:
    """The nftables ruleset generation of the socket's namespace (NETLINK_NETFILTER): every
    transaction there, by anyone, changes it."""
    payload = sock.get(NFT_MSG_GETGEN, struct.pack("=BBH", 0, 0, 0))
    return struct.unpack("!I", parse_attrs(payload, 4, len(payload))[NFTA_GEN_ID])[0]


def netns_cookie(sock: RtnlSocket) -> int:
    """The cookie of the socket's namespace: no other namespace gets it until the machine reboots."""
    return struct.unpack("=Q", sock.sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]


def strerror(code: int) -> str:
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"
