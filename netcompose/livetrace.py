"""`explain --live`: one probe on the running lab, traced by nftables.

For the probe's packet, a table of netcompose's own (`netcompose-trace-<project>`, marked
like the project's tables and removed afterwards) sets `meta nftrace` in the source's
sandbox, on the host and in the target's sandbox (a packet's trace flag does not survive a
move to another namespace), in chains hooked before every other table.  The kernel then
reports each rule and chain policy the packet meets on the netfilter trace group of
NETLINK_NETFILTER, which a socket in each of those namespaces reads in-process.  Each
verdict is mapped back to the element of the file that made the rule: its comment names
it (see compile.firewall).  The reading is bounded: the events of a packet are queued
while it is processed, so once the probe has its answer (or timed out) they are all there.
"""
from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

from . import probe
from .check import listen, send
from .drivers import rtnl
from .drivers.nftables import FAMILIES, table_commands
from .errors import ConflictError
from .compile.firewall import table_name, trace_table_name
from .resources import HOST

NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTRACE = 9
NFT_MSG_TRACE = (10 << 8) | 17      # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE
TRACE_TABLE, TRACE_CHAIN, TRACE_RULE_HANDLE, TRACE_TYPE, TRACE_VERDICT, TRACE_ID = 1, 2, 3, 4, 5, 6
TRACE_NETWORK_HEADER, TRACE_POLICY = 8, 16
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
VERDICT_CODE = 1
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", -1: "continue", -2: "break", -3: "jump",
            -4: "goto", -5: "return"}
PRIORITY = -350                     # before raw (-300), conntrack (-200) and every table of ours
DRAIN_SECONDS = 0.3                 # events still in flight after the answer (they are queued synchronously)
TIMEOUT = 2.0                       # for the answer: generous on a loaded host


@dataclass
class Event:
    """One step of a traced packet: a rule that matched, or the policy of a chain it left."""
    ns: str
    family: str
    table: str
    chain: str
    kind: str                 # rule | policy | return
    verdict: str
    handle: int | None
    trace_id: int
    addresses: tuple[str, str] | None    # the packet's source and destination
    resolution: bool = False             # an ARP request for them, not the packet itself


def _is_arp(header: Any) -> bool:
    data = bytes(header or b"")
    return len(data) >= 28 and data[2:6] == b"\x08\x00\x06\x04"   # ARP for IPv4 over Ethernet


def _addresses(header: Any) -> tuple[str, str] | None:
    """Source and destination of an IPv4 or IPv6 header, or of an ARP packet for IPv4."""
    data = bytes(header or b"")
    if _is_arp(data):
        return socket.inet_ntop(socket.AF_INET, data[14:18]), socket.inet_ntop(socket.AF_INET, data[24:28])
    if len(data) >= 20 and data[0] >> 4 == 4:
        return socket.inet_ntop(socket.AF_INET, data[12:16]), socket.inet_ntop(socket.AF_INET, data[16:20])
    if len(data) >= 40 and data[0] >> 4 == 6:
        return socket.inet_ntop(socket.AF_INET6, data[8:24]), socket.inet_ntop(socket.AF_INET6, data[24:40])
    return None


def parse(ns: str, data: bytes) -> list[Event]:
    """The trace events in one read from the trace group."""
    events, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NFT_MSG_TRACE:
            family = data[offset + 16]
            attrs = rtnl.parse_attrs(data, offset + 20, offset + length)
            verdict = struct.unpack_from(">I", attrs[TRACE_POLICY])[0] if TRACE_POLICY in attrs else None
            if TRACE_VERDICT in attrs:
                nested = rtnl.parse_attrs(attrs[TRACE_VERDICT], 0, len(attrs[TRACE_VERDICT]))
                if VERDICT_CODE in nested:
                    verdict = struct.unpack_from(">i", nested[VERDICT_CODE])[0]
            handle = struct.unpack_from(">Q", attrs[TRACE_RULE_HANDLE])[0] if TRACE_RULE_HANDLE in attrs else None
            events.append(Event(ns, FAMILIES.get(family, str(family)), _text(attrs.get(TRACE_TABLE)),
                                _text(attrs.get(TRACE_CHAIN)),
                                TRACE_TYPES.get(struct.unpack_from(">I", attrs[TRACE_TYPE])[0], "?")
                                if TRACE_TYPE in attrs else "?",
                                VERDICTS.get(verdict, str(verdict)) if verdict is not None else "",
                                handle, struct.unpack_from(">I", attrs[TRACE_ID])[0] if TRACE_ID in attrs else 0,
                                _addresses(attrs.get(TRACE_NETWORK_HEADER)), _is_arp(attrs.get(TRACE_NETWORK_HEADER))))
        offset += (length + 3) & ~3
    return events


def _text(value: Any) -> str:
    return "" if value is None else bytes(value).split(b"\0", 1)[0].decode()


def _listener(ns: str) -> socket.socket:
    """A socket on the trace group of `ns`: joined before the probe leaves, so nothing is missed."""
    args = (socket.AF_NETLINK, socket.SOCK_RAW, rtnl.NETLINK_NETFILTER)
    sock = socket.socket(*args) if ns == HOST else probe.socket_in(ns, *args)
    sock.bind((0, 0))
    sock.setsockopt(rtnl.SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
    sock.setblocking(False)
    return sock


def _match(left: dict, right: Any) -> dict:
    return {"match": {"op": "==", "left": left, "right": right}}


def _selector(source: str, target: str, proto: str, port: int | None) -> list[dict]:
    """The probe's first packet: its addresses, protocol and port (a TCP SYN only)."""
    ip = "ip6" if ":" in target else "ip"
    exprs = [_match({"payload": {"protocol": ip, "field": "saddr"}}, source),
             _match({"payload": {"protocol": ip, "field": "daddr"}}, target)]
    if proto == "icmp":
        return exprs + [_match({"meta": {"key": "l4proto"}}, "ipv6-icmp" if ip == "ip6" else "icmp")]
    exprs.append(_match({"meta": {"key": "l4proto"}}, proto))
    exprs.append(_match({"payload": {"protocol": "th", "field": "dport"}}, port))
    if proto == "tcp":
        exprs.append(_match({"payload": {"protocol": "tcp", "field": "flags"}}, "syn"))
    return exprs


def _resolution(source: str, target: str) -> list[dict]:
    """The ARP request that must be answered before an IPv4 packet leaves: the bridge drops it
    where it drops the traffic (icc: false)."""
    return [_match({"payload": {"protocol": "arp", "field": "saddr ip"}}, source),
            _match({"payload": {"protocol": "arp", "field": "daddr ip"}}, target)]


def _chains(hooks: list[str], *selectors: list[dict]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """The trace table's chains, one per hook, each setting `nftrace` on what a selector matches."""
    chains = {hook: {"type": "filter", "hook": hook, "prio": PRIORITY, "policy": "accept"} for hook in hooks}
    rule = [{"comment": "explain --live: trace the probe",
             "expr": selector + [{"mangle": {"key": {"meta": {"key": "nftrace"}}, "value": 1}}]}
            for selector in selectors]
    return chains, {hook: rule for hook in hooks}


class Tracer:
    """The trace tables of one probe: installed on entering, removed on leaving."""

    def __init__(self, nft: Any, project: str) -> None:
        self.nft, self.project = nft, project
        self.name = trace_table_name(project)
        self.installed: list[tuple[str, str]] = []

    def _refuse_foreign(self, ns: str, family: str) -> None:
        """A same-named table without our mark is someone else's: never replaced."""
        if (family, self.name) in self.nft.tables_in(ns) and \
                self.nft.read(ns, family, self.name, self.project).owner != self.project:
            raise ConflictError(f"nft table {family} {self.name} already exists and is not netcompose's "
                                f"(project '{self.project}'): rename or remove it")

    def install(self, ns: str, family: str, hooks: list[str], *selectors: list[dict]) -> None:
        self._refuse_foreign(ns, family)
        commands = table_commands(family, self.name, self.project, *_chains(hooks, *selectors))
        done = self.nft.run(ns, ["-j", "-f", "-"], json.dumps({"nftables": commands}))
        if done.returncode != 0:
            raise RuntimeError(f"nft: {' '.join(done.stderr.split())[:300]}")
        self.installed.append((ns, family))

    def remove(self) -> None:
        for ns, family in reversed(self.installed):
            self.nft.run(ns, ["-j", "-f", "-"], json.dumps({"nftables": table_commands(family, self.name)}))
        self.installed.clear()


def _rules(nft: Any, ns: str, family: str, table: str) -> dict[str, list[tuple[int, str]]]:
    """(handle, comment) of each rule of one of our tables, by chain."""
    listed = nft.run(ns, ["-j", "list", "table", family, table])
    chains: dict[str, list[tuple[int, str]]] = {}
    if listed.returncode == 0:
        for item in json.loads(listed.stdout)["nftables"]:
            if "rule" in item:
                rule = item["rule"]
                chains.setdefault(rule["chain"], []).append((rule.get("handle"), rule.get("comment") or ""))
    return chains


def _common(paths: list[tuple]) -> tuple:
    if not paths:
        return ()
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def trace(res: Any, origins: Any, nft: Any, source: str, target: str, proto: str, port: int | None,
          source_address: str, target_address: str) -> dict[str, Any]:
    """Send one probe from `source` to `target_address` with tracing on; what each namespace's
    rules decided, mapped to the file, and whether it was answered."""
    a, b = res.containers[source], res.containers[target]
    places = [(a.netns, f"in {source}"), (HOST, "on the host"), (b.netns, f"in {target}")]
    selector = _selector(source_address, target_address, proto, port)
    events: list[Event] = []
    tracer = Tracer(nft, res.project)
    with ExitStack() as stack:
        sockets = {}
        for ns, _ in places:
            sockets[ns] = stack.enter_context(_listener(ns))
        stack.callback(tracer.remove)
        tracer.install(a.netns, "inet", ["output"], selector)
        tracer.install(HOST, "inet", ["prerouting"], selector)
        if any(not net.icc for net in res.networks.values()):
            arp = [_resolution(source_address, target_address)] if ":" not in target_address else []
            tracer.install(HOST, "bridge", ["prerouting"], selector, *arp)
        tracer.install(b.netns, "inet", ["prerouting"], selector)
        if port is not None and proto != "icmp":
            listen(stack, b.netns, proto, port)
        answered = send(a.netns, proto, target_address, port, TIMEOUT)
        deadline = time.monotonic() + DRAIN_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(sockets.values()), [], [], left)
            for sock in ready:
                ns = next(n for n, s in sockets.items() if s is sock)
                try:
                    events += parse(ns, sock.recv(1 << 20))
                except BlockingIOError:
                    pass
                except OSError as exc:   # ENOBUFS: events lost to an overflowing socket buffer
                    raise RuntimeError(f"nftables trace: {os.strerror(exc.errno or 0)}") from None
    # The probe's packet: the first event of each chain it enters carries its header, the
    # others that chain walk's trace id (which changes as the packet is routed).
    walks = {(e.ns, e.trace_id): e.resolution for e in events if e.addresses == (source_address, target_address)}
    for e in events:
        e.resolution = walks.get((e.ns, e.trace_id), False)
    return _verdicts(res, origins, nft, places, [e for e in events if (e.ns, e.trace_id) in walks], answered)


def _verdicts(res: Any, origins: Any, nft: Any, places: list[tuple[str, str]], events: list[Event],
              answered: bool) -> dict[str, Any]:
    """The verdicts that count: a rule of this project that accepted or dropped, a chain of
    this project whose policy applied, and anything else that dropped the packet."""
    ours, traced = table_name(res.project), trace_table_name(res.project)
    listings: dict[tuple[str, str], dict] = {}
    steps = []
    for ns, where in places:
        for e in events:
            if e.ns != ns or e.table == traced:
                continue
            # A chain's policy accept only says nothing in it stopped the packet.
            decisive = e.verdict == "drop" or e.kind == "rule" and e.verdict == "accept" and e.table == ours
            if not decisive:
                continue
            comment, path = "", ()
            if e.table == ours:
                rules = listings.setdefault((ns, e.family), _rules(nft, ns, e.family, ours)).get(e.chain, [])
                if e.kind == "rule":
                    comment = re.sub(r" \[[0-9a-f]+\]$", "", next((c for h, c in rules if h == e.handle), ""))
                    path = origins.rule_path(comment)
                else:   # no rule matched: the chain as a whole (all its rules share its element)
                    path = _common([origins.rule_path(c) for _, c in rules])
            step = {"where": where, "ns": ns, "family": e.family, "table": e.table, "chain": e.chain,
                    "kind": e.kind, "handle": e.handle, "verdict": e.verdict, "comment": comment,
                    "netcompose": e.table == ours, "path": list(path), "source": origins.source(path),
                    "address_resolution": e.resolution}
            if step not in steps:   # a retransmission (ARP asks again) meets the same rules
                steps.append(step)
    decided = next((i for i, s in enumerate(steps) if s["verdict"] == "drop"), None)
    return {"answered": answered, "traced": any(e.table == traced for e in events), "steps": steps,
            "decided": decided, "events": [asdict(e) for e in events]}


def render(live: dict[str, Any], expected: bool) -> list[str]:
    lines = []
    for i, step in enumerate(live["steps"]):
        if step["kind"] == "rule":
            what = f"rule {step['handle']} {step['verdict']}"
        else:
            what = f"policy {step['verdict']} (no rule matched)"
        origin = f": {step['comment'] or '.'.join(map(str, step['path']))}" if step["netcompose"] else \
            " (not this project's)"
        source = f"  ({step['source']})" if step["source"] else ""
        mark = "✗" if step["verdict"] == "drop" else "✓"
        packet = " (its ARP request)" if step["address_resolution"] else ""
        lines.append(f"  {mark} {step['where']}{packet}: {step['family']} {step['table']} chain {step['chain']} "
                     f"{what}{origin}{source}")
    if not live["traced"]:
        lines.append("  (no trace: the probe's packet met no chain with tracing on)")
    if live["decided"] is not None:
        step = live["steps"][live["decided"]]
        verdict = f"dropped {step['where']} by chain {step['chain']}"
    else:
        verdict = "answered" if live["answered"] else "not answered (no rule dropped it)"
    agree = "agrees" if live["answered"] == expected else "DISAGREES"
    return [f"live: {verdict}; the model {agree}", *lines]
