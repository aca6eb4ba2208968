"""`netcompose convert`: a loaded topology written back as a netcompose file, each part
commented with the file:line it came from."""
from __future__ import annotations

import os
from typing import Any

import yaml

from ..errors import Position
from ..spec import Spec
from ..spec.loader import Document


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


class _Writer:
    def __init__(self, doc: Document, base: str):
        self.doc, self.base = doc, base
        self.lines: list[str] = []
        self.last: Position | None = None

    def origin(self, path: tuple) -> str:
        """` # file:line` when this part comes from somewhere the previous comment did not say."""
        pos = self.doc.keys.get(path) or self.doc.values.get(path)
        if pos is None or (self.last and (pos.file, pos.line) == (self.last.file, self.last.line)):
            return ""
        self.last = pos
        return f"  # {os.path.relpath(pos.file, self.base) if pos.file.startswith('/') else pos.file}:{pos.line}"

    def value(self, value: Any, path: tuple, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                label = _scalar(key)
                if isinstance(item, (dict, list)) and item:
                    self.lines.append(f"{pad}{label}:{self.origin(path + (key,))}")
                    self.value(item, path + (key,), indent + 1)
                else:
                    self.lines.append(f"{pad}{label}: {_scalar(item)}{self.origin(path + (key,))}")
        else:
            for i, item in enumerate(value):
                if isinstance(item, dict) and item and all(not isinstance(v, (dict, list)) for v in item.values()):
                    self.lines.append(f"{pad}- {_scalar(item)}{self.origin(path + (i,))}")
                elif isinstance(item, (dict, list)) and item:
                    self.lines.append(f"{pad}-{self.origin(path + (i,))}")
                    self.value(item, path + (i,), indent + 1)
                else:
                    self.lines.append(f"{pad}- {_scalar(item)}{self.origin(path + (i,))}")


def render(spec: Spec) -> str:
    """The netcompose topology of `spec`: `config` of it equals `config` of the original."""
    base = str(spec.path.resolve().parent)
    writer = _Writer(spec.doc, base)
    data = dict(spec.doc.data)
    data["name"] = spec.project
    writer.lines.append(f"# netcompose topology converted from {spec.path.name} ({spec.format}); "
                        "comments give the source line of each part")
    for note in spec.notes:
        writer.lines.append(f"# note: {note}")
    writer.value(data, (), 0)
    return "\n".join(writer.lines) + "\n"
