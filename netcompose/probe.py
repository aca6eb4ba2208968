"""Reachability probes run from inside sandboxes, in-process (setns per socket).

A socket belongs to the namespace it was created in, so probes need no helper process:
enter, create the socket, return.  `check` runs many of them concurrently in threads.
"""
from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .drivers import namespaces


def _ns_path(ns: str) -> str:
    return ns if ns.startswith("/") else namespaces.netns_path(ns)


def socket_in(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    fd = namespaces.open_fd(_ns_path(ns))
    try:
        with namespaces.entered(fd):
            return socket.socket(family, kind, proto)
    finally:
        os.close(fd)


def family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def tcp_connect(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    with socket_in(ns, family(ip), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            return True
        except OSError:
            return False


def tcp_peer(ns: str, ip: str, port: int, timeout: float = 1.0) -> str | None:
    """Connect and return what the server answered (our listeners send the client's address)."""
    with socket_in(ns, family(ip), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            return sock.recv(64).decode() or None
        except OSError:
            return None


def udp_exchange(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    with socket_in(ns, family(ip), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"netcompose-probe", (ip, port))
            return sock.recv(64) == b"netcompose-probe"
        except OSError:
            return False


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


_idents = itertools.count(os.getpid() & 0xFFFF)


def ping(ns: str, ip: str, timeout: float = 1.0) -> bool:
    """One ICMP (or ICMPv6) echo; for ICMPv6 the kernel fills in the checksum and hands
    replies over without the IP header."""
    ident = next(_idents) & 0xFFFF
    v6 = ":" in ip
    request, reply = (128, 129) if v6 else (8, 0)
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket_in(ns, family(ip), socket.SOCK_RAW, proto) as sock:
        header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
        payload = b"netcompose"
        checksum = 0 if v6 else _checksum(header + payload)
        packet = struct.pack("!BBHHH", request, 0, checksum, ident, 1) + payload
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(packet, (ip, 0))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data, source = sock.recvfrom(1024)
                offset = 0 if v6 else (data[0] & 0x0F) * 4
                kind, _code, _sum, got_ident, _seq = struct.unpack("!BBHHH", data[offset:offset + 8])
                if kind == reply and got_ident == ident and source[0] == ip:
                    return True
        except OSError:
            return False
    return False


def _listening_socket(ns: str, ip: str | None, port: int, kind: int) -> socket.socket:
    """Bound to `ip`, or to both families (`::` with IPv4 mapped in) when None."""
    if ip is None:
        try:
            sock = socket_in(ns, socket.AF_INET6, kind)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:  # a kernel without IPv6
            return _listening_socket(ns, "0.0.0.0", port, kind)
        ip = "::"
    else:
        sock = socket_in(ns, family(ip), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def _plain(address: str) -> str:
    """An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d."""
    return address.removeprefix("::ffff:") if "." in address else address


@contextmanager
def listener(ns: str, port: int, proto: str = "tcp", ip: str | None = None) -> Iterator[None]:
    """Serve on ns:port (both families unless `ip` says) until the block ends.  TCP answers
    with the client's address; UDP echoes."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = _listening_socket(ns, ip, port, kind)
    sock.settimeout(0.1)
    if proto == "tcp":
        sock.listen(64)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    with conn:
                        conn.sendall(_plain(peer[0]).encode())
                else:
                    data, addr = sock.recvfrom(64)
                    sock.sendto(data, addr)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sock.close()
