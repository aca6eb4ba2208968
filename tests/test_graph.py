"""`graph`: stable drawings of the example topologies, and an SVG that really renders."""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from xml.etree import ElementTree

import pytest

from netcompose.graph import RENDER
from netcompose.spec import load
from netcompose.spec.resolve import resolve

from .conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests/golden"
EXAMPLES = ["three-tier.yaml", "policies.yaml", "minimal.yaml", "ospf/ospf.yaml.j2", "lab200.yaml.j2"]


def _resolved(name: str):
    spec = load(REPO / "topologies" / name, "shop")
    return resolve(spec.topology, spec.doc, "shop")


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_golden(name, fmt):
    text = RENDER[fmt](_resolved(name))
    path = GOLDEN / f"graph-{Path(name).name.removesuffix('.j2').removesuffix('.yaml')}.{fmt}"
    if not path.exists():   # a new golden file is written once, then reviewed and committed
        path.write_text(text)
    assert text == path.read_text()


def test_policies_and_links_are_edges():
    dot = RENDER["dot"](_resolved("policies.yaml"))
    assert 'net_guests -- net_front [label="policy tcp 80", style=dashed' in dot
    assert 'c_app -- c_db [label="p2p0 ↔ p2p0\\n10.99.0.1/30\\n10.99.0.2/30"' in RENDER["dot"](_resolved("three-tier.yaml"))


def _distinct_pixels(png: bytes) -> int:
    """Distinct byte values of the decompressed image data: a blank image has a handful."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(data)))


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (scripts/install-deps.sh)")
def test_svg_and_html_render(tmp_path):
    out = tmp_path / "g.svg"
    result = run_cli("graph", "-f", "topologies/three-tier.yaml", "-o", str(out))
    assert result.returncode == 0, result.stderr
    root = ElementTree.parse(out).getroot()
    assert root.tag.endswith("svg") and "network front" in out.read_text()
    dot_text = run_cli("graph", "-f", "topologies/three-tier.yaml").stdout
    png = subprocess.run(["dot", "-Tpng"], input=dot_text.encode(), capture_output=True, check=True).stdout
    assert _distinct_pixels(png) > 16
    page = run_cli("graph", "-f", "topologies/three-tier.yaml", "-T", "html").stdout
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page and "src=" not in page
