"""`explain`: verdicts and their reasons, with positions, for a policy-heavy topology."""
from __future__ import annotations

from pathlib import Path

import pytest

from netcompose.errors import SpecError
from netcompose.explain import explain
from netcompose.spec import load
from netcompose.spec.resolve import resolve

from .conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "topologies/policies.yaml"
LINES = TOPOLOGY.read_text().splitlines()


def _line(needle: str) -> int:
    return next(i for i, line in enumerate(LINES, 1) if needle in line)


@pytest.fixture(scope="module")
def model():
    spec = load(TOPOLOGY, "shopfw")
    return resolve(spec.topology, spec.doc, "shopfw"), spec.doc.where


# (source, target, proto, port) → (reachable, [(allows, line of the deciding declaration)])
CASES = {
    ("kiosk", "web", "tcp", 80): (True, [(True, _line("- {from: guests, to: front")),
                                         (True, _line("- {from: any, proto: tcp, ports: [80]}"))]),
    ("kiosk", "web", "tcp", 22): (False, [(False, _line("  front: {subnet"))]),
    ("kiosk", "db", "icmp", None): (False, [(False, _line("  back: {subnet"))]),
    ("web", "db", "tcp", 5432): (True, [(True, _line("    networks: [back]")),
                                        (True, _line("- {to: db, proto: tcp, ports: [5432]}"))]),
    ("web", "db", "icmp", None): (False, [(True, _line("    networks: [back]")), (False, _line("egress:"))]),
    ("db", "web", "icmp", None): (False, [(True, _line("networks: [front, back]")), (False, _line("ingress:"))]),
    ("l1", "l2", "icmp", None): (False, [(False, _line("lockers: {subnet"))]),
}


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(map(str, c)))
def test_verdicts_and_reasons_point_at_the_file(model, case):
    res, where = model
    [answer] = explain(res, where, *case)
    reachable, steps = CASES[case]
    assert answer["reachable"] is reachable
    assert [(s["allows"], int(s["source"].split(":")[-2])) for s in answer["steps"]] == steps


def test_explain_agrees_with_check(model):
    from netcompose.check import expected_probes
    res, where = model
    for p in expected_probes(res, everything=True):
        [answer] = explain(res, where, p.source, p.target, p.proto, p.port)
        assert answer["reachable"] == p.expected, p


def test_unknown_container_is_an_input_error(model):
    res, where = model
    with pytest.raises(SpecError, match="no container 'nope'.*name one of: db, kiosk, l1, l2, web"):
        explain(res, where, "web", "nope")


def test_cli_text(model):
    result = run_cli("explain", "-f", "topologies/policies.yaml", "kiosk", "web", "--port", "80")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == \
        "kiosk can reach web over tcp port 80, IPv4 (10.63.0.2 → 10.61.0.2): policy guests → front"
    assert f"✓ policy guests → front  (topologies/policies.yaml:{_line('- {from: guests')}:5)" in result.stdout
    assert run_cli("explain", "-f", "topologies/policies.yaml", "web", "nope").returncode == 3
