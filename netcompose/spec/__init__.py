"""spec: read a topology file (with includes, variables and templates) and validate it."""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from .. import names
from ..errors import Position, SpecError, excerpt, shorten
from ..gcpause import gc_paused
from ..inputs import read_text
from . import memo, template
from .loader import Document, UnparsedDocument, parse_reusing, parse_yaml, read_dotenv, read_env_file, safe_load
from .memo import Record
from .patterns import HOSTNAME_PATTERN, IFNAME_PATTERN, MAC_PATTERN, NAME_PATTERN, PROJECT_PATTERN

LIST_SECTIONS = ("links", "policies", "expect", "address_pools")
MAP_SECTIONS = ("networks", "containers", "vars")


class Source(NamedTuple):
    """How to read a topology: its format (None: detected from the content), Compose
    override files, env files (instead of `.env`) and Compose profiles."""

    format: str | None = None
    more_files: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()


class Spec(NamedTuple):
    path: Path
    doc: Document
    topology: Record        # the validated Topology model's fields (see memo)
    project: str
    sources: list[Path]     # every file the topology was built from (watch mode follows them)
    format: str = "netcompose"
    notes: Sequence[str] = ()   # what a Compose/containerlab translation left out
    digest: str = ""        # of the document as loaded (memo's name for its records)


def _leading_vars(text: str, file: str) -> dict[str, Any]:
    """The top-level `vars:` block of a template, read before the template renders."""
    match = re.search(r"^vars:[^\n]*\n(?:(?:[ \t]+[^\n]*|[ \t]*)\n)*", text, re.M)
    if not match:
        return {}
    at = Position(file, text[:match.start()].count("\n") + 1, 1)
    try:
        data = safe_load(match.group(0), at) or {}
    except SpecError:
        raise SpecError(at, "vars: block is not valid YAML", "keep vars: plain YAML (no template syntax)") from None
    return (data.get("vars") if isinstance(data, dict) else None) or {}


def render_template(text: str, path: Path, variables: dict[str, Any],
                    pulled_in: list[Path] | None = None) -> tuple[str, list[int]]:
    """Render a template: its text and the template line of each of its lines (see
    template.render); `pulled_in` gains the files it includes or imports (watch mode follows them)."""
    return template.render(text, path, {**_leading_vars(text, str(path)), **variables}, pulled_in)


def _is_template(path: Path, text: str) -> bool:
    return path.name.endswith(".j2") or re.search(r"^template:\s*true\s*$", text, re.M) is not None


def _load_document(path: Path, env: dict[str, str], variables: dict[str, Any], at: Position | None,
                   sources: list[Path], confined_to: Path | None = None, name: str | None = None,
                   text: str | None = None, earlier: memo.Earlier | None = None) -> Document:
    """Read (unless given its `text`), render and parse one file; `sources` gains it and
    every file its template pulled in.  `earlier`: what the memo keeps of the file's (or
    project's) last document, whose parts a plain file's parse reuses."""
    text = read_text(path, at, confined_to, name=name) if text is None else text
    sources.append(path)
    lines = None
    if _is_template(path, text):
        text, lines = render_template(text, path, variables, sources)
    if earlier is not None and lines is None:
        doc = parse_reusing(text, str(path), env, earlier.parts)
    else:
        doc = parse_yaml(text, str(path), env, lines=lines)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise SpecError(doc.where(()), "the topology must be a mapping", "start with keys like networks:")
    return doc


def _merge(main: Document, frag: Document) -> None:
    for key, value in frag.data.items():
        if key in ("include", "template"):
            continue
        if key not in main.data:
            main.data[key] = value
            _copy_positions(main, frag, (key,), (key,))
        elif key in MAP_SECTIONS and isinstance(value, dict) and isinstance(main.data[key], dict):
            for name, item in value.items():
                if name in main.data[key]:
                    raise SpecError(frag.where((key, name), key=True), f"{key}.{name} is defined twice "
                                    f"(also at {main.where((key, name), key=True)})", "define it in one file only")
                main.data[key][name] = item
                _copy_positions(main, frag, (key, name), (key, name))
        elif key in LIST_SECTIONS and isinstance(value, list) and isinstance(main.data[key], list):
            offset = len(main.data[key])
            main.data[key].extend(value)
            for i in range(len(value)):
                _copy_positions(main, frag, (key, i), (key, offset + i))
        elif main.data[key] != value:
            raise SpecError(frag.where((key,), key=True), f"'{key}' conflicts with {main.where((key,), key=True)}",
                            "set it in one file only")


def _copy_positions(main: Document, frag: Document, src: tuple, dst: tuple) -> None:
    for table_main, table_frag in ((main.values, frag.values), (main.keys, frag.keys)):
        for path, pos in table_frag.items():
            if path[:len(src)] == src:
                table_main[dst + path[len(src):]] = pos


def _validation_error(doc: Document, err) -> SpecError:
    """The first of pydantic's ValidationError's problems, at its place in the file."""
    first = err.errors()[0]
    path: tuple = ()
    for part in first["loc"]:
        if path + (part,) in doc.values or path + (part,) in doc.keys:
            path += (part,)
    dotted = shorten(".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and "[" in p)), 120)
    kind = first["type"]
    if "[key]" in first["loc"]:
        return SpecError(doc.where(path, key=True), f"invalid name {excerpt(first.get('input'))}: use letters, digits, "
                         "'_', '.' or '-', starting with a letter or digit", "rename it")
    if kind == "extra_forbidden":
        field = first["loc"][-1]
        return SpecError(doc.where(path, key=True), f"unknown key {excerpt(field)} in {dotted.rpartition('.')[0] or 'top level'}",
                         "remove it or fix its spelling (see `netcompose schema`)")
    message = first["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return SpecError(doc.where(path), f"{dotted}: required key missing", "add it")
    if kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(first.get("ctx", {}).get("pattern"), "invalid value").format(
            excerpt(first.get("input")))
    if kind in ("ip_v4_network", "ip_v6_network") and isinstance(first.get("input"), str):
        try:
            fixed = ipaddress.ip_network(first["input"], strict=False)
            message = f"{excerpt(first['input'])} has host bits set; did you mean {fixed}?"
        except ValueError:
            pass
    return SpecError(doc.where(path), f"{dotted}: {message}", "see `netcompose schema` for the allowed values")


_PATTERN_MESSAGES = {
    NAME_PATTERN: "invalid name {}: use letters, digits, '_', '.' or '-', starting with a letter or digit",
    IFNAME_PATTERN: "invalid interface name {}: use letters, digits, '_', '.' or '-'",
    MAC_PATTERN: "invalid MAC address {}: write six hex pairs like 02:42:0a:00:00:01",
    PROJECT_PATTERN: "invalid name {}: use lowercase letters, digits, '_' or '-'",
    HOSTNAME_PATTERN: "invalid host name {}: use letters, digits, '-', '_' and dots",
}


def default_project(path: Path, topology: Record, explicit: str | None) -> str:
    if explicit:
        return explicit
    if topology.name:
        return topology.name
    return names.folder_project(path.resolve().parent.name)


def load(path: str | Path, project: str | None = None, variables: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None, source: Source | None = None) -> Spec:
    with gc_paused():
        return _load(Path(path), project, variables, environ, source or Source())


def _load(path: Path, project: str | None, variables: dict[str, Any] | None,
          environ: dict[str, str] | None, source: Source) -> Spec:
    dotenv: dict[str, str] = {}
    for env_file in source.env_files:
        dotenv.update(read_env_file(Path(env_file)))
    env = {**(dotenv if source.env_files else read_dotenv(path.parent)), **(os.environ if environ is None else environ)}
    from ..frontends import detect, translate
    text = read_text(path)
    fmt = source.format or detect(text)
    if fmt != "netcompose":
        translation = translate(fmt, [path, *map(Path, source.more_files)], env, list(source.profiles), project)
        topology, digest = _validate(translation.doc, project)
        return Spec(path, translation.doc, topology, _project(path, topology, project), translation.sources, fmt,
                    translation.summary(), digest)
    if source.more_files:
        raise SpecError(None, "-f is given more than once", "override files are for Compose files; "
                        "use include: in a netcompose topology")
    # A plain file (no template, no include, no `$` in a value: its text alone says what it
    # holds) seen before needs no YAML parsed: its records are remembered by its text.
    plain = not _is_template(path, text)
    if plain and (found := memo.by_text(text, str(path), project)) is not None:
        return Spec(path, UnparsedDocument(text, str(path)), found[0], _project(path, found[0], project), [path],
                    digest=found[1])
    variables = variables or {}
    sources: list[Path] = []
    earlier = memo.Earlier(str(path), project)
    doc = _load_document(path, env, variables, None, sources, text=text, earlier=earlier)
    includes = doc.data.get("include") or []
    if not isinstance(includes, list):
        raise SpecError(doc.where(("include",)), "include: must be a list of files", "write include: [a.yaml]")
    for i, item in enumerate(includes):
        if not isinstance(item, str):
            raise SpecError(doc.where(("include", i)), "include entries must be file names", "quote the file name")
        fragment_path = path.parent / item
        fragment = _load_document(fragment_path, env, variables, doc.where(("include", i)), sources,
                                  confined_to=path.parent, name=item)
        if fragment.data.get("include"):
            raise SpecError(fragment.where(("include",), key=True), "nested include is not supported",
                            "list every fragment in the main file")
        _merge(doc, fragment)
    topology, digest = _validate(doc, project, text if plain and not includes and not doc.interpolated else None,
                                 earlier)
    return Spec(path, doc, topology, _project(path, topology, project), sources, digest=digest)


def _validate(doc: Document, project: str | None, text: str | None = None,
              earlier: memo.Earlier | None = None) -> tuple[Record, str]:
    """The topology's records and their digest: remembered, or validated by the models (see
    memo); `text`: the whole text of a plain file; `earlier`: as read for its parse."""
    def validate(data: Any) -> Record:
        from pydantic import ValidationError

        from .model import Topology
        try:
            return memo.records(Topology.model_validate(data))
        except ValidationError as exc:
            raise _validation_error(doc, exc) from None
    return memo.validated(doc, project, validate, text, earlier)


def check_project_name(project: str) -> str:
    """An explicit project name (-p): it names folders under /run/netcompose and
    /var/log/netcompose, so nothing but the plain characters of a name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", project):
        raise SpecError(None, f"invalid project name {excerpt(project)}",
                        "use up to 32 lowercase letters, digits, '_' or '-', starting with a letter or digit")
    return project


def _project(path: Path, topology: Record, project: str | None) -> str:
    return default_project(path, topology, check_project_name(project) if project is not None else None)
