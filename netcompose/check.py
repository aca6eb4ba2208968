"""`netcompose check`: the reachability the topology promises, probed for real.

The expected matrix follows the CNM contract: containers on a shared network reach each
other (unless icc: false); traffic between networks passes only where a policy allows it
and both ends can route; per-container firewalls filter both ends; `expect:` entries add
or override pairs.  Probes run from inside the sandboxes, concurrently.
"""
from __future__ import annotations

import errno
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, ip_network

from . import probe
from .compile.firewall import peer_addresses
from .spec.resolve import RContainer, Resolved

TIMEOUT = 0.5


@dataclass
class Probe:
    source: str
    target: str
    proto: str           # icmp | tcp | udp
    port: int | None
    address: str
    expected: bool
    reason: str
    actual: bool | None = None

    @property
    def ok(self) -> bool:
        return self.actual == self.expected

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _firewall_allows(res: Resolved, c: RContainer, direction: str, peer_ip: str, proto: str,
                     port: int | None) -> bool:
    spec = res.topology.containers[c.name].firewall
    rules = getattr(spec, direction) if spec else None
    if rules is None:
        return True
    for rule in rules:
        peer = peer_addresses(res, rule.from_ if direction == "ingress" else rule.to)
        if peer is not None and not any(IPv4Address(peer_ip) in ip_network(p, strict=False) for p in peer):
            continue
        if rule.proto not in ("any", proto):
            continue
        if rule.ports and port not in rule.ports:
            continue
        return True
    return False


def _route(res: Resolved, a: RContainer, b: RContainer, proto: str, port: int | None) -> tuple[str, str, bool, str]:
    """(source address, target address, expected, reason) for a probe from a to b."""
    shared = [ep for ep in b.endpoints if any(mine.network == ep.network for mine in a.endpoints)]
    if shared:
        ep = shared[0]
        net = res.networks[ep.network]
        src = next(str(mine.address) for mine in a.endpoints if mine.network == ep.network)
        if not net.icc:
            return src, str(ep.address), False, f"network {net.name} has icc: false"
        return src, str(ep.address), True, f"same network {net.name}"
    link = next((l for l in res.links if {l.a[0], l.b[0]} == {a.name, b.name} and l.addresses), None)
    if link is not None:
        mine, theirs = (link.addresses[0], link.addresses[1]) if link.a[0] == a.name else \
            (link.addresses[1], link.addresses[0])
        return mine.split("/")[0], theirs.split("/")[0], True, "direct link"
    if not b.endpoints or not a.endpoints:
        return "", "", False, "no network"
    target = b.endpoints[0]
    if a.default_gateway is None:
        return str(a.endpoints[0].address), str(target.address), False, f"{a.name} has no route out"
    src_net = next(ep for ep in a.endpoints if ep.ifname == a.default_ifname)
    src = str(src_net.address)
    if b.default_gateway is None:
        return src, str(target.address), False, f"{b.name} has no route back"
    for policy in res.topology.policies:
        if policy.from_ == src_net.network and policy.to == target.network and \
                policy.proto in ("any", proto) and (not policy.ports or port in policy.ports):
            return src, str(target.address), True, f"policy {policy.from_} → {policy.to}"
    return src, str(target.address), False, f"networks {src_net.network} and {target.network} are isolated"


def expected_probes(res: Resolved) -> list[Probe]:
    probes: dict[tuple, Probe] = {}
    containers = list(res.containers.values())

    def add(a: RContainer, b: RContainer, proto: str, port: int | None, declared: bool | None) -> None:
        src, dst, expected, reason = _route(res, a, b, proto, port)
        if expected and not _firewall_allows(res, a, "egress", dst, proto, port):
            expected, reason = False, f"{a.name} firewall egress"
        if expected and not _firewall_allows(res, b, "ingress", src, proto, port):
            expected, reason = False, f"{b.name} firewall ingress"
        if declared is not None:
            expected, reason = declared, "expect:"
        if dst:
            probes[(a.name, b.name, proto, port)] = Probe(a.name, b.name, proto, port, dst, expected, reason)

    for a in containers:
        for b in containers:
            if a is not b:
                add(a, b, "icmp", None, None)
    for exp in res.topology.expect:
        target, _, port_text = exp.to.partition(":")
        port = exp.port or (int(port_text) if port_text else None)
        proto = exp.proto or ("tcp" if port else "icmp")
        add(res.containers[exp.from_], res.containers[target], proto, port, exp.reachable)
    return list(probes.values())


def _listen(stack: ExitStack, ns: str, proto: str, port: int) -> None:
    try:
        stack.enter_context(probe.listener(ns, port, proto))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:  # a real server already listens: probe that
            raise


def run(res: Resolved, workers: int = 256) -> list[Probe]:
    probes = expected_probes(res)
    ns = {c.name: c.netns for c in res.containers.values()}
    with ExitStack() as stack:
        for key in sorted({(p.target, p.proto, p.port) for p in probes if p.port}):
            _listen(stack, ns[key[0]], key[1], key[2])

        def attempt(p: Probe) -> bool:
            if p.proto == "icmp":
                return probe.ping(ns[p.source], p.address, TIMEOUT)
            if p.proto == "tcp":
                return probe.tcp_connect(ns[p.source], p.address, p.port, TIMEOUT)
            return probe.udp_exchange(ns[p.source], p.address, p.port, TIMEOUT)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for p, actual in zip(probes, pool.map(attempt, probes)):
                p.actual = actual
    return probes



