"""A userland relay for a port published on the host's IPv6 loopback (`[::1]:P`).

The kernel cannot NAT it: the reply, un-NATed on the network's bridge, is addressed to ::1
off `lo` and dropped (IPv6 has no route_localnet).  So, like Docker's docker-proxy, a small
process listens on ::1:P and relays each connection (or UDP peer) to the container.  The
server sees the host's address on its network as the client.

Run as a script by the proxies driver, with the standard library only:
    python3 portproxy.py LISTEN PORT tcp|udp TARGET TARGET_PORT
It prints "ready" once it listens (or the error, and exits 1), then serves until SIGTERM.
"""
from __future__ import annotations

import asyncio
import signal
import socket
import sys

UDP_IDLE = 60.0   # seconds before a UDP peer's relay socket is dropped
UDP_PEERS = 1024  # relay sockets at most: datagrams from more senders are dropped, not a descriptor each
UDP_PENDING = 64  # datagrams held for a peer whose socket is still opening: more are dropped, as a NAT would


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.write_eof() if writer.can_write_eof() else writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass


async def _tcp(listen: str, port: int, target: str, target_port: int) -> asyncio.AbstractServer:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            reader, writer = await asyncio.open_connection(target, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))
        writer.close()
        client_writer.close()
    return await asyncio.start_server(relay, listen, port, family=socket.AF_INET6, reuse_address=True)


class _UdpFront(asyncio.DatagramProtocol):
    """One relay socket per client address, so the replies find their way back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.peers, self.transport = target, {}, None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, client) -> None:
        peer = self.peers.get(client)
        if peer is None:
            if len(self.peers) >= UDP_PEERS:
                return
            peer = self.peers[client] = _UdpBack(self, client)
            asyncio.get_running_loop().create_task(peer.open())
        peer.send(data)


class _UdpBack(asyncio.DatagramProtocol):
    def __init__(self, front: _UdpFront, client) -> None:
        self.front, self.client, self.transport, self.pending = front, client, None, []
        self.idle: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, remote_addr=self.front.target)
        except OSError:   # out of descriptors (EMFILE) or the like: drop what waited; the client's next datagram tries again
            self._expire()
            return
        if self.front.peers.get(self.client) is not self:   # expired while it opened
            transport.close()
            return
        self.transport = transport
        for data in self.pending:
            transport.sendto(data)
        self.pending = []

    def send(self, data: bytes) -> None:
        self._touch()
        if self.transport is not None:
            self.transport.sendto(data)
        elif len(self.pending) < UDP_PENDING:
            self.pending.append(data)

    def datagram_received(self, data: bytes, _addr) -> None:
        self._touch()
        self.front.transport.sendto(data, self.client)

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(UDP_IDLE, self._expire)

    def _expire(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.front.peers.get(self.client) is self:
            del self.front.peers[self.client]
        self.pending = []
        if self.transport is not None:
            self.transport.close()


async def main(listen: str, port: int, protocol: str, target: str, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        if protocol == "tcp":
            await _tcp(listen, port, target, target_port)
        else:
            await loop.create_datagram_endpoint(lambda: _UdpFront((target, target_port)), local_addr=(listen, port),
                                                family=socket.AF_INET6)
    except OSError as exc:
        print(f"cannot listen on [{listen}]:{port}/{protocol}: {exc.strerror or exc}", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    sys.stdout.close()
    await stop.wait()


if __name__ == "__main__":
    listen_, port_, protocol_, target_, target_port_ = sys.argv[1:6]
    asyncio.run(main(listen_, int(port_), protocol_, target_, int(target_port_)))
