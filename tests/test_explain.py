"""`explain`: verdicts and their reasons, with positions, for a policy-heavy topology."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netcompose import Project
from netcompose.errors import ConflictError, SpecError
from netcompose.explain import explain
from netcompose.spec import load
from netcompose.spec.resolve import resolve

from .conftest import REPO, needs_root, run_cli

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


# --live on the running lab: (source, target, proto, port) → [(verdict, line of the deciding
# declaration)] that the traced probe must meet (the bridge drops l1's ARP request: icc: false).
LIVE = {
    ("kiosk", "web", "tcp", 80): [("accept", _line("- {from: guests, to: front")),
                                  ("accept", _line("- {from: any, proto: tcp, ports: [80]}"))],
    ("kiosk", "web", "tcp", 22): [("drop", _line("networks:"))],
    ("kiosk", "db", "icmp", None): [("drop", _line("networks:"))],
    ("web", "db", "tcp", 5432): [("accept", _line("- {to: db, proto: tcp, ports: [5432]}"))],
    ("web", "db", "icmp", None): [("drop", _line("egress:"))],
    ("db", "web", "icmp", None): [("drop", _line("ingress:"))],
    ("l1", "l2", "icmp", None): [("drop", _line("lockers: {subnet"))],
}


def _running(tmp_path, project_name) -> Project:
    """The example up under the test's name, its subnets left to IPAM (free on this shared
    host); every line stays where it is."""
    path = tmp_path / "policies.yaml"
    path.write_text(re.sub(r"\{subnet: [0-9./]+(, )?", "{", TOPOLOGY.read_text()))
    project = Project.load(path, project_name)
    project.up()
    return project


def _trace_tables(project) -> list[str]:
    found = []
    for ns in ["", *(project.netns_of(c) for c in project.spec.topology.containers)]:
        argv = ["nft", "list", "tables"] if not ns else ["ip", "netns", "exec", ns, "nft", "list", "tables"]
        found += [line for line in subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
                  if line.endswith(f" netcompose-trace-{project.name}")]   # the host has others' too
    return found


@needs_root
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_live_trace_confirms_the_model_and_names_the_rule(tmp_path, project_name):
    project = _running(tmp_path, project_name)
    try:
        for case, expected in LIVE.items():
            [answer] = project.explain(*case, live=True)
            live = answer["live"]
            assert live["traced"] and live["answered"] is answer["reachable"], (case, live)
            met = {(s["verdict"], int(s["source"].split(":")[-2])) for s in live["steps"] if s["source"]}
            assert set(expected) <= met, (case, live["steps"])
            if not answer["reachable"]:
                decided = live["steps"][live["decided"]]
                assert (decided["verdict"], int(decided["source"].split(":")[-2])) == expected[0]
            assert _trace_tables(project) == [], case   # removed after each probe
        # A trace table left behind (explain killed mid-probe) is the project's: up removes it.
        from netcompose.drivers.netlink import Namespaces
        from netcompose.drivers.nftables import NftablesDriver
        from netcompose.livetrace import Tracer
        nss = Namespaces()
        try:
            Tracer(NftablesDriver(nss), project_name).install("", "inet", ["prerouting"], [])
        finally:
            nss.close()
        assert len(_trace_tables(project)) == 1
        assert [a.op for a in project.plan().plan.actions if "trace" in a.key] == ["delete"]
        project.up()
        assert _trace_tables(project) == []
        # The command line: the model's answer, then the traced verdict with its line.
        result = run_cli("explain", "-f", str(project.spec.path), "-p", project_name, "web", "db", "--live")
        assert result.returncode == 0, result.stderr
        assert "live: dropped in web by chain output; the model agrees" in result.stdout
        assert (f"✗ in web: inet netcompose-{project_name} chain output policy drop (no rule matched): "
                f"containers.web.firewall.egress  ({project.spec.path}:{_line('egress:')}:7)") in result.stdout
    finally:
        project.down()


@needs_root
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_live_trace_never_replaces_a_table_it_did_not_make(tmp_path, project_name):
    project = _running(tmp_path, project_name)
    try:
        subprocess.run(["nft", "add", "table", "inet", f"netcompose-trace-{project_name}"], check=True)
        with pytest.raises(ConflictError, match="already exists and is not netcompose's"):
            project.explain("kiosk", "web", "tcp", 80, live=True)
        assert subprocess.run(["nft", "list", "table", "inet", f"netcompose-trace-{project_name}"],
                              capture_output=True).returncode == 0   # still there, untouched
        not_up = run_cli("explain", "-f", str(project.spec.path), "-p", f"{project_name}b", "web", "db", "--live")
        assert not_up.returncode == 1 and "is not up" in not_up.stderr   # nothing to probe
    finally:
        subprocess.run(["nft", "delete", "table", "inet", f"netcompose-trace-{project_name}"], capture_output=True)
        project.down()


@needs_root
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_check_hints_live_which_names_a_drop_the_model_does_not_know(topo, blocks, project_name):
    project = topo(blocks((REPO / "topologies/three-tier.yaml").read_text()))
    project.up()
    foreign = f"{project_name}x"   # a table of someone else's in db's sandbox, dropping what comes in
    in_db = ["ip", "netns", "exec", project.netns_of("db"), "nft"]
    try:
        subprocess.run([*in_db, "add", "table", "inet", foreign], check=True)
        subprocess.run([*in_db, "add", "chain", "inet", foreign, "input",
                        "{ type filter hook input priority -10 ; policy drop ; }"], check=True)
        check = run_cli("check", "-f", str(project.spec.path), "-p", project_name)
        assert check.returncode == 1
        assert "why: netcompose explain app db --proto icmp --live" in check.stdout
        assert f"--live -f {project.spec.path} -p {project_name}\n" in check.stdout   # runs as printed
        result = run_cli("explain", "-f", str(project.spec.path), "-p", project_name, "app", "db", "--live")
        assert result.returncode == 0, result.stderr
        assert "live: dropped in db by chain input; the model DISAGREES" in result.stdout
        assert (f"✗ in db: inet {foreign} chain input policy drop (no rule matched) (not this project's)"
                in result.stdout)
    finally:
        project.down()
