"""Front-ends: Compose files and containerlab topologies translated into the netcompose
topology data (the dict the loader produces), with the positions of the original files.

A front-end only translates: validation, resolve and everything after see a netcompose
topology and never know where it came from.  Each source position is carried into the
translation's `Document` position tables, so an error in a translated value points at the
file:line:col of the Compose or containerlab file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import Position, SpecError
from ..spec.loader import Document

FORMATS = ("netcompose", "compose", "clab")


class Translation:
    """The netcompose data of a foreign file, and what the translation left out."""

    __slots__ = ("doc", "sources", "ignored", "notes")

    def __init__(self, doc: Document, sources: list[Path]) -> None:
        self.doc = doc
        self.sources = sources
        self.ignored: dict[str, Position] = {}   # key with no network meaning → first use
        self.notes: list[str] = []

    def set(self, path: tuple, value: Any, at: Position, key_at: Position | None = None) -> None:
        """Put `value` at `path` of the netcompose data, remembering where it came from."""
        node = self.doc.data
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
        if isinstance(node, list):
            node.append(value)
        else:
            node[path[-1]] = value
        self.doc.values[path] = at
        self.doc.keys[path] = key_at or at

    def section(self, name: str, empty: Any, at: Position) -> Any:
        """A top-level section of the netcompose data, with a position (errors about its
        entries find their place through it)."""
        if name not in self.doc.data:
            self.set((name,), empty, at)
        return self.doc.data[name]

    def ignore(self, key: str, at: Position) -> None:
        self.ignored.setdefault(key, at)

    def summary(self) -> list[str]:
        """One note for every ignored key, plus the translation's own notes."""
        lines = list(self.notes)
        if self.ignored:
            lines.append("ignored (no network meaning): " + ", ".join(sorted(self.ignored)))
        return lines


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:", re.M)


def detect(text: str) -> str:
    """`services:` at the top level → Compose; `topology:` → containerlab; else netcompose."""
    keys = set(_TOP_KEY.findall(text))
    if "containers" not in keys and "topology" in keys:
        return "clab"
    if "containers" not in keys and "services" in keys:
        return "compose"
    return "netcompose"


def unsupported(at: Position, what: str, why: str) -> SpecError:
    """The one-line error for a network feature netcompose cannot reproduce (exit 3)."""
    return SpecError(at, f"{what} is not supported: {why}", "remove it or build that part by other means")


def translate(fmt: str, paths: list[Path], env: dict[str, str], profiles: list[str],
              project: str | None) -> Translation:
    if fmt == "compose":
        from .compose import translate as compose
        return compose(paths, env, profiles, project)
    from .clab import translate as clab
    if len(paths) > 1:
        raise SpecError(Position(str(paths[1]), 1, 1), "a containerlab topology is one file",
                        "pass -f only once for a .clab.yml")
    return clab(paths[0], env, project)
