"""Start-up imports, validated topologies remembered between runs, `ps` at its word, and
`check` by equivalence classes."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from netcompose.probe import ping

from .conftest import REPO, needs_root, run_cli
from .test_kernel import ip, three_tier  # noqa: F401 (a fixture)
from .test_ovs import ovs_topo  # noqa: F401 (a fixture)

HEAVY = ("pydantic", "pyroute2", "rich", "jinja2", "ovs", "yaml", "netcompose.engine")


def modules_loaded(code: str) -> set[str]:
    """Modules imported by running `code` in a fresh interpreter."""
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_version_and_help_import_no_heavy_package():
    for argv in (["--version"], ["--help"], ["up", "--help"]):
        loaded = modules_loaded(f"import netcompose.cli\ntry:\n    netcompose.cli.main({argv!r})\n"
                                "except SystemExit:\n    pass")
        heavy = {m for m in loaded if m.startswith(HEAVY)}
        assert not heavy, (argv, heavy)
    assert run_cli("--version").stdout.startswith("netcompose ")


@needs_root
def test_an_unchanged_file_loads_without_pydantic(tmp_path):
    (tmp_path / "topo.yaml").write_text((REPO / "topologies/three-tier.yaml").read_text()
                                        + f"vars: {{run: {secrets.token_hex(8)}}}\n")   # never seen before
    load = ("from netcompose.spec import load\n"
            f"spec = load({str(tmp_path / 'topo.yaml')!r}, 'tmemo1')\n"
            "print(repr(spec.topology))")
    first = subprocess.run([sys.executable, "-c", load + "\nimport sys; print('pydantic' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    second = subprocess.run([sys.executable, "-c", load + "\nimport sys; print('pydantic' in sys.modules)"],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    assert first[1] == "True" and second[1] == "False"
    assert first[0] == second[0]   # the remembered records equal the freshly validated ones


def test_remembered_records_round_trip_every_example():
    from netcompose.spec import memo
    from netcompose.spec.loader import parse_yaml
    from netcompose.spec.model import Topology
    for path in sorted((REPO / "topologies").glob("*.yaml")):
        doc = parse_yaml(path.read_text(), str(path), {})
        validated = memo.records(Topology.model_validate(doc.data))
        assert memo._decode(json.loads(json.dumps(memo._encode(validated)))) == validated, path


@needs_root
@pytest.mark.kernel
def test_ps_lists_direct_wires_and_their_state(three_tier, project_name):  # noqa: F811
    rows = [r for r in three_tier.ps() if r["link"]]
    assert {(r["container"], r["link"], r["ipv4"], r["state"]) for r in rows} == {
        ("app", "db:p2p0", "10.99.0.1/30", "up"), ("db", "app:p2p0", "10.99.0.2/30", "up")}
    ip("link", "set", "p2p0", "down", ns=f"{project_name}-db")
    states = {r["container"]: r["state"] for r in three_tier.ps() if r["link"]}
    assert states == {"app": "up", "db": "down"}
    table = run_cli("ps", "-f", str(REPO / "topologies/three-tier.yaml"), "-p", project_name).stdout
    assert "link to app:p2p0" in table and "link to db:p2p0" in table


@needs_root
@pytest.mark.kernel
def test_ps_shows_ovs_internal_endpoints_as_they_are(ovs_topo, project_name):  # noqa: F811
    project = ovs_topo(f"""
networks:
  lan: {{driver: ovs, subnet: 10.74.0.0/24, ovs: {{bridge: {project_name}-ps, datapath_type: netdev}}}}
containers:
  port: {{networks: {{lan: {{ipv4_address: 10.74.0.11, type: ovs-internal}}}}}}
  pair: {{networks: {{lan: {{ipv4_address: 10.74.0.12}}}}}}
""")
    project.up()
    assert ping(f"{project_name}-pair", "10.74.0.11")
    rows = {r["container"]: r for r in project.ps()}
    assert rows["port"]["state"] == "up" and rows["port"]["mac"] and rows["pair"]["state"] == "up"
    ip("link", "set", "eth0", "down", ns=f"{project_name}-port")
    assert {r["container"]: r["state"] for r in project.ps()} == {"port": "down", "pair": "up"}
