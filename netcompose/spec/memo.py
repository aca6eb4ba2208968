"""Validated topologies, remembered between runs: pydantic costs every command ~0.1 s of
imports and model building before any work, for a file that is usually unchanged.

The loader hands on the topology as plain records (attribute access by model field name,
values as pydantic produced them). The first run of a given document validates it with
the pydantic models (`model.py`, the only definition of the file format, errors with
file:line:col) and stores the records under a digest of the document and of the
validation code; later runs of the same document read them back without importing
pydantic. Every run gets records, whether validated now or remembered, so both paths
behave alike. Only valid documents are stored; an unreadable or foreign entry is a miss.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import statefiles
from .loader import Document

CACHE_DIR = "/var/cache/netcompose/validated"
# The least recently used entries go first, past this many or this many bytes (each edit
# makes a new entry; one for a thousand containers is about 0.5 MB).
KEEP, KEEP_BYTES = 256, 64 << 20


class Record(SimpleNamespace):
    """One validated model: its fields as attributes."""


_ADDRESS_TYPES = {"a": IPv4Address, "n": IPv4Network, "i": IPv4Interface,
                  "a6": IPv6Address, "n6": IPv6Network, "i6": IPv6Interface}
_ADDRESS_TAGS = {cls: tag for tag, cls in _ADDRESS_TYPES.items()}


class _Unstorable(Exception):
    pass


def _encode(value: Any) -> Any:
    """Tagged JSON: [tag, payload] for everything but scalars, so nothing is ambiguous."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return ["l", [_encode(v) for v in value]]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unstorable
        return ["d", {k: _encode(v) for k, v in value.items()}]
    if isinstance(value, Record):
        return ["m", {k: _encode(v) for k, v in vars(value).items()}]
    tag = _ADDRESS_TAGS.get(type(value))
    if tag is None:
        raise _Unstorable
    return [tag, str(value)]


def _decode(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    tag, payload = value
    if tag == "l":
        return [_decode(v) for v in payload]
    if tag == "d":
        return {k: _decode(v) for k, v in payload.items()}
    if tag == "m":
        return Record(**{k: _decode(v) for k, v in payload.items()})
    return _ADDRESS_TYPES[tag](payload)


def records(model: Any) -> Any:
    """A validated pydantic model (and everything in it) as Records, lists and dicts."""
    if hasattr(type(model), "model_fields"):   # a model keeps exactly its fields in __dict__
        return Record(**{name: records(value) for name, value in model.__dict__.items()})
    if isinstance(model, list):
        return [records(v) for v in model]
    if isinstance(model, dict):
        return {k: records(v) for k, v in model.items()}
    return model


@lru_cache(maxsize=1)
def _code_stamp() -> bytes:
    """Changes with the models, this module or pydantic itself: their results may differ."""
    import importlib.util
    hasher = hashlib.blake2b(digest_size=16)
    here = Path(__file__).parent
    sources = [here / "model.py", here / "patterns.py", Path(__file__)]
    pydantic = importlib.util.find_spec("pydantic")
    if pydantic is not None and pydantic.origin:
        sources.append(Path(pydantic.origin).parent / "version.py")
    for source in sources:
        try:
            hasher.update(source.read_bytes())
        except OSError:
            hasher.update(b"?")
    return hasher.digest()


def _entry_path(doc: Document) -> str:
    digest = hashlib.blake2b(_code_stamp() + repr(doc.data).encode(), digest_size=20).hexdigest()
    return os.path.join(CACHE_DIR, digest + ".json")


def _read(path: str) -> Any:
    with statefiles.folder(path, private=True) as dirfd:
        if dirfd is None:
            return None
        try:
            fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                found = _decode(json.loads(f.read()))
                os.utime(f.fileno())   # recently used: pruned last
                return found
        except (ValueError, TypeError, KeyError, OSError):
            return None


def _write(path: str, topology: Record) -> None:
    try:
        text = json.dumps(_encode(topology), check_circular=False)
    except _Unstorable:
        return
    try:   # folders made and entered without following a link, and only ours (see statefiles)
        statefiles.write_text(path, text, mode=0o600, private=True)
        _prune()
    except OSError:
        pass  # only a memo: the next run validates again


def _prune() -> None:
    with statefiles.folder(os.path.join(CACHE_DIR, "."), private=True) as dirfd:
        if dirfd is None:
            return
        entries = []
        for entry in os.scandir(dirfd):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, entry.name))
        kept = 0
        for i, (_, size, name) in enumerate(sorted(entries, reverse=True)):
            kept += size
            if i >= KEEP or kept > KEEP_BYTES:
                try:
                    os.unlink(name, dir_fd=dirfd)
                except OSError:
                    pass


def remembered(doc: Document) -> Record | None:
    """The topology a run validated from this same document, if one did."""
    found = _read(_entry_path(doc))
    return found if isinstance(found, Record) else None


def remember(doc: Document, topology: Record) -> None:
    _write(_entry_path(doc), topology)
