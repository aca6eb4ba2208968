"""Validated topologies, remembered between runs: pydantic costs every command ~0.1 s of
imports and model building before any work, for a file that is usually unchanged.

The loader hands on the topology as plain records (attribute access by model field name,
values as pydantic produced them). The first run of a given document validates it with
the pydantic models (`model.py`, the only definition of the file format, errors with
file:line:col) and stores the records under a digest of the document and of the
validation code; later runs of the same document read them back without importing
pydantic. Every run gets records, whether validated now or remembered, so both paths
behave alike. Only valid documents are stored; an unreadable or foreign entry is a miss.

An edited document is mostly entries validated before: an entry of `networks:` or
`containers:` validates to the same records whatever its name or neighbours (the models
check each on its own), so each stored document also keeps a digest of every entry's
content.  A new document takes the records of entries whose content the last document of
its file or project had, and validates only the others (and the top-level keys, if they
changed); when every entry was seen before and its new names are well formed, pydantic is
not even imported.

A plain file (no template, include or `$` in a value) is also remembered by its text: run
again unchanged, it is not even parsed (its positions are, lazily, if an error needs one).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from .. import statefiles
from ..errors import SpecError
from .loader import Document
from .patterns import NAME_MAX_LENGTH, NAME_PATTERN

CACHE_DIR = "/var/cache/netcompose/validated"
# The least recently used entries go first, past this many or this many bytes (each edit
# makes a new entry; one for a thousand containers is about 0.5 MB; a test suite on the
# same host makes hundreds).
KEEP, KEEP_BYTES = 1024, 64 << 20


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


def _entry_name(doc: Document) -> str:
    return hashlib.blake2b(_code_stamp() + repr(doc.data).encode(), digest_size=20).hexdigest()


def _pointers(file: str, project: str | None) -> list[str]:
    """The files naming the entry last used for a topology file and for its project (when
    named on the command line: an edit may come as another file)."""
    keys = [b"file:" + file.encode()] + ([b"project:" + project.encode()] if project else [])
    return ["last-" + hashlib.blake2b(key, digest_size=16).hexdigest() for key in keys]


def _text_pointer(text: str) -> str:
    """The file naming the entry of a plain file's text (see by_text)."""
    return "text-" + hashlib.blake2b(_code_stamp() + text.encode(), digest_size=20).hexdigest()


def _read_bytes(name: str) -> bytes | None:
    """A file of the memo's folder, entered without following a link, and only when it is
    ours and nobody else may write it (see statefiles)."""
    f = statefiles.open_file(os.path.join(CACHE_DIR, name), private=True)
    if f is None:
        return None
    with f:
        try:
            os.utime(f.fileno())   # recently used: pruned last
            return f.read()
        except OSError:
            return None


def _read(name: str) -> dict | None:
    """A stored entry: {"topology": tagged JSON, "shape": see _shape}."""
    found = _read_bytes(name + ".json") if _ENTRY_NAME.fullmatch(name) else None
    try:
        entry = json.loads(found) if found is not None else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("topology"), list) else None


def _write(file: str, project: str | None, name: str, encoded: Any | None = None, shape: dict | None = None,
           text: str | None = None) -> None:
    """Store the entry (unless `encoded` is None: stored already) and point at it as the
    last one used for its file and project, and as the records of `text`."""
    def store(file_name: str, content: str) -> None:
        # Folders made and entered without following a link, and only ours (see statefiles).
        statefiles.write_text(os.path.join(CACHE_DIR, file_name), content, mode=0o600, private=True)
    try:
        if encoded is not None:
            entry = {"stamp": _code_stamp().hex(), "topology": encoded, "shape": shape}
            store(name + ".json", json.dumps(entry, check_circular=False))
            _prune()
        for pointer in _pointers(file, project) + ([_text_pointer(text)] if text is not None else []):
            store(pointer, name)
    except OSError:
        pass  # only a memo: the next run validates again


_ENTRY_NAME = re.compile(r"[0-9a-f]{40}")
SECTIONS = ("networks", "containers")   # validated entry by entry
_NAME = re.compile(NAME_PATTERN)         # what the models ask of an entry's name (Name in model.py)


def _content(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=12).hexdigest()


def _shape(data: Any) -> dict | None:
    """The digest of each entry's content in the sections, and of everything else; None
    when a section is not a mapping with well-formed names (the models say what is wrong)."""
    if not isinstance(data, dict):
        return None
    shape: dict[str, Any] = {"rest": _content({k: v for k, v in data.items() if k not in SECTIONS})}
    for section in SECTIONS:
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(
                isinstance(name, str) and len(name) <= NAME_MAX_LENGTH and _NAME.fullmatch(name) for name in entries):
            return None
        shape[section] = {name: _content(value) for name, value in entries.items()}
    return shape


def _assembled(doc: Document, project: str | None, shape: dict, validate: Callable[[Any], Record]) -> Any | None:
    """The tagged records of `doc` from the entries of the last documents of its file and
    project, validating only what they lack; None when no such document is stored."""
    known: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    rest, used = None, set()
    for pointer in _pointers(doc.file, project):
        name = _read_bytes(pointer)
        if not name or name in used:
            continue
        used.add(name)
        base = _read(name.decode(errors="replace"))
        # Records of other models or another pydantic may differ: only this code's are reused.
        if base is None or base.get("stamp") != _code_stamp().hex():
            continue
        try:
            fields = base["topology"][1]
            for section in SECTIONS:
                entries = fields[section][1]
                for entry, digest in base["shape"][section].items():
                    known[section].setdefault(digest, entries[entry])
            if rest is None and base["shape"]["rest"] == shape["rest"]:
                rest = fields
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
        if rest is not None and all(digest in known[section] for section in SECTIONS
                                    for digest in shape[section].values()):
            break   # the file's last document had it all: the project's is not read
    if not used:
        return None
    data = doc.data
    unknown = {section: {name: value for name, value in data.get(section, {}).items()
                         if shape[section][name] not in known[section]} for section in SECTIONS}
    fresh: dict[str, Any] = {}
    if rest is None or any(unknown.values()):
        part = {k: v for k, v in data.items() if k not in SECTIONS} if rest is None else {}
        part.update((section, entries) for section, entries in unknown.items() if entries)
        try:
            fresh = _encode(validate(part))[1]
        except SpecError:   # the whole document's first error, at its place in the file
            return _encode(validate(data))
    fields = dict(rest if rest is not None else fresh)
    for section in SECTIONS:
        seen = known[section]
        fields[section] = ["d", {name: seen[digest] if digest in seen else fresh[section][1][name]
                                 for name, digest in shape[section].items()}]
    return ["m", fields]


def _remembered(name: str) -> Record | None:
    entry = _read(name)
    try:
        topology = _decode(entry["topology"]) if entry is not None else None
    except (ValueError, TypeError, KeyError):
        return None
    return topology if isinstance(topology, Record) else None


def validated(doc: Document, project: str | None, validate: Callable[[Any], Record],
              text: str | None = None) -> tuple[Record, str]:
    """The topology's records and the digest naming them: remembered for this document,
    assembled from entries validated before (for the same file or the project named by -p),
    or validated now by `validate` (the models; raises SpecError).  `text`: the document's
    whole text, when it is a plain file (see by_text)."""
    name = _entry_name(doc)
    topology = _remembered(name)
    if topology is not None:
        _write(doc.file, project, name, text=text)
        return topology, name
    shape = _shape(doc.data)
    try:
        encoded = _assembled(doc, project, shape, validate) if shape is not None else None
        if encoded is None:
            encoded = _encode(validate(doc.data))
    except _Unstorable:
        return validate(doc.data), name
    _write(doc.file, project, name, encoded, shape, text)
    return _decode(encoded), name


def by_text(text: str, file: str, project: str | None) -> tuple[Record, str] | None:
    """The records of a plain file (one without include, template or variable: its text
    alone says what it holds) remembered by its text: no YAML parsed, no PyYAML imported."""
    found = _read_bytes(_text_pointer(text))
    name = found.decode(errors="replace") if found else None
    topology = _remembered(name) if name else None
    if topology is None:
        return None
    _write(file, project, name)
    return topology, name


def _prune() -> None:
    """The least recently used entries go first, and so do pointers, counted apart (a few
    bytes each: one per file, project and text)."""
    with statefiles.folder(os.path.join(CACHE_DIR, "."), private=True) as dirfd:
        if dirfd is None:
            return
        entries: dict[bool, list[tuple[int, int, str]]] = {True: [], False: []}
        for entry in os.scandir(dirfd):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            entries[not entry.name.endswith(".json")].append((st.st_mtime_ns, st.st_size, entry.name))
        for found in entries.values():
            kept = 0
            for i, (_, size, name) in enumerate(sorted(found, reverse=True)):
                kept += size
                if i >= KEEP or kept > KEEP_BYTES:
                    try:
                        os.unlink(name, dir_fd=dirfd)
                    except OSError:
                        pass
