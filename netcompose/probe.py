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


def tcp_connect(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    with socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            return True
        except OSError:
            return False


def tcp_peer(ns: str, ip: str, port: int, timeout: float = 1.0) -> str | None:
    """Connect and return what the server answered (our listeners send the client's address)."""
    with socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            return sock.recv(64).decode() or None
        except OSError:
            return None


def udp_exchange(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    with socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
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
    ident = next(_idents) & 0xFFFF
    with socket_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        payload = b"netcompose"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(packet, (ip, 0))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data, (src, _) = sock.recvfrom(1024)
                offset = (data[0] & 0x0F) * 4
                kind, _code, _sum, got_ident, _seq = struct.unpack("!BBHHH", data[offset:offset + 8])
                if kind == 0 and got_ident == ident and src == ip:
                    return True
        except OSError:
            return False
    return False


@contextmanager
def listener(ns: str, port: int, proto: str = "tcp", ip: str = "0.0.0.0") -> Iterator[None]:
    """Serve on ns:port until the block ends.  TCP answers with the client's address; UDP echoes."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket_in(ns, socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.settimeout(0.1)
    if proto == "tcp":
        sock.listen(64)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                if proto == "tcp":
                    conn, (peer, _) = sock.accept()
                    with conn:
                        conn.sendall(peer.encode())
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
