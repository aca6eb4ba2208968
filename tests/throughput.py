"""A small TCP sender and receiver between two namespaces, bounded in time: what a link's
rate lets through, measured with real traffic (no iperf on the machine)."""
from __future__ import annotations

import os
import socket
import threading
import time

from netcompose.drivers import namespaces

CHUNK = 64 * 1024


def _socket_in(ns: str, family: int = socket.AF_INET) -> socket.socket:
    fd = namespaces.open_fd(namespaces.netns_path(ns))
    try:
        with namespaces.entered(fd):
            return socket.socket(family, socket.SOCK_STREAM)
    finally:
        os.close(fd)


def measure(sender_ns: str, receiver_ns: str, address: str, seconds: float = 2.0,
            warmup: float = 0.5, port: int = 5201) -> float:
    """Bits per second of TCP payload from sender_ns to address (in receiver_ns), counted
    after `warmup` (a token bucket first lets its burst through at full speed)."""
    server = _socket_in(receiver_ns)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(1)
    server.settimeout(5)
    received: list[tuple[float, int]] = []
    done = threading.Event()

    def receive() -> None:
        conn, _ = server.accept()
        conn.settimeout(1)
        total = 0
        with conn:
            while not done.is_set():
                try:
                    data = conn.recv(CHUNK)
                except socket.timeout:
                    continue
                if not data:
                    break
                total += len(data)
                received.append((time.monotonic(), total))

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    client = _socket_in(sender_ns)
    client.settimeout(2)
    payload = b"\0" * CHUNK
    try:
        client.connect((address, port))
        deadline = time.monotonic() + warmup + seconds
        while time.monotonic() < deadline:
            try:
                client.send(payload)
            except socket.timeout:
                continue
    finally:
        done.set()
        client.close()
        reader.join(timeout=3)
        server.close()
    start = next(((t, n) for t, n in received if t >= received[0][0] + warmup), None)
    if start is None or received[-1][0] <= start[0]:
        return 0.0
    return (received[-1][1] - start[1]) * 8 / (received[-1][0] - start[0])


TCP_SHARE = 0.95    # TCP payload per frame byte on a 1500-byte MTU (what tbf counts is the frame)


def holds_cap(sender_ns: str, receiver_ns: str, address: str, cap: float, tries: int = 3) -> list[float]:
    """Measure until one run lands within ±15% of `cap` (as frame bits per second): a busy
    machine may fall short of a cap, but a cap is never exceeded.  The runs, for the
    assertion's message; empty when it held."""
    seen = []
    for _ in range(tries):
        rate = measure(sender_ns, receiver_ns, address) / TCP_SHARE
        seen.append(rate)
        if rate > 1.15 * cap:
            return seen
        if rate >= 0.85 * cap:
            return []
    return seen
