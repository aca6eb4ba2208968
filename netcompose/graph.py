"""`netcompose graph`: the topology drawn from the resolved model.

Networks (bridge or OVS, with subnet and VLAN), containers (with published ports), their
endpoints as edges labelled with interface and addresses, direct links, and policies as
dashed edges between networks.  Graphviz dot and Mermaid are text; SVG is dot's rendering;
HTML is that SVG in one self-contained page.
"""
from __future__ import annotations

import html
import subprocess
from typing import Any

from .spec.resolve import Resolved

def model(res: Resolved) -> dict[str, list[dict[str, Any]]]:
    """Nodes and edges, in file order: what every format draws."""
    nodes, edges = [], []
    for net in res.networks.values():
        detail = [str(s) for s in (net.subnet, net.subnet6) if s is not None]
        detail += [f"{net.driver} {net.bridge}"] + ([f"vlan {net.vlan}"] if net.vlan is not None else [])
        detail += ["internal"] * net.internal + ["icc: false"] * (not net.icc)
        nodes.append({"id": f"net_{net.name}", "kind": "network", "label": [f"network {net.name}", *detail]})
    for c in res.containers.values():
        ports = res.topology.containers[c.name].ports
        shown = [f"{host}→{p.target}/{p.protocol}" for p, host in zip(ports, c.host_ports)]
        nodes.append({"id": f"c_{c.name}", "kind": "container",
                      "label": [c.name] + (["ports " + ", ".join(shown)] if shown else [])})
        for ep in c.endpoints:
            addresses = [f"{a}" for a in (ep.address, ep.address6) if a is not None]
            extra = [f"trunks {ep.trunks}"] if ep.trunks else []
            edges.append({"from": f"c_{c.name}", "to": f"net_{ep.network}", "kind": "endpoint",
                          "label": [ep.ifname, *addresses, *extra]})
    for link in res.links:
        target = f"c_{link.b[0]}" if link.b[0] is not None else "host"
        if target == "host" and not any(n["id"] == "host" for n in nodes):
            nodes.append({"id": "host", "kind": "host", "label": ["host"]})
        label = [f"{link.a[1]} ↔ {link.b[1]}"] + list(link.addresses or ())
        edges.append({"from": f"c_{link.a[0]}", "to": target, "kind": "link", "label": label})
    for policy in res.topology.policies:
        what = policy.proto + (f" {','.join(map(str, policy.ports))}" if policy.ports else "")
        edges.append({"from": f"net_{policy.from_}", "to": f"net_{policy.to}", "kind": "policy",
                      "label": [f"policy {what}"]})
    return {"nodes": nodes, "edges": edges}


def _quote(lines: list[str]) -> str:
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def dot(res: Resolved) -> str:
    g = model(res)
    shapes = {"network": "box, style=\"rounded,filled\", fillcolor=\"#dbe9f6\"",
              "container": "box, style=filled, fillcolor=\"#f6efdb\"", "host": "box3d"}
    styles = {"endpoint": "", "link": ", color=\"#b03030\", penwidth=2, dir=both",
              "policy": ", style=dashed, color=\"#307030\""}
    out = [f"graph {_quote([res.project])} {{", "  rankdir=LR;", "  node [fontname=\"Helvetica\", fontsize=10];",
           "  edge [fontname=\"Helvetica\", fontsize=9];"]
    out += [f"  {n['id']} [label={_quote(n['label'])}, shape={shapes[n['kind']]}];" for n in g["nodes"]]
    out += [f"  {e['from']} -- {e['to']} [label={_quote(e['label'])}{styles[e['kind']]}];" for e in g["edges"]]
    return "\n".join(out) + "\n}\n"


def mermaid(res: Resolved) -> str:
    g = model(res)
    def text(lines: list[str]) -> str:
        return "<br/>".join(html.escape(line, quote=True) for line in lines)
    brackets = {"network": ("([", "])"), "container": ("[", "]"), "host": ("[[", "]]")}
    arrows = {"endpoint": "---", "link": "===", "policy": "-.->"}
    out = ["graph LR"]
    out += [f"  {n['id']}{brackets[n['kind']][0]}\"{text(n['label'])}\"{brackets[n['kind']][1]}" for n in g["nodes"]]
    out += [f"  {e['from']} {arrows[e['kind']]}|\"{text(e['label'])}\"| {e['to']}" for e in g["edges"]]
    return "\n".join(out) + "\n"


def svg(res: Resolved) -> str:
    """dot's rendering; Graphviz is the `graphviz` Debian package (scripts/install-deps.sh)."""
    try:
        done = subprocess.run(["dot", "-Tsvg"], input=dot(res), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        from .errors import UnsupportedError
        raise UnsupportedError("graph -T svg (and html) needs Graphviz's `dot`: install the graphviz package "
                               "(scripts/install-deps.sh), or use -T dot or -T mermaid") from None
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.strip()}")
    return done.stdout


def page(res: Resolved) -> str:
    """One self-contained HTML file: the SVG inline, no scripts, nothing fetched."""
    body = svg(res)
    body = body[body.index("<svg"):]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(res.project)}</title>"
            f"</head>\n<body>\n{body}</body></html>\n")


RENDER = {"dot": dot, "mermaid": mermaid, "svg": svg, "html": page}
