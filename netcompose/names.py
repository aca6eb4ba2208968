"""Kernel names for host-side objects.

Interface names are at most 15 bytes and share one namespace per host, so host-side
names are `<project prefix>-<hash>`: deterministic, within IFNAMSIZ, and as collision-free
as 40 bits of SHA-256 allow (`host_ifnames` resolves the rest within a project).
The human name lives in the interface alias, which also marks ownership.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Iterable

ALIAS_PREFIX = "netcompose"


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648, lower case
# Every pair of digits, to encode 10 bits at a time (base64.b32encode is pure Python before
# 3.12, and a lab names thousands of interfaces).
_BASE32_PAIRS = [a + b for a in _BASE32 for b in _BASE32]


def digest(*parts: str) -> str:
    """The first 40 bits of SHA-256 in base32: 8 characters."""
    bits = int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:5], "big")
    pairs = _BASE32_PAIRS   # spelled out: a lab hashes thousands of names per run
    return pairs[bits >> 30] + pairs[(bits >> 20) & 1023] + pairs[(bits >> 10) & 1023] + pairs[bits & 1023]


@lru_cache(maxsize=64)
def project_prefix(project: str) -> str:
    return re.sub(r"[^a-z0-9]", "", project)[:6] or "nc"


@lru_cache(maxsize=1 << 16)  # resolve and Project.scope both name every endpoint
def host_ifname(project: str, role: str, ident: str) -> str:
    return f"{project_prefix(project)}-{digest(project, role, ident)}"


def short_ifname(owner: str, name: str) -> str:
    """A valid interface name for `name` (too long, or with characters Linux refuses):
    its first letters and digits plus a hash of owner and name, within 15 bytes."""
    return f"{re.sub(r'[^A-Za-z0-9]', '', name)[:6] or 'if'}-{digest(owner, name)}"


_MAX_SALT = 8   # salts `derived` recognises


def host_ifnames(project: str, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Host-side names of (role, ident) pairs, distinct within the project.

    40 bits of hash make two names of one file alike about once in 10^5 labs of 5000
    interfaces.  Then the pair that sorts first keeps its name and each other one takes
    the first salted digest not in use: the same file always gets the same names."""
    found = {pair: host_ifname(project, *pair) for pair in wanted}
    if len(set(found.values())) == len(found):
        return found
    holders: dict[str, list[tuple[str, str]]] = {}
    for pair, name in found.items():
        holders.setdefault(name, []).append(pair)
    taken = set(holders)
    for name in sorted(holders):
        for role, ident in sorted(holders[name])[1:]:
            salt = 1
            while (candidate := f"{project_prefix(project)}-{digest(project, role, ident, str(salt))}") in taken:
                salt += 1   # past _MAX_SALT only if 40-bit hashes collide _MAX_SALT times over
            taken.add(candidate)
            found[(role, ident)] = candidate
    return found


def derived(project: str, role: str, ident: str, name: str) -> bool:
    """Whether `name` is one `host_ifnames` can give (role, ident): its plain digest, or a
    salted one (a collision moved it there)."""
    if name == host_ifname(project, role, ident):
        return True
    prefix = f"{project_prefix(project)}-"
    return name.startswith(prefix) and any(name == prefix + digest(project, role, ident, str(salt))
                                           for salt in range(1, _MAX_SALT + 1))


def netns_name(project: str, container: str) -> str:
    return f"{project}-{container}"


NETNS_ETC = "/etc/netns"
SHARED_ETC = f"{NETNS_ETC}/.netcompose"


def shared_etc_dir(project: str) -> str:
    """The project's shared /etc folders, one per group of containers with the same hosts
    and DNS files.  No namespace name starts with "." (project, container and adopted
    names start with a letter or digit), so `.netcompose` never collides with a
    namespace's own /etc/netns entry, and each project has its own folder inside it."""
    return f"{SHARED_ETC}/{project}"


def alias(project: str, role: str, ident: str) -> str:
    return f"{ALIAS_PREFIX}:{project}:{role}:{ident}"


def parse_alias(text: str | None) -> tuple[str, str, str] | None:
    """(project, role, ident) for one of our aliases, else None."""
    if not text or not text.startswith(ALIAS_PREFIX + ":"):
        return None
    parts = text.split(":", 3)
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 else None


def folder_project(folder: str) -> str:
    """The project named after a folder."""
    from .spec.patterns import PROJECT_PATTERN   # names is imported before anything of spec
    if re.fullmatch(PROJECT_PATTERN, folder) and len(folder) <= 32:
        return folder
    # Normalised as Compose does; but "a.b" and "ab" (or "AB", or two long names alike in
    # their first 32 characters) would then be one project, each `up` pruning the other's
    # containers: a name that had to change says which folder it came from.
    base = re.sub(r"^[^a-z0-9]+", "", re.sub(r"[^a-z0-9_-]", "", folder.lower()))[:23] or "default"
    return f"{base}-{digest(folder)}"
