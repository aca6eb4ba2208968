"""YAML → plain data, remembering where every key and value came from.

Also does Compose-style `${VAR}` interpolation (with a `.env` beside the file),
Jinja2 templates rendered in a sandbox, and `include:` of fragments.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

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
