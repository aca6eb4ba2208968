"""Host ports already in use, so an ephemeral published port (Compose's target-only
`ports: ["80"]`) takes none of them: sockets listening on the host, and the published
ports other netcompose projects recorded in their last apply."""
from __future__ import annotations

import os

from . import statefiles

_LISTENING = {"tcp": "0A", "udp": "07"}   # TCP_LISTEN; a bound UDP socket shows as TCP_CLOSE


def listening() -> set[tuple[int, str]]:
    """(port, protocol) of every listening TCP and bound UDP socket of this namespace."""
    found = set()
    for proto, state in _LISTENING.items():
        for table in (proto, proto + "6"):
            try:
                with open(f"/proc/net/{table}") as f:
                    next(f, None)
                    for line in f:
                        fields = line.split()
                        if len(fields) > 3 and fields[3] == state:
                            found.add((int(fields[1].rpartition(":")[2], 16), proto))
            except OSError:
                continue
    return found


def recorded(state_dir: str) -> dict[str, list[list]]:
    """Each project's published ports from its applied.json: [container, "ip:target/proto", port]."""
    found = {}
    for name in statefiles.names_in(state_dir):
        record = statefiles.read_json(os.path.join(state_dir, name, "applied.json"))
        facts = record.get("facts") if isinstance(record, dict) else None
        if isinstance(facts, dict):
            ports = facts.get("ports", [])
            found[name] = ports if isinstance(ports, list) else []
    return found


def published_elsewhere(state_dir: str, project: str) -> frozenset[tuple[int, str]]:
    """(port, protocol) published by the other netcompose projects of this host."""
    return frozenset((entry[2], entry[1].rpartition("/")[2]) for name, ports in recorded(state_dir).items()
                     if name != project for entry in ports if len(entry) == 3)
