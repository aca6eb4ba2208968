"""The traffic-control driver: the root qdiscs of link conditions, over rtnetlink.

A qdisc has no alias or comment to carry a mark: it is ours when it sits under our handle,
9d00: (157, the protocol number of our routes), at the root of a device whose own mark
proves it ours (every project's qdiscs carry the same handle).  Parameters change in place
(RTM_NEWQDISC with NLM_F_REPLACE on the same handle runs the qdisc's change): the device,
its addresses and whatever runs in the sandbox stay.
"""
from __future__ import annotations

import struct
import threading
from functools import lru_cache

from .. import resources as r
from ..plan import Action
from ..resources import HOST, Resource
from . import Outcome, Scope, rtnl
from .netlink import proven_mark

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
TCA_KIND, TCA_OPTIONS = 1, 2
TC_H_ROOT = 0xFFFFFFFF
HANDLE = 0x9D00 << 16              # 9d00: the tbf (or a lone netem) at the root
CHILD_HANDLE = 0x9D01 << 16        # 9d01: a netem under the tbf, in its class 9d00:1
TBF_PARMS, TBF_RATE64, TBF_BURST = 1, 4, 6
TC_LINKLAYER_ETHERNET = 1          # so the kernel needs no rate table
NETEM_REORDER, NETEM_CORRUPT, NETEM_LATENCY64, NETEM_JITTER64 = 3, 4, 10, 11
NETEM_LIMIT = 1000                 # packets, netem's own default
U32_MAX = 2**32 - 1
PSCHED_SHIFT = 6                   # the kernel reports tbf's bucket in 64 ns ticks

_TCMSG = struct.Struct("=BxxxiIII")
_RATESPEC = struct.Struct("=BBHhHI")
_TBF_QOPT = struct.Struct("=12s12sIII")   # rate, peakrate, limit, buffer (ticks), mtu
_NETEM_QOPT = struct.Struct("=IIIIII")   # latency, limit, loss, gap, duplicate, jitter
_PROBABILITY = struct.Struct("=II")      # probability, correlation


def tcmsg(index: int, handle: int, parent: int) -> bytes:
    return _TCMSG.pack(0, index, handle, parent, 0)


def _probability(percent: float) -> int:
    return min(U32_MAX, round(percent / 100 * U32_MAX))


def _percent(value: int) -> float:
    return round(value * 100 / U32_MAX, 4)


def tbf_options(rate_bits: int, burst: int, limit: int) -> bytes:
    rate_bytes = rate_bits // 8
    ratespec = _RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, -1, 0, min(rate_bytes, U32_MAX))
    parms = _TBF_QOPT.pack(ratespec, bytes(12), limit, 0, 0)
    options = rtnl.attr(TBF_PARMS, parms) + rtnl.attr_u32(TBF_BURST, burst)
    if rate_bytes >= U32_MAX:
        options += rtnl.attr(TBF_RATE64, struct.pack("=Q", rate_bytes))
    return options


def netem_options(netem: dict) -> bytes:
    """netem's options are a struct followed by attributes (not attributes alone)."""
    qopt = _NETEM_QOPT.pack(0, NETEM_LIMIT, _probability(netem.get("loss", 0)),
                            1 if netem.get("reorder") else 0, _probability(netem.get("duplicate", 0)), 0)
    options = qopt + rtnl.attr(NETEM_LATENCY64, struct.pack("=q", netem.get("delay", 0)))
    options += rtnl.attr(NETEM_JITTER64, struct.pack("=q", netem.get("jitter", 0)))
    if netem.get("reorder"):
        options += rtnl.attr(NETEM_REORDER, _PROBABILITY.pack(_probability(netem["reorder"]), 0))
    if netem.get("corrupt"):
        options += rtnl.attr(NETEM_CORRUPT, _PROBABILITY.pack(_probability(netem["corrupt"]), 0))
    return options


def qdisc_requests(index: int, attrs: dict) -> list[rtnl.Request]:
    """What makes (or changes in place) the root qdisc `attrs` describes on device `index`."""
    flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    out = []
    if attrs["rate"] is not None:
        out.append(rtnl.Request(RTM_NEWQDISC, flags, tcmsg(index, HANDLE, TC_H_ROOT) + rtnl.attr_str(TCA_KIND, "tbf")
                                + rtnl.attr(TCA_OPTIONS, tbf_options(attrs["rate"], attrs["burst"], attrs["limit"]))))
    if attrs["netem"]:
        handle, parent = (CHILD_HANDLE, HANDLE | 1) if attrs["rate"] is not None else (HANDLE, TC_H_ROOT)
        out.append(rtnl.Request(RTM_NEWQDISC, flags, tcmsg(index, handle, parent) + rtnl.attr_str(TCA_KIND, "netem")
                                + rtnl.attr(TCA_OPTIONS, netem_options(attrs["netem"]))))
    return out


def delete_request(index: int) -> rtnl.Request:
    return rtnl.Request(RTM_DELQDISC, 0, tcmsg(index, HANDLE, TC_H_ROOT))


def _decode(msg: memoryview) -> tuple[int, int, int, str | None, memoryview | None]:
    _family, index, handle, parent, _info = _TCMSG.unpack_from(msg, 0)
    found = rtnl.parse_attrs(msg, _TCMSG.size, len(msg), frozenset((TCA_KIND, TCA_OPTIONS)))
    kind = bytes(found[TCA_KIND]).split(b"\0", 1)[0].decode() if TCA_KIND in found else None
    return index, handle, parent, kind, found.get(TCA_OPTIONS)


def _decode_tbf(options: memoryview) -> dict:
    found = rtnl.parse_attrs(options, 0, len(options))
    ratespec, _peak, limit, buffer_ticks, _mtu = _TBF_QOPT.unpack_from(found[TBF_PARMS], 0)
    rate_bytes = _RATESPEC.unpack(ratespec)[5]
    if TBF_RATE64 in found:
        rate_bytes = struct.unpack_from("=Q", found[TBF_RATE64])[0]
    burst = (buffer_ticks << PSCHED_SHIFT) * rate_bytes // 10**9
    return {"rate": rate_bytes * 8, "burst": burst, "limit": limit}


def _decode_netem(options: memoryview) -> dict:
    _latency, _limit, loss, _gap, duplicate, _jitter = _NETEM_QOPT.unpack_from(options, 0)
    found = rtnl.parse_attrs(options, _NETEM_QOPT.size, len(options))
    netem: dict = {}
    if loss:
        netem["loss"] = _percent(loss)
    if duplicate:
        netem["duplicate"] = _percent(duplicate)
    for attr, key in ((NETEM_LATENCY64, "delay"), (NETEM_JITTER64, "jitter")):
        if attr in found and (value := struct.unpack_from("=q", found[attr])[0]):
            netem[key] = value
    for attr, key in ((NETEM_REORDER, "reorder"), (NETEM_CORRUPT, "corrupt")):
        if attr in found and (value := _PROBABILITY.unpack_from(found[attr])[0]):
            netem[key] = _percent(value)
    return netem


def burst_matches(observed: int, wanted: int, rate_bits: int) -> bool:
    """The kernel keeps a tbf's bucket as time in 64 ns ticks: the bytes it reports back may
    fall short of what was set by one tick at the rate, plus rounding."""
    return abs(observed - wanted) <= rate_bits // 8 * 2 * (1 << PSCHED_SHIFT) // 10**9 + 2 + wanted // 1000


class TcDriver:
    name = "tc"

    def __init__(self, nss) -> None:
        self.nss = nss   # netlink.Namespaces: one rtnetlink socket per namespace
        self.seen: dict[str, Resource] = {}   # the last observation, by key

    def close(self) -> None:
        pass

    def observe(self, scope: Scope) -> list[Resource]:
        out = []
        for ns in sorted(scope.conditioned_namespaces):
            if ns != HOST and not (scope.sees(f"ns:{ns}") and self.nss.exists(ns)):
                continue
            try:
                out.extend(self._observe_namespace(ns, scope))
            except OSError:
                continue  # vanished while we looked
        self.seen = {res.key: res for res in out}
        return out

    def _observe_namespace(self, ns: str, scope: Scope) -> list[Resource]:
        sock = self.nss.sock(ns)
        rows = [_decode(msg) for msg in sock.dump(RTM_GETQDISC, tcmsg(0, 0, 0))]
        ours = {index: (kind, options) for index, handle, parent, kind, options in rows
                if handle == HANDLE and parent == TC_H_ROOT}
        if not ours:
            return []
        children = {index: options for index, handle, parent, kind, options in rows
                    if handle == CHILD_HANDLE and parent == HANDLE | 1 and kind == "netem"}
        links = {link.index: link for link in sock.get_links(indexes=sorted(ours))}
        out = []
        for index, (kind, options) in ours.items():
            link = links.get(index)
            # Our handle alone proves nothing (another project's qdisc carries it too): the
            # device must be ours.
            if link is None or proven_mark(scope.project, ns, link) is None \
                    or (ns == HOST and not scope.sees(f"dev:{link.name}")):
                continue
            attrs: dict = {"rate": None, "burst": None, "limit": None, "netem": None}
            if kind == "tbf" and options is not None:
                attrs.update(_decode_tbf(options))
                if index in children and children[index] is not None:
                    attrs["netem"] = _decode_netem(children[index])
            elif kind == "netem" and options is not None:
                attrs["netem"] = _decode_netem(options)
            else:
                continue  # someone replaced it with another kind: the planner makes ours again
            out.append(r.qdisc(ns, link.name, r.link_key(ns, link.name), owner=scope.project, **attrs))
        return out

    def observe_named(self, wanted: list[Resource], project: str) -> list[Resource]:
        """The qdiscs just observed, with a bucket size the kernel rounded reported as the
        one asked for (see burst_matches): otherwise every run would change it again."""
        out = []
        for desired in wanted:
            seen = self.seen.get(desired.key)
            if desired.kind != "qdisc" or seen is None:
                continue
            o, d = seen.attrs, desired.attrs
            if o["rate"] == d["rate"] and o["burst"] is not None and d["burst"] is not None \
                    and o["burst"] != d["burst"] and burst_matches(o["burst"], d["burst"], d["rate"]):
                out.append(r.qdisc(o["ns"], o["ifname"], seen.deps[0], owner=seen.owner,
                                   **{**{k: o[k] for k in ("rate", "limit", "netem")}, "burst": d["burst"]}))
        return out

    def apply(self, actions: list[Action]) -> Outcome:
        outcome = Outcome()
        for action in actions:
            a = action.resource.attrs
            try:
                sock = self.nss.sock(a["ns"])
                index = self._index(sock, a["ifname"])
                if action.op == "delete":
                    requests = [delete_request(index)]
                else:
                    requests = qdisc_requests(index, a)
                    had_child = action.observed is not None and action.observed.attrs.get("netem") \
                        and a["rate"] is not None and action.observed.attrs.get("rate") is not None
                    if had_child and not a["netem"]:
                        # the tbf stays; its netem child goes back to the default fifo
                        requests.append(rtnl.Request(RTM_DELQDISC, 0, tcmsg(index, CHILD_HANDLE, HANDLE | 1)))
                codes = sock.execute(requests)
            except (OSError, LookupError) as exc:
                outcome.errors[action.key] = str(exc)
                continue
            failed = next((code for code in codes if code), 0)
            if failed and not (action.op == "delete" and failed in (2, 19, 22)):  # ENOENT/ENODEV/EINVAL: gone
                outcome.errors[action.key] = f"qdisc on {a['ifname']}: {rtnl.strerror(failed)}"
        return outcome

    @staticmethod
    def _index(sock: rtnl.RtnlSocket, ifname: str) -> int:
        found = sock.get_links(names=[ifname])
        if not found:
            raise LookupError(f"no interface {ifname}")
        return found[0].index


@lru_cache(maxsize=1)
def netem_available() -> bool:
    """Whether this kernel has sch_netem: asked once per run, in a network namespace of
    its own (a thread's, gone with the thread), by adding a netem qdisc to its loopback."""
    answer: list[bool] = []

    def probe() -> None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x40000000) != 0:   # CLONE_NEWNET, for this thread only
            answer.append(False)
            return
        sock = rtnl.RtnlSocket()
        try:
            index = sock.get_links(names=["lo"])[0].index
            code = sock.execute(qdisc_requests(index, {"rate": None, "netem": {"delay": 1000}}))[0]
            answer.append(code == 0)
        finally:
            sock.close()

    thread = threading.Thread(target=probe, name="netem-probe")
    thread.start()
    thread.join()
    return bool(answer and answer[0])
