"""`netcompose explain SRC DST`: why SRC can or cannot reach DST, from the model.

The same expectation `check` probes (netcompose.check.expectation), told as its steps: the
path (a shared network, a direct link, routes and a policy between networks) and each end's
firewall, each with the file:line:col of the declaration that decides.
"""
from __future__ import annotations

from typing import Any, Callable

from .check import expectation
from .errors import SpecError
from .origins import declared_at
from .spec.resolve import Resolved


def explain(res: Resolved, where: Callable[..., Any], source: str, target: str, proto: str = "icmp",
            port: int | None = None) -> list[dict[str, Any]]:
    """One answer per address family both ends have: addresses, verdict and steps."""
    for name in (source, target):
        if name not in res.containers:
            raise SpecError(None, f"no container '{name}' in the topology",
                            "name one of: " + ", ".join(sorted(res.containers)))
    a, b = res.containers[source], res.containers[target]
    answers = []
    for version in (4, 6):
        src, dst, allowed, reason, steps = expectation(res, a, b, proto, port, version)
        if not dst and answers:
            continue   # one family is enough to say why the other is absent only when none is there
        answers.append({"family": version, "source_address": src, "target_address": dst, "reachable": allowed,
                        "reason": reason,
                        "steps": [{"text": s.text, "allows": s.allows, "path": list(s.where),
                                   "source": declared_at(where, s.where)}
                                  for s in steps]})
    return answers


def render(answers: list[dict[str, Any]], source: str, target: str, proto: str, port: int | None) -> list[str]:
    what = f"{proto}{f' port {port}' if port else ''}"
    lines = []
    for ans in answers:
        verdict = "can reach" if ans["reachable"] else "cannot reach"
        addresses = f" ({ans['source_address']} → {ans['target_address']})" if ans["target_address"] else ""
        lines.append(f"{source} {verdict} {target} over {what}, IPv{ans['family']}{addresses}: {ans['reason']}")
        for step in ans["steps"]:
            lines.append(f"  {'✓' if step['allows'] else '✗'} {step['text']}  ({step['source']})")
        if "live" in ans:
            from .livetrace import render as render_live
            lines += render_live(ans["live"], ans["reachable"])
    return lines
