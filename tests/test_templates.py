"""Variables, templates and includes: pure, no root."""
from __future__ import annotations

from pathlib import Path

import pytest

from netcompose.compile import compile_resources
from netcompose.errors import SpecError
from netcompose.spec import load
from netcompose.spec.resolve import resolve

REPO = Path(__file__).resolve().parent.parent


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_environment_and_dotenv_interpolation(tmp_path):
    write(tmp_path, ".env", "# comment\nSUBNET=10.51.0.0/24\nexport MTU='1400'\n")
    path = write(tmp_path, "t.yaml", "networks:\n  n:\n    subnet: '${SUBNET}'\n    mtu: ${MTU}\n"
                                     "    gateway: ${GW:-10.51.0.254}\n"
                                     "containers:\n  c: {networks: [n], dns_search: ['$${literal}']}\n")
    spec = load(path, "p", environ={"MTU": "1300"})
    net = spec.topology.networks["n"]
    assert str(net.subnet) == "10.51.0.0/24" and net.mtu == 1300 and str(net.gateway) == "10.51.0.254"
    assert spec.topology.containers["c"].dns_search == ["${literal}"]


def test_required_variable_names_its_place(tmp_path):
    path = write(tmp_path, "t.yaml", "networks:\n  n:\n    subnet: ${SUBNET:?set SUBNET to the lab subnet}\n")
    with pytest.raises(SpecError, match=r"t.yaml:3:13: variable SUBNET is required: set SUBNET"):
        load(path, "p", environ={})


def test_template_generates_a_large_lab():
    spec = load(REPO / "topologies/lab200.yaml.j2", "p", environ={})
    assert len(spec.topology.containers) == 200 and len(spec.topology.networks) == 4
    res = resolve(spec.topology, spec.doc, "p")
    assert len({ep.address for c in res.containers.values() for ep in c.endpoints}) == 200
    small = load(REPO / "topologies/lab200.yaml.j2", "p", {"count": 6, "networks": 2}, environ={})
    assert len(small.topology.containers) == 6 and len(small.topology.networks) == 2


def test_template_errors_point_at_the_template_line(tmp_path):
    path = write(tmp_path, "t.yaml.j2", "networks:\n  n: {}\n{% for x in %}\n")
    with pytest.raises(SpecError, match=r"t.yaml.j2:3:1: template syntax"):
        load(path, "p", environ={})
    path = write(tmp_path, "u.yaml.j2", "networks:\n  n: {}\ncontainers:\n  c: {networks: [{{ missing }}]}\n")
    with pytest.raises(SpecError, match=r"u.yaml.j2:4:1: template: 'missing' is undefined"):
        load(path, "p", environ={})


def test_templates_are_sandboxed(tmp_path):
    (tmp_path / "inside").mkdir()
    path = write(tmp_path / "inside", "t.yaml.j2", "name: {{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(SpecError, match="template"):
        load(path, "p", environ={})
    write(tmp_path, "secret.yaml", "networks: {stolen: {}}\n")
    path = write(tmp_path / "inside", "i.yaml.j2", "{% include '../secret.yaml' %}\n")
    with pytest.raises(SpecError, match="'../secret.yaml' is outside the topology's folder"):
        load(path, "p", environ={})
    path = write(tmp_path / "inside", "o.yaml", "template: true\nname: {{ cycler.__init__.__globals__ }}\n")
    with pytest.raises(SpecError, match="template"):
        load(path, "p", environ={})


def test_template_true_and_vars_precedence(tmp_path):
    path = write(tmp_path, "t.yaml", "template: true\nvars:\n  n: 2\ncontainers:\n"
                                     "{% for i in range(n) %}\n  c{{ i }}: {}\n{% endfor %}\n")
    assert len(load(path, "p", environ={}).topology.containers) == 2
    assert len(load(path, "p", {"n": 5}, environ={}).topology.containers) == 5


def test_includes_merge_and_conflicts_name_both_places(tmp_path):
    write(tmp_path, "nets.yaml", "networks:\n  back: {subnet: 10.52.0.0/24}\n")
    write(tmp_path, "dbs.yaml", "containers:\n  db: {networks: [back]}\nlinks: []\n")
    path = write(tmp_path, "main.yaml", "include: [nets.yaml, dbs.yaml]\nnetworks:\n  front: {}\n"
                                        "containers:\n  web: {networks: [front, back]}\n")
    spec = load(path, "p", environ={})
    assert set(spec.topology.networks) == {"front", "back"} and set(spec.topology.containers) == {"web", "db"}
    compile_resources(resolve(spec.topology, spec.doc, "p"))
    write(tmp_path, "clash.yaml", "networks:\n  front: {mtu: 9000}\n")
    path = write(tmp_path, "bad.yaml", "include: [clash.yaml]\nnetworks:\n  front: {}\n")
    with pytest.raises(SpecError, match=r"clash.yaml:2:3: networks.front is defined twice \(also at .*bad.yaml:3:3\)"):
        load(path, "p", environ={})
    # An error inside a fragment points into the fragment.
    write(tmp_path, "typo.yaml", "containers:\n  x: {netwrks: []}\n")
    path = write(tmp_path, "main2.yaml", "include: [typo.yaml]\n")
    with pytest.raises(SpecError, match=r"typo.yaml:2:7: unknown key 'netwrks'"):
        load(path, "p", environ={})
