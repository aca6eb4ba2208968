"""`netcompose check`: the reachability the topology promises, probed for real.

The expected matrix follows the CNM contract: containers on a shared network reach each
other (unless icc: false); traffic between networks passes only where a policy allows it
and both ends can route; per-container firewalls filter both ends; `expect:` entries add
or override pairs.  Probes run from inside the sandboxes, concurrently.

Past a small lab, the probes follow equivalence classes: containers with the same networks,
default route, routes, sysctls, firewall, direct wires and standing in others' firewall
rules behave alike, so every ordered pair of classes is probed through a representative pair
and a random one, and each container once in each direction (paired with a class-mate);
their number grows with the classes and N, not N².  Every probe's expectation is computed
for its own pair.  `everything=True` probes the whole matrix.

The host's neighbour table is shared by all namespaces (gc_thresh3 entries, 1024 by
default) and the kernel reclaims no entry used in the last 5 s, so probes run in waves
whose new entries fit in half of what is free, and each wave's entries are deleted before
the next.  If the table overflowed anyway (others use it too), the probes that failed are
retried and, failing again with another overflow, reported with that cause rather than as
mismatches.
"""
from __future__ import annotations

import errno
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from ipaddress import ip_address, ip_network

from . import probe
from .compile.firewall import peer_addresses
from .compile.ovs import gateway_port
from .drivers import rtnl
from .resources import HOST
from .spec.resolve import RContainer, Resolved

TIMEOUT = 0.5
FULL_MATRIX_UP_TO = 20          # containers: up to this many, every pair is probed
# Per family: the neighbour table's statistics and its limit (ARP; IPv6 neighbour discovery).
NEIGH_STATS = {4: "/proc/net/stat/arp_cache", 6: "/proc/net/stat/ndisc_cache"}
NEIGH_LIMIT = {4: "/proc/sys/net/ipv4/neigh/default/gc_thresh3", 6: "/proc/sys/net/ipv6/neigh/default/gc_thresh3"}


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
    source_class: str = ""
    target_class: str = ""
    source_address: str = ""
    network: str = ""          # the network both ends share, if any
    inconclusive: str = ""     # why the probe says nothing (the host's neighbour table overflowed)
    family: int = 4            # 4 | 6: the address family probed

    @property
    def ok(self) -> bool:
        return self.actual == self.expected and not self.inconclusive

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _firewall_allows(res: Resolved, c: RContainer, direction: str, peer_ip: str, proto: str,
                     port: int | None) -> tuple[bool, tuple | None]:
    """Whether c's firewall lets the traffic through in `direction`, and the path into the
    file of what decided: the rule that matched, the rule list that matched none, or None
    (no firewall in that direction)."""
    spec = res.topology.containers[c.name].firewall
    rules = getattr(spec, direction) if spec else None
    base = ("containers", c.name, "firewall", direction)
    if rules is None:
        return True, None
    for i, rule in enumerate(rules):
        peer = peer_addresses(res, rule.from_ if direction == "ingress" else rule.to)
        if peer is not None and not any(ip_address(peer_ip) in ip_network(p, strict=False) for p in peer):
            continue
        if rule.proto not in ("any", proto):
            continue
        if rule.ports and port not in rule.ports:
            continue
        return True, base + (i,)
    return False, base


def _address(c: RContainer, version: int, network: str | None = None) -> str | None:
    """c's address of one family: on `network`, else on its first network that has one."""
    return next((str(ep.address_of(version)) for ep in c.endpoints if ep.address_of(version) is not None
                 and network in (None, ep.network)), None)


def _route(res: Resolved, a: RContainer, b: RContainer, proto: str, port: int | None,
           version: int) -> tuple[str, str, bool, str, tuple]:
    """(source address, target address, expected, reason, where) for a probe of one family
    from a to b, `where` being the path into the file of what decides; no target address when
    b has none of that family."""
    shared = [ep for ep in b.endpoints if ep.address_of(version) is not None
              and any(mine.network == ep.network for mine in a.endpoints)]
    if shared:
        ep = shared[0]
        net = res.networks[ep.network]
        src = _address(a, version, ep.network)
        # A trunk's own address sends untagged frames, which OVS drops on a trunk port (VLAN 0 is
        # never in `trunks`): the trunk carries the tags for the sandbox, not its address.
        mine = next(mine for mine in a.endpoints if mine.network == ep.network)
        trunk = next((c.name for c, end in ((a, mine), (b, ep)) if end.trunks), None)
        if trunk is not None:
            return (src, str(ep.address_of(version)), False,
                    f"{trunk} is on {net.name} by a trunk (tagged frames only)",
                    ("containers", trunk, "networks", net.name, "trunks"))
        if not net.icc:
            return src, str(ep.address_of(version)), False, f"network {net.name} has icc: false", \
                ("networks", net.name, "icc")
        down = next(((f"{c.name}'s endpoint on {net.name} is down", ("containers", c.name, "networks", net.name))
                     for c, e in ((a, mine), (b, ep)) if e.down), None)
        if down:
            return src, str(ep.address_of(version)), False, *down
        return src, str(ep.address_of(version)), True, f"same network {net.name}", \
            ("containers", b.name, "networks", net.name)
    link = next((l for l in res.links if {l.a[0], l.b[0]} == {a.name, b.name}
                 for pair in (l.addresses, l.addresses6) if pair and (":" in pair[0]) == (version == 6)), None)
    if link is not None:
        pair = next(p for p in (link.addresses, link.addresses6) if p and (":" in p[0]) == (version == 6))
        mine, theirs = (pair[0], pair[1]) if link.a[0] == a.name else (pair[1], pair[0])
        where = ("links", res.links.index(link))
        if link.down:
            return mine.split("/")[0], theirs.split("/")[0], False, "their direct link is down", where
        return mine.split("/")[0], theirs.split("/")[0], True, "direct link", where
    target = next((ep for ep in b.endpoints if ep.address_of(version) is not None), None)
    src = _address(a, version)
    if target is None or src is None:
        return "", "", False, f"no IPv{version}", ("containers", b.name if target is None else a.name)
    dst = str(target.address_of(version))
    gateway, ifname = (a.default_gateway, a.default_ifname) if version == 4 else \
        (a.default_gateway6, a.default_ifname6)
    if gateway is None:
        return src, dst, False, f"{a.name} has no IPv{version} route out", ("containers", a.name)
    src_net = next(ep for ep in a.endpoints if ep.ifname == ifname)
    src = str(src_net.address_of(version))
    if (b.default_gateway if version == 4 else b.default_gateway6) is None:
        return src, dst, False, f"{b.name} has no IPv{version} route back", ("containers", b.name)
    for c, ep in ((a, src_net), (b, target)):
        if ep.down:
            return src, dst, False, f"{c.name}'s endpoint on {ep.network} is down", \
                ("containers", c.name, "networks", ep.network)
    for i, policy in enumerate(res.topology.policies):
        if policy.from_ == src_net.network and policy.to == target.network and \
                policy.proto in ("any", proto) and (not policy.ports or port in policy.ports):
            return src, dst, True, f"policy {policy.from_} → {policy.to}", ("policies", i)
    return src, dst, False, f"networks {src_net.network} and {target.network} are isolated (no policy allows it)", \
        ("networks", target.network)


@dataclass
class Step:
    """One thing that decides whether traffic passes, with where the file says it."""
    text: str
    allows: bool
    where: tuple         # path into the document


def expectation(res: Resolved, a: RContainer, b: RContainer, proto: str, port: int | None,
                version: int) -> tuple[str, str, bool, str, list[Step]]:
    """(source address, target address, expected, reason, steps): the path, then each end's
    firewall as far as the traffic gets; the last step that disallows decides."""
    src, dst, expected, reason, where = _route(res, a, b, proto, port, version)
    steps = [Step(reason, expected, where)]
    for c, direction, peer in ((a, "egress", dst), (b, "ingress", src)):
        if not (expected and dst):
            break
        allowed, rule = _firewall_allows(res, c, direction, peer, proto, port)
        if rule is None:
            continue
        text = f"{c.name} firewall {direction}: " + (f"rule {rule[-1]} allows it" if allowed else "no rule allows it")
        steps.append(Step(text, allowed, rule))
        if not allowed:
            expected, reason = False, f"{c.name} firewall {direction}"
    return src, dst, expected, reason, steps


def classes(res: Resolved) -> dict[str, list[RContainer]]:
    """Containers that behave alike, by class name (C1, C2, ... in file order)."""
    selectors = sorted({peer for spec in res.topology.containers.values() if spec.firewall
                        for rules in (spec.firewall.ingress, spec.firewall.egress) for rule in rules or ()
                        for peer in (rule.from_, rule.to) if peer not in (None, "any")})
    selected = {peer: [ip_network(p, strict=False) for p in peer_addresses(res, peer)] for peer in selectors}
    wires: dict[str, list[tuple]] = {}
    for link in res.links:
        wires.setdefault(link.a[0], []).append((link.a[1], link.b, link.down))
        wires.setdefault(link.b[0], []).append((link.b[1], link.a, link.down))
    grouped: dict[tuple, list[RContainer]] = {}
    for c in res.containers.values():
        spec = res.topology.containers[c.name]
        addresses = [ip for ep in c.endpoints for ip, _ in ep.addresses()]
        key = (tuple((ep.network, ep.type, tuple(ep.trunks or ()), ep.down) for ep in c.endpoints),
               c.default_ifname, c.default_gateway is not None, c.default_ifname6, c.default_gateway6 is not None,
               repr(c.routes), repr(sorted(c.sysctls.items())),
               repr(spec.firewall), tuple(sorted(wires.get(c.name, ()))),
               tuple(peer for peer in selectors if any(a in net for a in addresses for net in selected[peer])))
        grouped.setdefault(key, []).append(c)
    return {f"C{i}": members for i, members in enumerate(grouped.values(), 1)}


def sampled_pairs(groups: dict[str, list[RContainer]], rng: random.Random) -> list[tuple[RContainer, RContainer]]:
    """Each ordered pair of classes: a representative pair and a random one; each container
    of a class of two or more: to and from a class-mate (pairs reuse the two neighbour
    entries their two directions need)."""
    pairs: dict[tuple[str, str], tuple[RContainer, RContainer]] = {}

    def add(a: RContainer, b: RContainer) -> None:
        if a is not b:
            pairs.setdefault((a.name, b.name), (a, b))
    for members in groups.values():
        for i in range(0, len(members) - 1, 2):
            add(members[i], members[i + 1])
            add(members[i + 1], members[i])
        if len(members) > 2 and len(members) % 2:
            add(members[-1], members[0])
            add(members[0], members[-1])
    for sources in groups.values():
        for targets in groups.values():
            if sources is targets and len(sources) < 2:
                continue
            add(sources[0], targets[1] if sources is targets else targets[0])
            a, b = rng.choice(sources), rng.choice(targets)
            if a is b:
                b = targets[(targets.index(a) + 1) % len(targets)]
            add(a, b)
    return list(pairs.values())


class Probes(list):
    """The probes of one check, and the classes they were drawn from."""

    def __init__(self, probes: list[Probe], classes: dict[str, dict], elsewhere: int = 0) -> None:
        super().__init__(probes)
        self.classes = classes
        self.elsewhere = elsewhere   # TCP/UDP probes left out: their targets listen on other hosts


def _summary(groups: dict[str, list[RContainer]]) -> dict[str, dict]:
    return {name: {"members": [c.name for c in members],
                   "networks": list(dict.fromkeys(ep.network for ep in members[0].endpoints))}
            for name, members in groups.items()}


def expected_probes(res: Resolved, everything: bool | None = None, rng: random.Random | None = None) -> Probes:
    """The probes to run and what each should see; `everything` (by default: small labs)
    probes every ordered pair, else the class-based sample."""
    probes: dict[tuple, Probe] = {}
    containers = list(res.containers.values())
    groups = classes(res)
    class_of = {c.name: name for name, members in groups.items() for c in members}

    def add(a: RContainer, b: RContainer, proto: str, port: int | None, declared: bool | None) -> None:
        for version in (4, 6):   # each family both ends have: the same promise, probed twice
            src, dst, expected, reason = expectation(res, a, b, proto, port, version)[:4]
            if not dst:
                continue
            if declared is not None:
                expected, reason = declared, "expect:"
            shared = next((ep.network for ep in a.endpoints if any(ep.network == theirs.network
                                                                   for theirs in b.endpoints)), "")
            probes[(a.name, b.name, proto, port, version)] = Probe(
                a.name, b.name, proto, port, dst, expected, reason, source_class=class_of[a.name],
                target_class=class_of[b.name], source_address=src, network=shared, family=version)

    if everything is None:
        everything = len(containers) <= FULL_MATRIX_UP_TO
    if everything:
        for a in containers:
            for b in containers:
                if a is not b:
                    add(a, b, "icmp", None, None)
    else:
        for a, b in sampled_pairs(groups, rng or random.Random()):
            add(a, b, "icmp", None, None)
    for exp in res.topology.expect:
        target, _, port_text = exp.to.partition(":")
        port = exp.port or (int(port_text) if port_text else None)
        proto = exp.proto or ("tcp" if port else "icmp")
        add(res.containers[exp.from_], res.containers[target], proto, port, exp.reachable)
    return Probes(list(probes.values()), _summary(groups))


def send(ns: str, proto: str, address: str, port: int | None, timeout: float = TIMEOUT) -> bool:
    """One probe from namespace `ns`: whether it was answered."""
    if proto == "icmp":
        return probe.ping(ns, address, timeout)
    if proto == "tcp":
        return probe.tcp_connect(ns, address, port, timeout)
    return probe.udp_exchange(ns, address, port, timeout)


def listen(stack: ExitStack, ns: str, proto: str, port: int) -> None:
    """A listener on ns:port for the block of `stack`, unless a real server listens there."""
    try:
        stack.enter_context(probe.listener(ns, port, proto))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:  # a real server already listens: probe that
            raise


class NeighbourTable:
    """The host's neighbour tables (ARP, and IPv6 neighbour discovery), each shared by every
    namespace: their limits, how full they are, how often they overflowed, and a way to give
    back the entries probes made."""

    def __init__(self, res: Resolved) -> None:
        from .drivers.netlink import Namespaces
        self.nss = Namespaces()
        self.limits = {version: self._read_int(path, 1024) for version, path in NEIGH_LIMIT.items()}
        self.addresses = {str(ip) for c in res.containers.values() for ep in c.endpoints for ip, _ in ep.addresses()}
        self.addresses |= {cidr.split("/")[0] for link in res.links for pair in (link.addresses, link.addresses6)
                           for cidr in pair or ()}
        self.addresses |= {str(gw) for net in res.networks.values() for gw, _ in net.gateways()}
        # Where the host keeps its entries for the containers: the devices carrying the gateways
        # (an OVN network's gateway is a port of its logical router, nothing on the host).
        self.host_devices = [net.bridge if net.driver == "bridge" else gateway_port(res, net)
                             for net in res.networks.values() if net.driver != "ovn"]

    @staticmethod
    def _read_int(path: str, default: int) -> int:
        try:
            with open(path) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return default

    @staticmethod
    def _stats(version: int) -> tuple[int, int]:
        """(entries, overflows so far) of one family's table: entries is the whole table's,
        the same on every CPU's line; table_fulls counts per CPU."""
        try:
            with open(NEIGH_STATS[version]) as f:
                header, *rows = [line.split() for line in f]
            entries = int(rows[0][header.index("entries")], 16)
            return entries, sum(int(row[header.index("table_fulls")], 16) for row in rows)
        except (OSError, ValueError, IndexError):
            return 0, 0

    def room(self) -> int:
        """New entries one wave of probes may make: half of what is free in the fuller table
        (others use them too), at least 64."""
        return min(max(64, (limit - self._stats(version)[0]) // 2) for version, limit in self.limits.items())

    def overflows(self) -> int:
        return sum(self._stats(version)[1] for version in self.limits)

    def forget(self, namespaces: set[str]) -> None:
        """Delete the entries for the project's addresses in these sandboxes ("" = the host,
        only on the project's gateway devices): a cache, refilled on the next packet."""
        for ns in namespaces:
            try:
                sock = self.nss.sock(ns)
                devices = None
                if ns == HOST:
                    devices = {link.index for link in sock.get_links(names=self.host_devices)}
                stale = [n for n in sock.neighbours() if n.address in self.addresses
                         and not n.state & (rtnl.NUD_PERMANENT | rtnl.NUD_NOARP)
                         and (devices is None or n.index in devices)]
                if stale:
                    sock.execute([rtnl.del_neighbour(n.index, n.address) for n in stale])
            except OSError:
                continue  # a sandbox gone meanwhile: nothing to give back

    def close(self) -> None:
        self.nss.close()


def _neighbours(res: Resolved, p: Probe) -> set[tuple[str, str]]:
    """The neighbour entries a probe may create: each end's next hop, and the host's for
    each end when it routes between networks."""
    source, target = res.containers[p.source], res.containers[p.target]
    address = ip_address(p.address)
    on_link = any(address in subnet for ep in source.endpoints
                  if (subnet := res.networks[ep.network].subnet_of(p.family)) is not None) or \
        any({l.a[0], l.b[0]} == {p.source, p.target} for l in res.links)
    if on_link:
        return {(source.netns, p.address), (target.netns, p.source_address)}
    return {(source.netns, "gateway"), (target.netns, "gateway"), (HOST, p.address), (HOST, p.source_address)}


def _waves(res: Resolved, probes: list[Probe], room: int) -> list[tuple[list[Probe], set[str]]]:
    """Consecutive probes grouped so each group makes at most `room` new neighbour entries,
    with the namespaces holding them."""
    waves: list[tuple[list[Probe], set[tuple[str, str]]]] = [([], set())]
    for p in probes:
        needs = _neighbours(res, p)
        made = waves[-1][1]
        if made and len(made | needs) > room:
            waves.append(([], set()))
        waves[-1][0].append(p)
        waves[-1][1].update(needs)
    return [(batch, {ns for ns, _ in made}) for batch, made in waves]


def run(res: Resolved, everything: bool | None = None, workers: int = 256,
        rng: random.Random | None = None, with_other_hosts: Callable[[], None] | None = None,
        done: Callable[[Probes], None] | None = None) -> Probes:
    """Probe from this host's containers (all of a file without hosts:).  Their TCP and UDP
    probes of containers on other hosts need those hosts' listeners: alone they are left
    out (counted in `Probes.elsewhere`); `with_other_hosts` (see netcompose.across) is called
    once this host listens and returns when every host does, and `done` gets the results
    while the listeners still run."""
    everyone = expected_probes(res, everything, rng)
    local = {c.name for c in res.local_containers()}
    mine = [p for p in everyone if p.source in local]
    kept = [p for p in mine if with_other_hosts or not p.port or p.target in local]
    probes = Probes(kept, everyone.classes, elsewhere=len(mine) - len(kept))
    ns = {c.name: c.netns for c in res.containers.values()}
    table = NeighbourTable(res)
    with ExitStack() as stack:
        stack.callback(table.close)
        for key in sorted({(p.target, p.proto, p.port) for p in everyone if p.port and p.target in local}):
            listen(stack, ns[key[0]], key[1], key[2])
        if with_other_hosts is not None:
            with_other_hosts()

        def attempt(p: Probe) -> bool:
            return send(ns[p.source], p.proto, p.address, p.port)

        def probe_all(batch: list[Probe]) -> bool:
            """Probe in waves the neighbour table can hold, giving each wave's entries back
            before the next; True if the table overflowed anyway."""
            before = table.overflows()
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for wave, namespaces in _waves(res, batch, table.room()):
                    for p, actual in zip(wave, pool.map(attempt, wave)):
                        p.actual = actual
                    table.forget(namespaces)
            return table.overflows() > before

        if probe_all(probes):
            failed = [p for p in probes if p.actual != p.expected]
            if failed and probe_all(failed):
                for p in failed:
                    if p.actual != p.expected:
                        p.inconclusive = (f"the host's neighbour table overflowed (net.ipv{p.family}.neigh."
                                          f"default.gc_thresh3 = {table.limits[p.family]}, shared by every "
                                          "namespace)")
        # The first packets to another host may be lost while the tunnel's next hop is
        # resolved: what should have passed across OVN is probed once more.
        lost = [p for p in probes if p.expected and not p.actual and not p.inconclusive and _over_ovn(res, p)]
        if lost:
            probe_all(lost)
        if done is not None:
            done(probes)
    return probes


def _over_ovn(res: Resolved, p: Probe) -> bool:
    return any(res.networks[ep.network].driver == "ovn" for ep in res.containers[p.source].endpoints)
