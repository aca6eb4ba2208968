"""Link conditions: the units `tc` writes (rate, sizes, times, percentages) and what each
condition needs from the kernel.  Pure: the spec validates with it, compile turns it into
resources, the tc driver's messages come from the numbers it gives.

How each condition is made (see README "Link conditions"):
- rate (and burst): a tbf qdisc at the root of the device that sends: the sandbox's end for
  egress, the other end of the veth for ingress (what enters a veth end is exactly what
  leaves its peer, so no ifb device or redirect is needed);
- loss: netem when the kernel has it, else a random-drop rule (`numgen random`) in the
  sandbox's own nftables table;
- delay, jitter, corrupt, duplicate, reorder: netem only.
"""
from __future__ import annotations

import re
from typing import Any

# Decimal like tc: 1kbit = 1000 bit/s; "bps" is bytes per second, as in tc(8).
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
               "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12}
# Sizes as tc reads them: kb/k = 1024 bytes, kbit = 1000 bits.
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
               "bit": 1 / 8, "kbit": 1000 / 8, "mbit": 10**6 / 8, "gbit": 10**9 / 8}
_TIME_UNITS = {"s": 10**9, "sec": 10**9, "ms": 10**6, "msec": 10**6, "us": 10**3, "usec": 10**3,
               "ns": 1, "nsec": 1}
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z%]*)")

NETEM_ONLY = ("delay", "jitter", "corrupt", "duplicate", "reorder")
PERCENTAGES = ("loss", "corrupt", "duplicate", "reorder")
MAX_RATE = 2**64 - 1            # bits/s as TCA_TBF_RATE64 carries bytes/s in 64 bits
TBF_LATENCY_NS = 50 * 10**6     # queue length of a tbf, as time at its rate (tc's `latency 50ms`)
DEFAULT_BURST_NS = 4 * 10**6    # burst when the file gives none: 4 ms at the rate
MIN_BURST_NS = 10**6            # tbf refills by timer: less than 1 ms at the rate starves it


def _split(text: Any, units: dict[str, float], what: str, example: str) -> float:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a {what} written like {example}")
    match = _NUMBER.fullmatch(str(text).strip())
    if match is None or match.group(2).lower() not in units:
        raise ValueError(f"{text!r} is not a {what}; write it like {example} "
                         f"(units: {', '.join(sorted(units, key=units.get))})")
    return float(match.group(1)) * units[match.group(2).lower()]


def rate_bits(text: Any) -> int:
    bits = int(_split(text, _RATE_UNITS, "rate", "10mbit"))
    if not 8 <= bits <= MAX_RATE:
        raise ValueError(f"rate {text} is out of range (8bit to {MAX_RATE // 10**12}tbit)")
    return bits


def size_bytes(text: Any) -> int:
    size = int(_split(text, _SIZE_UNITS, "size", "32kb"))
    if not 1 <= size < 2**32:
        raise ValueError(f"size {text} is out of range (1b to 4gb)")
    return size


def time_ns(text: Any) -> int:
    ns = int(_split(text, _TIME_UNITS, "time", "40ms"))
    if ns > 3600 * 10**9:
        raise ValueError(f"time {text} is longer than an hour")
    return ns


def percent(text: Any) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise ValueError(f"write a percentage with its sign, like {text}%")
    value = _split(text, {"%": 1}, "percentage", "1%")
    if value > 100:
        raise ValueError(f"{text} is more than 100%")
    return value


def normalised(spec: dict[str, Any], mtu: int) -> dict[str, Any]:
    """The conditions of one direction as numbers (absent keys left out), validated: the
    error texts become file:line:col errors of the key they name."""
    out: dict[str, Any] = {}
    if spec.get("rate") is not None:
        out["rate"] = rate_bits(spec["rate"])
    if spec.get("burst") is not None:
        if "rate" not in out:
            raise ValueError("burst: needs a rate")
        out["burst"] = size_bytes(spec["burst"])
    if "rate" in out:
        per_second = out["rate"] / 8
        floor = max(mtu + 14, int(per_second * MIN_BURST_NS / 10**9))
        if "burst" not in out:
            out["burst"] = max(floor, int(per_second * DEFAULT_BURST_NS / 10**9))
        elif out["burst"] < floor:
            raise ValueError(f"burst: {spec['burst']} is below tbf's minimum for rate {spec['rate']}: "
                             f"at least {floor} bytes (one {mtu}-byte frame, and 1 ms at the rate)")
    for key in PERCENTAGES:
        if spec.get(key) is not None:
            out[key] = percent(spec[key])
    for key in ("delay", "jitter"):
        if spec.get(key) is not None:
            out[key] = time_ns(spec[key])
    if "jitter" in out and "delay" not in out:
        raise ValueError("jitter: needs a delay")
    if "reorder" in out and "delay" not in out:
        raise ValueError("reorder: needs a delay (netem reorders by sending some packets at once)")
    return out


def needs_netem(conditions: dict[str, Any]) -> list[str]:
    """The keys of `conditions` only netem can make (loss has a fallback)."""
    return [k for k in NETEM_ONLY if k in conditions]


def qdisc_params(conditions: dict[str, Any], netem: bool) -> dict[str, Any] | None:
    """What the root qdisc of a sending device holds, or None for no qdisc of ours: tbf for
    the rate, netem (under the tbf, or alone) for delay and the percentages when the kernel
    has it; loss otherwise stays out (it is an nftables rule)."""
    netem_keys = [k for k in NETEM_ONLY + ("loss",) if k in conditions] if netem else []
    params: dict[str, Any] = {}
    if "rate" in conditions:
        rate_bytes = conditions["rate"] // 8
        params.update(rate=conditions["rate"], burst=conditions["burst"],
                      limit=min(2**32 - 1, conditions["burst"] + rate_bytes * TBF_LATENCY_NS // 10**9))
    if netem_keys:
        params["netem"] = {k: conditions[k] for k in netem_keys}
    return params or None


def loss_percent(conditions: dict[str, Any] | None) -> float | None:
    """Loss made by an nftables rule (asked only when the kernel has no netem)."""
    return conditions.get("loss") if conditions else None


def describe(conditions: dict[str, Any] | None) -> str:
    """For `ps`: the conditions as the file writes them."""
    if not conditions:
        return ""
    parts = []
    for key, value in conditions.items():
        if key == "rate":
            parts.append(f"rate {_human(value, 'bit', 1000)}")
        elif key == "burst":
            parts.append(f"burst {_human(value, 'b', 1024)}")
        elif key in ("delay", "jitter"):
            parts.append(f"{key} {value / 10**6:g}ms")
        else:
            parts.append(f"{key} {value:g}%")
    return ", ".join(parts)


def describe_both(egress: dict[str, Any] | None, ingress: dict[str, Any] | None) -> str:
    """For `ps`: both directions of an endpoint (a wire's are the same both ways: `describe`)."""
    return "; ".join(f"{direction} {describe(spec)}" for direction, spec in (("out", egress), ("in", ingress)) if spec)


def _human(value: float, unit: str, base: int) -> str:
    for prefix in ("", "k", "m", "g", "t"):
        if value < base or prefix == "t":
            return f"{value:.3g}{prefix}{unit}"
        value /= base
    raise AssertionError("unreachable")


def conditioned_containers(topology: Any) -> tuple[set[str], set[str], bool]:
    """From the file: containers with link conditions, those of them with loss (a rule in
    their own table, without netem), and whether any endpoint shapes ingress (a qdisc on
    the host's end of its veth)."""
    shaped: set[str] = set()
    lossy: set[str] = set()
    ingress = False
    for name, container in topology.containers.items():
        for endpoint in container.networks.values():
            for spec in (endpoint.egress, endpoint.ingress):
                if spec is not None:
                    shaped.add(name)
                    if spec.loss is not None:
                        lossy.add(name)
            ingress = ingress or endpoint.ingress is not None
    for link in topology.links:
        if link.conditions is not None:
            ends = {end.split(":", 1)[0] for end in link.endpoints}
            shaped |= ends
            ingress = ingress or bool(link.host_interface)
            if link.conditions.loss is not None:
                lossy |= ends
    return shaped, lossy, ingress
