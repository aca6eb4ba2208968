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
Edited, it parses only its new parts: each entry also keeps the data of its text's parts
(see loader.parse_reusing), which the next parse of the file or project reuses.
"""
from __future__ import annotations

import hashlib
import marshal
import os
import random
import re
import sys
import zlib
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from .. import statefiles
from ..errors import SpecError
from .loader import SECTIONS, Document
from .patterns import NAME_MAX_LENGTH, NAME_PATTERN

CACHE_DIR = "/var/cache/netcompose/validated"
# The least recently used entries go first, past this many or this many bytes (each edit
# makes a new entry; one for a thousand containers is about 0.3 MB; a test suite on the
# same host makes hundreds).  Counting them costs a stat of every file (~10 ms at the
# bounds), so one new entry in PRUNE_EVERY, at random, checks: the bounds are exceeded by
# a few entries at most.
KEEP, KEEP_BYTES = 1024, 64 << 20
PRUNE_EVERY = 16


class Record(SimpleNamespace):
    """One validated model: its fields as attributes."""


_ADDRESS_TYPES = {"a": IPv4Address, "n": IPv4Network, "i": IPv4Interface,
                  "a6": IPv6Address, "n6": IPv6Network, "i6": IPv6Interface}
_ADDRESS_TAGS = {cls: tag for tag, cls in _ADDRESS_TYPES.items()}
_SCALARS = frozenset({type(None), bool, int, float, str})


class _Unstorable(Exception):
    pass


def _encode(value: Any) -> Any:
    """The stored form of records, for marshal (built-in types only, read back by C code;
    unlike pickle, it makes no object of any other class and runs no code).  A plain value
    (None, bool, int, float, str, and lists and dicts of them) is stored as it is; anything
    else as a tuple (tag, payload, tagged), `tagged` naming the keys or indexes of `payload`
    that are tuples themselves: decoding visits only those, not every value."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        items = [_encode(v) for v in value]
        tagged = tuple(i for i, v in enumerate(items) if type(v) is tuple)
        return ("l", items, tagged) if tagged else items
    if kind is dict or kind is Record:
        fields = vars(value) if kind is Record else value
        if not all(type(k) is str for k in fields):
            raise _Unstorable
        encoded = {k: _encode(v) for k, v in fields.items()}
        tagged = tuple(k for k, v in encoded.items() if type(v) is tuple)
        return ("m", encoded, tagged) if kind is Record else ("d", encoded, tagged) if tagged else encoded
    tag = _ADDRESS_TAGS.get(kind)
    if tag is None:
        raise _Unstorable
    return (tag, str(value), ())


def _decode(value: tuple) -> Any:
    """The records of an encoded value (a tuple), built in place: each stored value is
    decoded once (see _taken)."""
    tag, payload, tagged = value
    for key in tagged:
        payload[key] = _decode(payload[key])
    if tag == "m":
        return Record(**payload)
    if tag == "l" or tag == "d":
        return payload
    return _ADDRESS_TYPES[tag](payload)


def _payload(value: Any) -> Any:
    """The fields or items of an encoded record, list or dict (stored as it is when plain)."""
    return value[1] if type(value) is tuple else value


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
    """Changes with the models, the parser, this module, Python, pydantic or PyYAML: their
    results (records, a part's data) may differ."""
    import importlib.util
    hasher = hashlib.blake2b(sys.version.encode(), digest_size=16)
    here = Path(__file__).parent
    sources = [here / "model.py", here / "patterns.py", here / "loader.py", Path(__file__)]
    for package, file in (("pydantic", "version.py"), ("yaml", "__init__.py")):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            sources.append(Path(spec.origin).parent / file)
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
    """A stored entry of this code: {"stamp", "topology": encoded records, "shape": see
    _shape, "parts": see loader.parse_reusing}, the last two marshalled apart (an edit
    reads them, an unchanged file does not)."""
    found = _read_bytes(name + ".entry") if _ENTRY_NAME.fullmatch(name) else None
    # Files are replaced whole (see statefiles.write_text); the checksum makes a file a
    # crash left half written, or a damaged one, a miss.
    body = memoryview(found)[4:] if found is not None else None
    if body is None or zlib.crc32(body).to_bytes(4, "big") != found[:4]:
        return None
    try:
        entry = marshal.loads(body)
    except (ValueError, EOFError, TypeError):
        return None
    return entry if type(entry) is dict and entry.get("stamp") == _code_stamp() else None


def _write(file: str, project: str | None, name: str, entry: dict | None = None, text: str | None = None) -> None:
    """Store the entry (unless None: stored already) and point at it as the last one used
    for its file and project, and as the records of `text`."""
    def store(file_name: str, content: str | bytes) -> None:
        # Folders made and entered without following a link, and only ours (see statefiles).
        statefiles.write_text(os.path.join(CACHE_DIR, file_name), content, mode=0o600, private=True)
    try:
        if entry is not None:
            body = marshal.dumps({"stamp": _code_stamp(), "topology": entry["topology"],
                                  "shape": marshal.dumps(entry["shape"]), "parts": entry["parts"]})
            store(name + ".entry", zlib.crc32(body).to_bytes(4, "big") + body)
            if random.randrange(PRUNE_EVERY) == 0:
                _prune()
        for pointer in _pointers(file, project) + ([_text_pointer(text)] if text is not None else []):
            if _read_bytes(pointer) != name.encode():   # read, it counts as used (see _prune)
                store(pointer, name)
    except (OSError, ValueError):
        pass  # only a memo (ValueError: a value marshal cannot store): the next run validates again


_ENTRY_NAME = re.compile(r"[0-9a-f]{40}")
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


class Earlier:
    """The entries last used for a file and for its project (see _pointers), each read at
    most once by a load: an edited file's parse reuses their parts' data (see
    loader.parse_reusing), its validation their records (see _assembled)."""

    def __init__(self, file: str, project: str | None) -> None:
        self.pointers = _pointers(file, project)
        self.read: list[dict | None] = []
        self.names: set[str] = set()

    def entries(self) -> Iterator[dict]:
        """The file's entry first; the project's is read only when asked for."""
        for index, pointer in enumerate(self.pointers):
            if index == len(self.read):
                found = _read_bytes(pointer)
                name = found.decode(errors="replace") if found else ""
                self.read.append(_read(name) if name and name not in self.names else None)
                self.names.add(name)
            if self.read[index] is not None:
                yield self.read[index]

    def parts(self) -> dict[str, Any]:
        """The data of the parts of the last text parsed for the file (or else the project), by their text."""
        for entry in self.entries():
            if type(entry.get("parts")) is bytes:
                try:
                    parts = marshal.loads(entry["parts"])
                except (ValueError, EOFError, TypeError):
                    continue
                if type(parts) is dict:
                    return parts
        return {}


def _taken(found: list) -> Any:
    """One stored entry of a content, each used once (decoding builds records in place):
    the last of them is copied for every further use."""
    return found.pop() if len(found) > 1 else marshal.loads(marshal.dumps(found[0]))


def _assembled(doc: Document, shape: dict, validate: Callable[[Any], Record], earlier: Earlier) -> Any | None:
    """The encoded records of `doc` from the entries of the last documents of its file and
    project, validating only what they lack; None when no such document is stored."""
    known: dict[str, dict[str, list]] = {section: {} for section in SECTIONS}
    rest, used = None, False
    for base in earlier.entries():
        used = True
        try:
            fields, base_shape = _payload(base["topology"]), marshal.loads(base["shape"])
            for section in SECTIONS:
                entries = _payload(fields[section])
                for entry, digest in base_shape[section].items():
                    known[section].setdefault(digest, []).append(entries[entry])
            if rest is None and base_shape["rest"] == shape["rest"]:
                rest = fields
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, EOFError):
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
            fresh = _payload(_encode(validate(part)))
        except SpecError:   # the whole document's first error, at its place in the file
            return _encode(validate(data))
    fields = dict(rest if rest is not None else fresh)
    for section in SECTIONS:
        seen = known[section]
        fields[section] = ("d", {name: _taken(seen[digest]) if digest in seen else _payload(fresh[section])[name]
                                 for name, digest in shape[section].items()}, tuple(shape[section]))
    return ("m", fields, tuple(k for k, v in fields.items() if type(v) is tuple))


def _remembered(name: str) -> Record | None:
    entry = _read(name)
    try:
        topology = _decode(entry["topology"]) if entry is not None else None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return None
    return topology if isinstance(topology, Record) else None


def validated(doc: Document, project: str | None, validate: Callable[[Any], Record],
              text: str | None = None, earlier: Earlier | None = None) -> tuple[Record, str]:
    """The topology's records and the digest naming them: remembered for this document,
    assembled from entries validated before (for the same file or the project named by -p:
    `earlier`, when the load has them already), or validated now by `validate` (the models;
    raises SpecError).  `text`: the document's whole text, when it is a plain file (see by_text)."""
    name = _entry_name(doc)
    topology = _remembered(name)
    if topology is not None:
        _write(doc.file, project, name, text=text)
        return topology, name
    shape = _shape(doc.data)
    try:
        encoded = (_assembled(doc, shape, validate, earlier or Earlier(doc.file, project))
                   if shape is not None else None)
        if encoded is None:
            encoded = _encode(validate(doc.data))
    except _Unstorable:
        return validate(doc.data), name
    _write(doc.file, project, name, {"topology": encoded, "shape": shape, "parts": doc.reusable}, text)
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
            entries[not entry.name.endswith(".entry")].append((st.st_mtime_ns, st.st_size, entry.name))
        for found in entries.values():
            kept = 0
            for i, (_, size, name) in enumerate(sorted(found, reverse=True)):
                kept += size
                if i >= KEEP or kept > KEEP_BYTES:
                    try:
                        os.unlink(name, dir_fd=dirfd)
                    except OSError:
                        pass
