"""Fuzz the loader: random YAML and random mutations of valid topologies must give a
SpecError or a valid result, never another exception, and never touch the kernel."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcompose.compile import compile_resources
from netcompose.drivers import namespaces, rtnl
from netcompose.errors import SpecError
from netcompose.spec import load
from netcompose.spec.resolve import resolve

REPO = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((REPO / "topologies/three-tier.yaml").read_text())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["10.10.0.1", "10.10.0.0/24", "eth0", "front", "back", "web:p2p0", "02:42:0a",
                                     "300.1.1.1", "", "${X}", "0.0.0.0/0"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


@pytest.fixture
def no_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel or process call before validation passed")
    monkeypatch.setattr(namespaces, "create", refuse)
    monkeypatch.setattr(rtnl.RtnlSocket, "__init__", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        spec = load(path, "p", environ={})
        compile_resources(resolve(spec.topology, spec.doc, "p"))
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)) or "no such file" in str(exc)


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_random_text(tmp_path, no_kernel, text):
    check(tmp_path, text)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(st.data())
def test_mutated_topologies(tmp_path, no_kernel, data):
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = parent.pop(path[-1])
        if not isinstance(doc, dict):
            break
    check(tmp_path, yaml.safe_dump(doc))
