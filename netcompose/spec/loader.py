"""YAML → plain data, remembering where every key and value came from.

Also does Compose-style `${VAR}` interpolation (with a `.env` beside the file),
Jinja2 templates rendered in a sandbox, and `include:` of fragments.
"""
from __future__ import annotations

import marshal
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..errors import Position, SpecError, excerpt, shorten
from ..inputs import read_text

Path_ = tuple[Any, ...]

# A file holds at most this many YAML nodes, and expands to at most this many values once
# its aliases are followed (an "alias bomb" of a few lines expands to billions); both keep
# a bad file's memory under a few hundred MB.  A 1000-container lab has about 5,000.
MAX_NODES = 200_000
MAX_VALUES = 200_000
SECTIONS = ("networks", "containers")   # mappings of entries, each parsed and validated on its own


@dataclass
class Document:
    """Parsed data plus the source position of every path in it."""

    data: Any
    file: str
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)
    interpolated: bool = False   # a scalar held a `$`: what it says depends on the environment
    reusable: bytes | None = None   # the data of its parts, for the parse of the next edit (see parse_reusing)

    def where(self, path: Path_, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if not key and path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.values.get((), Position(self.file, 1, 1))


class UnparsedDocument(Document):
    """A document known by its text, whose records are remembered (see memo.by_text): parsed
    only when something asks for its data or positions (an error to place, a plan to annotate)."""

    def __init__(self, text: str, file: str) -> None:   # data, values and keys: parsed on demand
        self.text, self.file = text, file
        self._parsed: Document | None = None

    def _document(self) -> Document:
        if self._parsed is None:
            self._parsed = parse_yaml(self.text, self.file, {})
        return self._parsed

    data = property(lambda self: self._document().data)
    values = property(lambda self: self._document().values)
    keys = property(lambda self: self._document().keys)


class PartlyParsedDocument(UnparsedDocument):
    """A document whose data was assembled from its parts' (see parse_reusing): the position
    of a path inside a part comes from that part, parsed alone, its lines shifted to the
    file's; any other, from the whole text, parsed when first asked for."""

    data = None   # known from the start, not parsed on demand

    def __init__(self, text: str, file: str, data: dict, parts: dict[Path_, tuple[int, str]],
                 reusable: bytes | None) -> None:
        super().__init__(text, file)
        self.data, self.reusable = data, reusable
        self.parts = parts   # path of a part (a top-level key or a section's entry) → its first line, its text
        self._part_documents: dict[Path_, Document] = {}

    def where(self, path: Path_, key: bool = False) -> Position:
        path = tuple(path)
        prefix = path[:2] if path[:2] in self.parts else path[:1]
        if self._parsed is not None or prefix not in self.parts:
            return super().where(path, key)
        if prefix not in self._part_documents:
            self._part_documents[prefix] = parse_yaml(self.parts[prefix][1], self.file, None)
        # The part's own paths start at its key: a section's entry is the part's top level.
        found = self._part_documents[prefix].where(path[len(prefix) - 1:], key)
        return Position(self.file, found.line + self.parts[prefix][0] - 1, found.column)


_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?=])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str], where: Position, unset_is_empty: bool = False) -> str:
    """Compose's rules: ${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$;
    and envsubst's ${VAR:=default} (containerlab), which also sets VAR for later uses.
    An unset variable without a default is an error, or empty as in Compose and containerlab."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":=", "=") and unset:
            env[name] = arg
            return arg
        if op in (":?", "?") and unset:
            raise SpecError(where, f"variable {name} is required: {arg or 'not set'}",
                            f"set {name} in the environment or in .env")
        if value is None and unset_is_empty:
            return ""
        if value is None:
            raise SpecError(where, f"variable {name} is not set",
                            f"set it in the environment or .env, or write ${{{name}:-default}}")
        return value

    return _VAR.sub(substitute, text)


def read_dotenv(folder: Path) -> dict[str, str]:
    """The topology folder's `.env`, read as an include is: a link out of the folder is refused."""
    path = folder / ".env"
    return read_env_file(path, confined_to=folder) if os.path.lexists(path) else {}


def read_env_file(path: Path, confined_to: Path | None = None) -> dict[str, str]:
    """NAME=value lines, as in Compose's `.env` and `--env-file` (the user's choice: anywhere)."""
    values: dict[str, str] = {}
    for number, line in enumerate(read_text(path, confined_to=confined_to).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise SpecError(Position(str(path), number, 1), "expected NAME=value", "fix or remove this line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


_STR_TAG = "tag:yaml.org,2002:str"


def _position(file: str, lines: list[int] | None, line: int, column: int) -> Position:
    """A position in the text parsed; in a template's source when `lines` maps its lines there."""
    return Position(file, lines[line - 1] if lines and line <= len(lines) else line, column)


class _Builder:
    def __init__(self, file: str, loader, env: dict[str, str] | None, unset_is_empty: bool,
                 lines: list[int] | None = None):
        from yaml.nodes import MappingNode, ScalarNode, SequenceNode
        self.mapping, self.scalar, self.sequence = MappingNode, ScalarNode, SequenceNode
        self.file, self.loader, self.env, self.unset_is_empty = file, loader, env, unset_is_empty
        self.lines = lines
        self.doc = Document(None, file)
        self.budget = MAX_VALUES

    def pos(self, node) -> Position:
        return _position(self.file, self.lines, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node, path: Path_) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise SpecError(self.pos(node), f"the file expands to more than {MAX_VALUES} values (through aliases?)",
                            "use fewer aliases, or split the topology")
        self.doc.values[path] = self.pos(node)
        if isinstance(node, self.mapping):
            own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)
            merged = len(node.value) - own   # keys of `<<:` merges come first; later ones override them
            out: dict[Any, Any] = {}
            written: dict[Any, int] = {}
            for index, (key_node, value_node) in enumerate(node.value):
                key = self.build_scalar(key_node, path) if isinstance(key_node, self.scalar) else None
                if key is None or isinstance(key, (list, dict)):
                    raise SpecError(self.pos(key_node), "mapping keys must be plain scalars", "quote the key")
                if key in out and written[key] >= merged:
                    raise SpecError(self.pos(key_node), f"duplicate key {excerpt(key)}", "remove one of the two")
                written[key] = index
                self.doc.keys[path + (key,)] = self.pos(key_node)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, self.sequence):
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.build_scalar(node, path)

    def build_scalar(self, node, path: Path_) -> Any:
        # Most scalars are strings (keys, names): their value is the node's text.
        value = node.value if node.tag == _STR_TAG else self.loader.construct_object(node, deep=True)
        if isinstance(value, str) and self.env is not None and "$" in value:
            self.doc.interpolated = True
            value = interpolate(value, self.env, self.pos(node), self.unset_is_empty)
            if node.style is None:  # plain scalars are re-typed after interpolation, as in Compose
                value = safe_load(value, self.pos(node)) if value.strip() else value
        return value


# YAML 1.1 words that a plain scalar starting with a letter may spell (PyYAML's bool and
# null resolvers); any other such scalar is a string.
_BOOL_OR_NULL = frozenset("yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF "
                          "null Null NULL".split())


# YAML 1.1 reads `8080:80` as a base-60 number; YAML 1.2 (Compose, containerlab, and
# netcompose) reads it as the text it is, a port mapping.
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")


@lru_cache(maxsize=None)
def _fast_loader() -> type:
    """PyYAML is imported when a file is parsed (a remembered plain file is not: see memo)."""
    import yaml
    from yaml.nodes import ScalarNode

    class FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        """libyaml's parser, which keeps the marks we report, at a tenth of the pure-Python
        parser's cost; names and keys skip the resolver's regular expressions."""

        def resolve(self, kind, value, implicit):
            if kind is ScalarNode and implicit[0] and (value[:1].isalpha() and value not in _BOOL_OR_NULL
                                                       or ":" in value and _SEXAGESIMAL.fullmatch(value)):
                return _STR_TAG
            return super().resolve(kind, value, implicit)

        def flatten_mapping(self, node):
            # Merge keys (`<<: [*a, *a]`) copy the merged pairs, so nested merges double at
            # each level: stop before the copies outgrow the value budget.
            super().flatten_mapping(node)
            if len(node.value) > MAX_VALUES:
                raise yaml.MarkedYAMLError(problem=f"merge keys expand to more than {MAX_VALUES} values",
                                           problem_mark=node.start_mark)
    return FastLoader


def count_nodes(text: str, limit: int) -> int:
    """Nodes of a YAML text, counted from the parser's events without building them (a
    node costs a few hundred bytes once built); stops counting past `limit`."""
    import yaml
    loader = _fast_loader()(text)
    count = 0
    try:
        while count <= limit and loader.check_event():
            count += isinstance(loader.get_event(), yaml.NodeEvent)
    finally:
        loader.dispose()
    return count


def safe_load(text: str, at: Position | None = None) -> Any:
    """yaml.safe_load with the limits of a topology file (nodes, merge keys)."""
    import yaml
    loader = None
    try:
        if len(text) > 64 << 10 and count_nodes(text, MAX_NODES) > MAX_NODES:
            raise SpecError(at, f"more than {MAX_NODES} YAML nodes", "split the data")
        loader = _fast_loader()(text)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError(at, f"invalid YAML: {shorten(problem)}", "check quoting and indentation") from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_yaml(text: str, file: str, env: dict[str, str] | None, unset_is_empty: bool = False,
               lines: list[int] | None = None) -> Document:
    """The document of `text`; `lines`: a rendered template's map from its lines to the template's."""
    import yaml
    loader = None
    try:
        # Counting costs a pass over the events: only where a file could be big enough to matter.
        if len(text) > 64 << 10 and count_nodes(text, MAX_NODES) > MAX_NODES:
            raise SpecError(Position(file, 1, 1), f"the file has more than {MAX_NODES} YAML nodes",
                            "split the topology")
        loader = _fast_loader()(text)
        node = loader.get_single_node()
        builder = _Builder(file, loader, env, unset_is_empty, lines)
        builder.doc.data = builder.build(node, ()) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = _position(file, lines, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        raise SpecError(position, f"invalid YAML: {shorten(exc.problem or exc.context)}",
                        "check indentation, quoting and colons") from None
    except yaml.reader.ReaderError as exc:
        before = text[:exc.position]
        position = _position(file, lines, before.count("\n") + 1, len(before) - before.rfind("\n"))
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)  # libyaml gives a code
        raise SpecError(position, f"invalid character {char!r} in YAML", "remove it") from None
    except yaml.YAMLError as exc:
        raise SpecError(Position(file, 1, 1), f"invalid YAML: {shorten(' '.join(str(exc).split()))}",
                        "fix the syntax") from None
    finally:
        if loader is not None:
            loader.dispose()
    return builder.doc


# What makes a part of a text parse differently alone than in the whole: an anchor or alias
# (`&`, `*`), a tag or directive (`!`, `%`), a block scalar (`|`, `>`, whose indentation
# is relative), a tab, another line break than \n, a byte order mark; and `$`: what an
# interpolated value says depends on the environment, not on the text alone.
_NOT_SIMPLE = ("\t", "\r", "&", "*", "!", "%", "|", ">", "$", "\x85", "\u2028", "\u2029", "\ufeff")
_KEY_LINE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]*):(?: |$)")   # a key that starts a part
_OPEN_SECTION = re.compile(r" *(?:#.*)?")      # after `containers: `, nothing but a comment: its entries follow


@dataclass
class _Part:
    """A piece of a simple file that parses on its own: a top-level key or a section's entry."""

    path: Path_     # (key,) at the top level, (section, name) for a section's entry; () before any key
    line: int       # its first line
    start: int      # its first character in the text
    text: str = ""
    parsed: bool = True   # False: the preamble, or the line opening a section (no data of its own)


def _parts(text: str) -> list[_Part] | None:
    """The text cut into parts by indentation: each top-level key, and each entry of a
    section (SECTIONS) written as a block mapping; blank and comment lines go with the part
    before them.  None when the text is not simple enough (see parse_reusing)."""
    if any(mark in text for mark in _NOT_SIMPLE):
        return None
    parts = [_Part((), 1, 0, parsed=False)]
    section, indent, seen = None, 0, set()
    offset = 0
    for number, line in enumerate(text.split("\n"), 1):
        content = line.lstrip(" ")
        depth = len(line) - len(content)
        start, offset = offset, offset + len(line) + 1
        if not content or content.startswith("#"):
            continue
        if depth == 0:
            key = _KEY_LINE.match(line)
            if key is None:
                return None
            opens = key.group(1) in SECTIONS and _OPEN_SECTION.fullmatch(line, key.end()) is not None
            section, indent = (key.group(1) if opens else None), 0
            path: Path_ = (key.group(1),)
        elif section is not None and depth <= (indent or depth):
            if depth < indent:
                return None
            key = _KEY_LINE.match(line, depth)
            if key is None:
                return None
            if not indent:   # the section's first entry: its line has no data of its own
                indent, parts[-1].parsed = depth, False
            path = (section, key.group(1))
        elif len(parts) == 1:
            return None   # text before the first top-level key
        else:
            continue      # more of the part
        if path in seen:
            return None
        seen.add(path)
        parts.append(_Part(path, number, start))
    for part, after in zip(parts, parts[1:] + [None]):
        part.text = text[part.start:after.start if after else len(text)]
    return parts


def parse_reusing(text: str, file: str, env: dict[str, str] | None, known: Callable[[], dict[str, Any]]) -> Document:
    """parse_yaml of a file's text (not a template's), reusing the data of the parts of it
    that an earlier parse saw (`known()`: part text → (data, number of values)).

    A simple text (block mappings; no anchor, alias, tag, block scalar, tab or document
    marker) is cut into parts (see _parts).  Such a part parses alone to what it is in the
    whole: its flow collections and quoted scalars end before the next line at its
    indentation (or it does not parse alone), a plain scalar never continues on such a
    line, and nothing refers from one part to another.  So each part's data is kept by
    its text (with the document's entry in the memo), and the next parse of the file (or
    project) parses only the parts whose text is new.  The whole text is parsed instead
    when a part does not parse alone to its one key, or when more than a quarter of the
    parts are new."""
    parts = _parts(text)
    if parts is None or len(parts) == 1:
        return parse_yaml(text, file, env)
    table = known()
    new = [part for part in parts if part.parsed and part.text not in table]
    if len(new) * 4 > len(parts):
        return _parsed_whole(text, file, parts)
    for part in new:
        found = _names_line(part.text, part.path[-1])
        if found is None:
            try:
                alone = parse_yaml(part.text, file, None)
            except SpecError:
                return _parsed_whole(text, file, parts)   # its error, at its place in the whole
            if not isinstance(alone.data, dict) or list(alone.data) != [part.path[-1]]:
                return _parsed_whole(text, file, parts)
            found = (alone.data[part.path[-1]], len(alone.values) - 1)
        table[part.text] = found
    data: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for part in parts:
        if not part.path:
            continue
        if not part.parsed:
            data[part.path[0]] = {}
            continue
        found = table[part.text]
        if type(found) is not tuple or len(found) != 2 or type(found[1]) is not int:
            return _parsed_whole(text, file, parts)
        kept[part.text] = found
        (data[part.path[0]] if len(part.path) == 2 else data)[part.path[-1]] = found[0]
    if sum(count for _, count in kept.values()) > MAX_VALUES:
        return _parsed_whole(text, file, parts)   # the whole parse says what is too big
    return PartlyParsedDocument(text, file, data, {part.path: (part.line, part.text) for part in parts if part.parsed},
                                _marshalled(kept))


# The commonest edit adds an entry on one line of names, like `  web3: {networks: [lan]}`:
# such a part is read without PyYAML, whose import alone costs ~10 ms.  Each plain scalar
# there starts with a letter and is no YAML 1.1 boolean or null, so it is the string it
# spells (as FastLoader resolves it); a part with anything else goes to PyYAML.
_NAMES_TOKEN = re.compile(r" *(?:([{}\[\],])|([A-Za-z][A-Za-z0-9_.-]*)(: )?)")


class _NotNames(Exception):
    pass


def _names_line(text: str, key: str) -> tuple[Any, int] | None:
    """(value, number of values) of a part `key: value` on one line, its value a name or flow
    collections of names (see above); None for any other part."""
    line = text.removesuffix("\n").rstrip(" ")
    tokens: list[str] = []
    at = len(line) - len(line.lstrip(" "))
    while at < len(line):
        match = _NAMES_TOKEN.match(line, at)
        if match is None:
            return None   # a line break, a comment, a quote, a number...
        tokens.append(match.group(1) or match.group(2) + (match.group(3) or ""))
        at = match.end()
    count = 0

    def value(i: int) -> tuple[Any, int]:
        """The value starting at tokens[i], and the index after it."""
        nonlocal count
        count += 1
        token, i = tokens[i], i + 1
        if token in ("{", "["):
            out: Any = {} if token == "{" else []
            while tokens[i] != ("]" if token == "[" else "}"):
                if token == "{":
                    name = tokens[i].removesuffix(": ")
                    if name == tokens[i] or name in out or name in _BOOL_OR_NULL:
                        raise _NotNames
                    out[name], i = value(i + 1)
                else:
                    item, i = value(i)
                    out.append(item)
                if tokens[i] == "," and tokens[i + 1] not in ("}", "]"):
                    i += 1
                elif tokens[i] not in ("}", "]"):
                    raise _NotNames
            return out, i + 1
        if token in (",", "}", "]") or token.endswith(": ") or token in _BOOL_OR_NULL:
            raise _NotNames
        return token, i
    try:
        if not tokens or tokens[0] != key + ": " or key in _BOOL_OR_NULL:
            return None
        found, end = value(1)
    except (_NotNames, IndexError):
        return None
    return (found, count) if end == len(tokens) else None


def _parsed_whole(text: str, file: str, parts: list[_Part]) -> Document:
    """The whole text parsed, and its parts' data for the next parse, when its keys are the
    parts' (always, unless the whole has an error)."""
    doc = parse_yaml(text, file, None)
    data = doc.data
    entries = {part.path[0]: [entry.path[1] for entry in parts if entry.path[:1] == part.path and len(entry.path) == 2]
               for part in parts if part.path and not part.parsed}   # of each section cut into entries
    if not isinstance(data, dict) or list(data) != [part.path[0] for part in parts if len(part.path) == 1] or any(
            not isinstance(data[section], dict) or list(data[section]) != names for section, names in entries.items()):
        return doc
    counts = dict.fromkeys((part.path for part in parts if part.parsed), 0)
    for path in doc.values:
        prefix = path[:2] if path[:2] in counts else path[:1]
        if prefix in counts:
            counts[prefix] += 1
    doc.reusable = _marshalled({part.text: (_value(data, part.path), counts[part.path])
                                for part in parts if part.parsed})
    return doc


def _value(data: dict, path: Path_) -> Any:
    """The value of a part's path, (key,) or (section, name), in the data."""
    return data[path[0]][path[1]] if len(path) == 2 else data[path[0]]


def _marshalled(table: dict[str, Any]) -> bytes | None:
    """The parts' data as the memo keeps it (None: a value marshal cannot store, a date)."""
    try:
        return marshal.dumps(table)
    except ValueError:
        return None
