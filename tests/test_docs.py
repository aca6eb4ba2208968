"""The README's promises about files: every YAML block of the README and every file in
topologies/ validates against the JSON Schema (what editors check) and loads (what
netcompose checks); the README's main example comes up and passes its own `check`."""
from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest
import yaml

from netcompose import Project
from netcompose.drivers import namespaces
from netcompose.spec import load, render_template
from netcompose.spec.model import json_schema
from netcompose.spec.resolve import resolve

from .conftest import REPO, needs_root

SCHEMA = json_schema()
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.M)


def readme_yaml_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)


def readme_topology() -> str:
    """The README's main example: its longest YAML block."""
    return max(readme_yaml_blocks(), key=len)


def validate(text: str, where: str) -> None:
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text) or {}), key=str)
    assert not errors, f"{where}: {errors[0].json_path}: {errors[0].message}"


@pytest.mark.parametrize("index", range(len(readme_yaml_blocks())))
def test_readme_yaml_block_validates_and_loads(index, tmp_path):
    text = readme_yaml_blocks()[index]
    validate(text, f"README.md yaml block {index}")
    path = tmp_path / "block.yaml"
    path.write_text(text)
    spec = load(path, "docs")
    resolve(spec.topology, spec.doc, spec.project)


TOPOLOGIES = sorted(p for p in (REPO / "topologies").rglob("*") if p.name.endswith((".yaml", ".yaml.j2")))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=[str(p.relative_to(REPO / "topologies")) for p in TOPOLOGIES])
def test_topology_validates_loads_and_names_a_schema_that_resolves(path):
    text = path.read_text()
    # A template validates once rendered (editors see the raw text, which is not YAML yet).
    validate(render_template(text, path, {})[0] if path.name.endswith(".j2") else text, path.name)
    spec = load(path, "docs")
    resolve(spec.topology, spec.doc, spec.project)
    # yaml-language-server resolves a relative $schema against the file's own folder.
    (target,) = MODELINE.findall(text)
    assert json.loads((path.parent / target).read_text()) == SCHEMA


def test_schema_accepts_the_short_forms_the_loader_accepts(tmp_path):
    short = """
networks:
  lan:
  wan: {}
containers:
  a: {networks: [lan, wan], ports: ["8080:80", "127.0.0.1:53:53/udp", 9000, " 81:80 "],
      sysctls: {net.ipv4.ip_forward: 1, net.ipv4.conf.all.forwarding: true}}
  b:
    networks: {lan: , wan: null}
  c:
  d: {networks: [lan], command: sleep 100, environment: [A=1, B=two], restart: no}
  e: {networks: [lan], command: [sleep, "100"], environment: {PORT: 8080, DEBUG: true, EMPTY: }}
"""
    validate(short, "short forms")
    path = tmp_path / "short.yaml"
    path.write_text(short)
    assert load(path, "docs").topology.containers["a"].ports[3].published == 81
    for bad in ("containers: {a: {ports: ['80:x']}}", "containers: {a: {networks: [1]}}",
                "networks: {lan: {mtu: 10}}"):
        with pytest.raises(AssertionError):
            validate(bad, "bad")



@needs_root
@pytest.mark.kernel
def test_readme_example_comes_up_and_passes_its_own_check(tmp_path, project_name, private_ovs, blocks):
    # Host-side names carry the test's prefix; the host interfaces the example only uses (a
    # macvlan's parent, a host bridge) are made by the test.
    adopted, parent, bridge = f"{project_name}-adopted", f"{project_name}-mvp", f"{project_name}-hbr"
    text = blocks(readme_topology()).replace("existing-ns", adopted).replace("br-lab", f"{project_name}-lab")
    text = re.sub(r"(host_interface: )(\S+)", lambda m: f"{m[1]}{project_name}-{m[2][-4:]}", text)
    text = re.sub(r"(host_bridge: |parent: )(\S+?)([,}\s])",
                  lambda m: m[1] + (parent if m[1] == "parent: " else bridge) + m[3], text)
    path = tmp_path / "example.yaml"
    path.write_text(text)
    namespaces.create(adopted)
    subprocess.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", f"{project_name}-mvq"], check=True)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    project = Project.load(path, project_name, ovsdb=private_ovs.remote)
    try:
        project.up()
        failures = [p for p in project.check() if not p.ok]
        assert not failures, failures
        assert not project.plan().plan
        project.down()
        assert adopted in namespaces.list_named()
    finally:
        namespaces.delete(adopted)
