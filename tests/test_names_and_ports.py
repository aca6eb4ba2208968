"""Kernel names stay distinct when their hashes collide (forced here), and Compose's
target-only ports get a stable ephemeral host port."""
from __future__ import annotations

import pytest

from netcompose import Project, names
from netcompose.compile import compile_resources
from netcompose.spec import load
from netcompose.spec.resolve import EPHEMERAL_PORTS, HostFacts, resolve

from .conftest import needs_root

LAB = ("networks:\n  front: {subnet: 10.77.0.0/24}\n  back: {subnet: 10.78.0.0/24}\n"
       "containers:\n  web: {networks: [front, back]}\n  db: {networks: [back]}\n")


@pytest.fixture
def colliding(monkeypatch):
    """Every plain digest of the lab's bridge `front` and endpoints web/front and db/back is
    the same: three objects would get one kernel name."""
    real = names.digest

    def digest(*parts: str) -> str:
        if parts[1:] in (("net", "front"), ("ep", "web/front"), ("ep", "db/back")):
            return "aaaaaaaa"
        return real(*parts)
    monkeypatch.setattr(names, "digest", digest)
    names.host_ifname.cache_clear()
    yield
    names.host_ifname.cache_clear()


def host_names(path, project: str) -> dict:
    spec = load(path, project, environ={})
    res = resolve(spec.topology, spec.doc, project)
    compile_resources(res)   # no two resources with one key
    found = {("net", n): net.bridge for n, net in res.networks.items()}
    found.update({("ep", f"{c.name}/{ep.network}"): ep.host_ifname for c in res.containers.values()
                  for ep in c.endpoints})
    return found


def test_colliding_hashes_resolve_to_distinct_deterministic_names(tmp_path, colliding, blocks):
    path = tmp_path / "lab.yaml"
    path.write_text(blocks(LAB))
    first = host_names(path, "p")
    assert len(set(first.values())) == len(first)
    # The pair that sorts first keeps the plain digest; the others are salted.
    assert first[("ep", "db/back")] == "p-aaaaaaaa"
    assert first[("ep", "web/front")] != "p-aaaaaaaa" and first[("net", "front")] != "p-aaaaaaaa"
    assert all(len(name) <= 15 for name in first.values())
    assert host_names(path, "p") == first                          # deterministic
    # Declaration order does not matter, and the scope observes the same names.
    path.write_text(blocks("containers:\n  db: {networks: [back]}\n  web: {networks: [front, back]}\n"
                    "networks:\n  back: {subnet: 10.78.0.0/24}\n  front: {subnet: 10.77.0.0/24}\n"))
    assert host_names(path, "p") == first
    scope = Project(load(path, "p", environ={})).scope()
    assert scope.host_ifnames == frozenset(first.values())


@needs_root
def test_colliding_hashes_come_up_and_stay_converged(topo, project_name, colliding, blocks):
    project = topo(blocks(LAB))
    project.up()
    assert not topo(blocks(LAB)).plan().plan       # observed under the same names: nothing to do
    ps = {(row["container"], row["network"]): row for row in topo(blocks(LAB)).ps()}
    assert len({row["host_ifname"] for row in ps.values()}) == 3 and all(row["state"] == "up" for row in ps.values())
    topo(blocks(LAB)).down()


PORTS = ("networks:\n  front: {subnet: 10.79.0.0/24}\ncontainers:\n"
         "  web: {networks: [front], ports: ['80', '8080:81', {target: 53, protocol: udp}]}\n"
         "  api: {networks: [front], ports: ['80']}\n")


def host_ports(path, facts=HostFacts()) -> dict[str, list[int]]:
    spec = load(path, "p", environ={})
    res = resolve(spec.topology, spec.doc, "p", facts)
    compile_resources(res)
    return {c.name: c.host_ports for c in res.containers.values()}


def test_target_only_ports_get_stable_distinct_ephemeral_host_ports(tmp_path, blocks):
    path = tmp_path / "ports.yaml"
    path.write_text(blocks(PORTS))
    first = host_ports(path)
    (web80, web8080, web53), (api80,) = first["web"], first["api"]
    assert web8080 == 8080 and web80 != api80
    assert all(EPHEMERAL_PORTS[0] <= port <= EPHEMERAL_PORTS[1] for port in (web80, web53, api80))
    assert host_ports(path) == first                                     # the same file, the same ports
    # A port another project publishes is never taken; one a host socket listens on is not
    # chosen anew, but a port kept from the last apply stays.
    taken = frozenset({(web80, "tcp")})
    moved = host_ports(path, HostFacts(other_ports=taken))
    assert moved["web"][0] != web80 and moved["web"][1:] == first["web"][1:] and moved["api"] == [api80]
    assert host_ports(path, HostFacts(listening_ports=taken))["web"][0] != web80
    sticky = HostFacts(ports={("web", "80/tcp"): web80}, listening_ports=taken)
    assert host_ports(path, sticky) == first
    assert host_ports(path, sticky._replace(other_ports=taken))["web"][0] != web80
    # An explicit port of the file wins over a remembered ephemeral one.
    path.write_text(blocks(PORTS).replace("'8080:81'", f"'{web80}:81'"))
    assert host_ports(path, sticky)["web"][0] != web80


@needs_root
def test_target_only_port_is_published_stable_and_shown_by_ps(tmp_path, project_name, blocks):
    import json
    import socket

    from netcompose.probe import listener

    from .conftest import run_cli
    path = tmp_path / "ports.yaml"
    path.write_text(blocks("networks:\n  front: {subnet: 10.79.0.0/24}\n"
                           "containers:\n  web: {networks: [front], ports: ['80']}\n"))
    assert run_cli("up", "-f", str(path), "-p", project_name).returncode == 0
    rows = json.loads(run_cli("ps", "--json", "-f", str(path), "-p", project_name).stdout)
    shown = rows[0]["ports"]
    port = int(shown[0].split(":")[1].split("-")[0])
    assert shown == [f"0.0.0.0:{port}->80/tcp, :::{port}->80/tcp"]
    assert EPHEMERAL_PORTS[0] <= port <= EPHEMERAL_PORTS[1]
    with listener(f"{project_name}-web", 80):   # from the host, to its address on the network
        with socket.create_connection((blocks("10.79.0.1"), port), timeout=2) as conn:
            assert conn.recv(64)
    with socket.socket() as squatter:   # a host socket on the port now: the port still stays
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = run_cli("up", "-f", str(path), "-p", project_name)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
        assert f"{port}->80/tcp" in run_cli("ps", "-f", str(path), "-p", project_name).stdout
        assert json.loads(run_cli("ps", "--json", "-f", str(path), "-p", project_name).stdout)[0]["ports"] == shown
    assert run_cli("down", "-f", str(path), "-p", project_name).returncode == 0


def test_udp_relay_keeps_a_bounded_number_of_peer_sockets(monkeypatch):
    """Datagrams from ever new source ports must not cost the relay a socket each without end."""
    import asyncio

    from netcompose import portproxy
    monkeypatch.setattr(portproxy, "UDP_PEERS", 3)

    async def flood() -> int:
        front = portproxy._UdpFront(("127.0.0.1", 9))
        for port in range(40000, 40010):
            front.datagram_received(b"x", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        for peer in front.peers.values():
            peer.idle.cancel() if peer.idle else None
            peer.transport.close() if peer.transport else None
        return len(front.peers)

    assert asyncio.run(flood()) == 3


def test_udp_relay_bounds_what_waits_and_survives_emfile():
    """A peer socket that is still opening holds at most UDP_PENDING datagrams (the rest are
    dropped); one the relay cannot open (EMFILE) drops its datagrams, raises nothing into the
    loop, and the client's next datagram opens it again."""
    import asyncio
    import errno
    import socket

    from netcompose import portproxy

    class Front:   # the listening socket: what the relay sends back to its clients
        def __init__(self) -> None:
            self.sent: list[tuple[bytes, tuple]] = []

        def sendto(self, data: bytes, addr: tuple) -> None:
            self.sent.append((data, addr))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", 0))
            server.setblocking(False)
            front = portproxy._UdpFront(server.getsockname())
            front.transport = Front()
            client = ("::1", 40000, 0, 0)

            async def out_of_descriptors(*_args, **_kwargs):
                raise OSError(errno.EMFILE, "Too many open files")
            loop.create_datagram_endpoint = out_of_descriptors
            for i in range(10 * portproxy.UDP_PENDING):
                front.datagram_received(b"lost %d" % i, client)
            assert len(front.peers[client].pending) == portproxy.UDP_PENDING
            await asyncio.sleep(0.05)
            assert client not in front.peers and not errors

            del loop.create_datagram_endpoint   # descriptors are back
            front.datagram_received(b"again", client)
            for _ in range(200):
                await asyncio.sleep(0.01)
                try:
                    data, sender = server.recvfrom(100)
                    break
                except BlockingIOError:
                    continue
            else:
                raise AssertionError("nothing relayed after EMFILE")
            assert data == b"again"
            server.sendto(b"reply", sender)
            for _ in range(200):
                if front.transport.sent:
                    break
                await asyncio.sleep(0.01)
            assert front.transport.sent == [(b"reply", client)] and not errors
            front.peers[client]._expire()

    asyncio.run(scenario())
