"""`netcompose config`: complete (every key of the file, defaults filled in) and offline."""
from __future__ import annotations

import json

import yaml

from netcompose.spec.model import Topology

from .conftest import REPO, run_cli
from .test_docs import readme_topology


def key_paths(data, prefix=()) -> set[tuple]:
    """Every path to a key of a mapping, through lists by index."""
    paths: set[tuple] = set()
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if isinstance(data, dict):
            paths.add(prefix + (key,))
        paths |= key_paths(value, prefix + (key,))
    return paths


def lookup(data, path: tuple):
    for part in path:
        data = data[part]
    return data


def config(path, project_name) -> dict:
    # No OVSDB at that socket, and the file adopts a namespace that does not exist: neither is needed.
    result = run_cli("config", "--json", "-f", str(path), "-p", project_name, "--ovsdb", "unix:/nonexistent/db.sock")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_round_trip_has_every_key_of_the_file_and_needs_no_host(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text(readme_topology())
    document = config(path, project_name)
    # The file's keys, short forms written long (networks: [a] → networks: {a: {}}, "8080:80" → a mapping).
    written = Topology.model_validate(yaml.safe_load(path.read_text())).model_dump(
        mode="json", by_alias=True, exclude_unset=True)
    missing = [p for p in key_paths(written) if p not in key_paths(document)]
    assert not missing, missing
    for p in key_paths(written):
        if not isinstance(lookup(written, p), (dict, list)) and p != ("name",):  # -p overrides name:
            assert lookup(document, p) == lookup(written, p), p
    for section in ("address_pools", "links", "policies", "expect"):
        assert document[section], section
    web = document["containers"]["web"]
    assert web["ports"][0] == {"target": 80, "published": 8080, "protocol": "tcp", "host_ip": None}  # all addresses
    assert web["firewall"]["egress"][0]["to"] == "db" and document["networks"]["front"]["mtu"] == 1500
    assert document["containers"]["db"]["networks"]["back"]["ifname"] == "eth0"          # a default, filled in
    assert "containers.db.networks.back.ipv4_address" in document["derived"]["from_host"]
    assert document["derived"]["containers"]["legacy"] == {**document["derived"]["containers"]["legacy"],
                                                           "netns": "existing-ns", "adopted": True}

    # Without `derived`, the document is a topology that resolves to the same document.
    del document["derived"]
    again = tmp_path / "again.json"
    again.write_text(json.dumps(document))
    assert {k: v for k, v in config(again, project_name).items() if k != "derived"} == document


def test_config_of_a_template_with_processes_round_trips_from_another_folder(tmp_path, project_name):
    document = config(REPO / "topologies" / "ospf" / "ospf.yaml.j2", project_name)
    assert document["containers"]["r1"]["working_dir"] == str(REPO / "topologies" / "ospf" / "r1")
    del document["derived"]
    again = tmp_path / "again.json"   # another folder: relative working dirs would break here
    again.write_text(json.dumps(document))
    assert {k: v for k, v in config(again, project_name).items() if k != "derived"} == document
