"""Kernel names stay distinct when their hashes collide (forced here), and Compose's
target-only ports get a stable ephemeral host port."""
from __future__ import annotations

import pytest

from netcompose import Project, names
from netcompose.compile import compile_resources
from netcompose.spec import load
from netcompose.spec.resolve import resolve

from .conftest import needs_root

LAB = ("networks:\n  front: {subnet: 10.77.0.0/24}\n  back: {subnet: 10.78.0.0/24}\n"
       "containers:\n  web: {networks: [front, back]}\n  db: {networks: [back]}\n")


@pytest.fixture
def colliding(monkeypatch):
    """Every plain digest of the lab's bridge `front` and endpoints web/front and db/back is
    the same: three objects would get one kernel name."""
    real = names.digest

    def digest(*parts: str) -> str:
        if parts[1:] in (("net", "front"), ("ep", "web/front"), ("ep", "db/back")):
            return "aaaaaaaa"
        return real(*parts)
    monkeypatch.setattr(names, "digest", digest)
    names.host_ifname.cache_clear()
    yield
    names.host_ifname.cache_clear()


def host_names(path, project: str) -> dict:
    spec = load(path, project, environ={})
    res = resolve(spec.topology, spec.doc, project)
    compile_resources(res)   # no two resources with one key
    found = {("net", n): net.bridge for n, net in res.networks.items()}
    found.update({("ep", f"{c.name}/{ep.network}"): ep.host_ifname for c in res.containers.values()
                  for ep in c.endpoints})
    return found


def test_colliding_hashes_resolve_to_distinct_deterministic_names(tmp_path, colliding):
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    first = host_names(path, "p")
    assert len(set(first.values())) == len(first)
    # The pair that sorts first keeps the plain digest; the others are salted.
    assert first[("ep", "db/back")] == "p-aaaaaaaa"
    assert first[("ep", "web/front")] != "p-aaaaaaaa" and first[("net", "front")] != "p-aaaaaaaa"
    assert all(len(name) <= 15 for name in first.values())
    assert host_names(path, "p") == first                          # deterministic
    # Declaration order does not matter, and the scope observes the same names.
    path.write_text("containers:\n  db: {networks: [back]}\n  web: {networks: [front, back]}\n"
                    "networks:\n  back: {subnet: 10.78.0.0/24}\n  front: {subnet: 10.77.0.0/24}\n")
    assert host_names(path, "p") == first
    scope = Project(load(path, "p", environ={})).scope()
    assert scope.host_ifnames == frozenset(first.values())


@needs_root
def test_colliding_hashes_come_up_and_stay_converged(topo, project_name, colliding):
    project = topo(LAB)
    project.up()
    assert not topo(LAB).plan().plan       # observed under the same names: nothing to do
    ps = {(row["container"], row["network"]): row for row in topo(LAB).ps()}
    assert len({row["host_ifname"] for row in ps.values()}) == 3 and all(row["state"] == "up" for row in ps.values())
    topo(LAB).down()
