"""Start-up imports, validated topologies remembered between runs, `ps` at its word, and
`check` by equivalence classes."""
from __future__ import annotations

import json
import marshal
import os
import random
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


# What only some paths use: diffs of changed files, templates, process commands, file writes.
LAZY = ("difflib", "pickle", "shlex", "secrets", "netcompose.frontends.", "netcompose.livetrace", "netcompose.check")


@needs_root
@pytest.mark.kernel
def test_a_no_op_plan_imports_only_what_it_uses(three_tier, project_name):  # noqa: F811
    loaded = modules_loaded(f"import netcompose.cli\nassert netcompose.cli.main("
                            f"['plan', '-f', {str(three_tier.spec.path)!r}, '-p', {project_name!r}]) == 0")
    assert not {m for m in loaded if m.startswith(HEAVY[:-1] + LAZY)}
    assert "netcompose.engine" in loaded   # the probe did plan


@needs_root
def test_an_unchanged_file_loads_without_pydantic(tmp_path):
    (tmp_path / "topo.yaml").write_text((REPO / "topologies/three-tier.yaml").read_text()
                                        + f"vars: {{run: {secrets.token_hex(8)}}}\n")   # never seen before
    load = ("from netcompose.spec import load\n"
            f"spec = load({str(tmp_path / 'topo.yaml')!r}, 'tmemo1')\n"
            "print(repr(spec.topology))")
    loaded = "\nimport sys; print('pydantic' in sys.modules, 'yaml' in sys.modules)"
    first = subprocess.run([sys.executable, "-c", load + loaded],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    second = subprocess.run([sys.executable, "-c", load + loaded],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    assert first[1] == "True True" and second[1] == "False False"   # a plain file: not even parsed again
    assert first[0] == second[0]   # the remembered records equal the freshly validated ones


def test_remembered_records_round_trip_every_example():
    from netcompose.spec import memo
    from netcompose.spec.loader import parse_yaml
    from netcompose.spec.model import Topology
    for path in sorted((REPO / "topologies").glob("*.yaml")):
        doc = parse_yaml(path.read_text(), str(path), {})
        validated = memo.records(Topology.model_validate(doc.data))
        assert memo._decode(marshal.loads(marshal.dumps(memo._encode(validated)))) == validated, path


@needs_root
@pytest.mark.kernel
def test_ps_lists_direct_wires_and_their_state(three_tier, project_name, blocks):  # noqa: F811
    rows = [r for r in three_tier.ps() if r["link"]]
    assert {(r["container"], r["link"], r["ipv4"], r["state"]) for r in rows} == {
        ("app", "db:p2p0", blocks("10.99.0.1/30"), "up"), ("db", "app:p2p0", blocks("10.99.0.2/30"), "up")}
    ip("link", "set", "p2p0", "down", ns=f"{project_name}-db")
    states = {r["container"]: r["state"] for r in three_tier.ps() if r["link"]}
    assert states == {"app": "up", "db": "down"}
    table = run_cli("ps", "-f", str(REPO / "topologies/three-tier.yaml"), "-p", project_name).stdout
    assert "link to app:p2p0" in table and "link to db:p2p0" in table


@needs_root
@pytest.mark.kernel
def test_ps_shows_ovs_internal_endpoints_as_they_are(ovs_topo, project_name, blocks):  # noqa: F811
    project = ovs_topo(blocks(f"""
networks:
  lan: {{driver: ovs, subnet: 10.74.0.0/24, ovs: {{bridge: {project_name}-ps, datapath_type: netdev}}}}
containers:
  port: {{networks: {{lan: {{ipv4_address: 10.74.0.11, type: ovs-internal}}}}}}
  pair: {{networks: {{lan: {{ipv4_address: 10.74.0.12}}}}}}
"""))
    project.up()
    assert ping(f"{project_name}-pair", blocks("10.74.0.11"))
    rows = {r["container"]: r for r in project.ps()}
    assert rows["port"]["state"] == "up" and rows["port"]["mac"] and rows["pair"]["state"] == "up"
    ip("link", "set", "eth0", "down", ns=f"{project_name}-port")
    assert {r["container"]: r["state"] for r in project.ps()} == {"port": "down", "pair": "up"}


def resolved_lab(tmp_path, text: str):
    from netcompose.spec import load
    from netcompose.spec.resolve import resolve
    (tmp_path / "lab.yaml").write_text(text)
    spec = load(tmp_path / "lab.yaml", "tclass")
    return resolve(spec.topology, spec.doc, spec.project)


def lab(networks: int, per_network: int, extra: str = "") -> str:
    nets = "".join(f"  n{n}: {{subnet: 10.{150 + n}.0.0/24}}\n" for n in range(networks))
    members = "".join(f"  c{n}x{i}: {{networks: [n{n}]}}\n" for n in range(networks) for i in range(per_network))
    return f"networks:\n{nets}containers:\n{members}{extra}"


def test_classes_group_containers_that_behave_alike(tmp_path):
    from netcompose.check import classes
    res = resolved_lab(tmp_path, lab(2, 3, """\
  guarded: {networks: [n0], firewall: {ingress: [{from: c1x0}]}}
  both: {networks: [n0, n1]}
  wired: {networks: [n0]}
links:
  - endpoints: ["wired:p0", "both:p0"]
"""))
    groups = {name: sorted(c.name for c in members) for name, members in classes(res).items()}
    assert sorted(groups.values()) == sorted([
        ["c0x0", "c0x1", "c0x2"], ["c1x1", "c1x2"],
        ["c1x0"],        # named by guarded's firewall: its class-mates are not allowed in
        ["guarded"], ["both"], ["wired"]])


def test_class_sample_grows_with_classes_not_pairs(tmp_path):
    from netcompose.check import expected_probes
    res = resolved_lab(tmp_path, lab(4, 30))
    sampled = expected_probes(res, rng=random.Random(1))
    groups = sampled.classes
    assert len(groups) == 4 and len(sampled) <= 120 + 2 * 16   # each container both ways, 2 per class pair
    assert {(p.source_class, p.target_class) for p in sampled} == {(a, b) for a in groups for b in groups}
    names = set(res.containers)
    assert {p.source for p in sampled} == names == {p.target for p in sampled}
    assert all(p.expected == (p.source_class == p.target_class) for p in sampled)
    assert len(expected_probes(res, everything=True)) == 120 * 119


def test_probe_waves_fit_the_neighbour_table(tmp_path):
    from netcompose.check import _neighbours, _waves, expected_probes
    res = resolved_lab(tmp_path, lab(2, 15))
    probes = expected_probes(res, everything=True)
    waves = _waves(res, probes, room=100)
    assert sum(len(batch) for batch, _ in waves) == len(probes) and len(waves) > 4
    for batch, namespaces in waves:
        made = set().union(*(_neighbours(res, p) for p in batch))
        assert len(made) <= 100 and {ns for ns, _ in made} == namespaces


@needs_root
@pytest.mark.kernel
def test_check_by_classes_reports_a_broken_container_pair_by_pair(tmp_path, project_name, blocks):
    path = tmp_path / "lab.yaml"
    path.write_text(blocks(lab(2, 11)))
    assert run_cli("up", "-f", str(path), "-p", project_name).returncode == 0
    result = run_cli("check", "-f", str(path), "-p", project_name)
    assert result.returncode == 0, result.stdout
    assert "22 containers in 2 classes" in result.stdout and "ICMP by network" in result.stdout
    ip("link", "set", "eth0", "down", ns=f"{project_name}-c1x4")
    result = run_cli("check", "-f", str(path), "-p", project_name, "--json")
    assert result.returncode == 1
    failed = [p for p in json.loads(result.stdout)["probes"] if not p["ok"]]
    assert failed and all("c1x4" in (p["source"], p["target"]) for p in failed)
    assert {"c1x4"} < {p["source"] for p in failed} | {p["target"] for p in failed}
    text = run_cli("check", "-f", str(path), "-p", project_name).stdout
    assert "FAIL c1x4 → " in text and "expected reachable (same network n1), got blocked" in text


def test_config_yaml_reads_back_as_the_document():
    import yaml
    from netcompose.cli import _yaml_text
    document = {"plain": "eth0", "words": ["yes", "No", "null", "~", "true"], "numbers": ["1.0", "0x1f", "1e3", "1:20"],
                "marks": ["", "a: b", "a:", "#x", "-x", "@x", "x #y", "line\nbreak \"q\" \\ é"],
                "nested": [{"a": [1, 2.5, None, False], "b": {}}, [[3]], []], "addresses": "10.0.0.1/24"}
    assert yaml.safe_load(_yaml_text(document)) == document


# Ctrl-C while a dataclass (or a namedtuple) builds its methods at import: they are made with
# a string exec(), and a KeyboardInterrupt ending one sets CPython's "unhandled Ctrl-C" flag,
# which under `python -m` turns any exit into a death by SIGINT.  The first string exec once
# netcompose's CLI is loading is interrupted so, as a Ctrl-C at that moment would.
CTRL_C_IN_A_STRING_EXEC = """
import builtins, sys
_exec = builtins.exec
def _interrupted_once(source, *args, **kwargs):
    if isinstance(source, str) and "netcompose.cli" in sys.modules and not _interrupted_once.done:
        _interrupted_once.done = True
        _exec("raise KeyboardInterrupt")
    return _exec(source, *args, **kwargs)
_interrupted_once.done = False
builtins.exec = _interrupted_once
"""


def test_ctrl_c_inside_a_string_exec_at_start_up_exits_130(tmp_path):
    import os
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_IN_A_STRING_EXEC)
    topology = tmp_path / "topo.yaml"
    topology.write_text(f"name: t{secrets.token_hex(3)}\nnetworks: {{a: {{}}}}\ncontainers: {{c: {{networks: [a]}}}}\n")
    result = subprocess.run([sys.executable, "-m", "netcompose", "config", "-f", str(topology)], capture_output=True,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=60)
    assert (result.returncode, result.stderr) == (130, "error: interrupted\n")


@needs_root
@pytest.mark.kernel
def test_config_resolves_from_the_record_without_reading_sandboxes(topo, monkeypatch):
    """`config` (Project.resolved) reads the allocations record and the host's address space
    only; the sandboxes are read (for our marks) only when the record is lost."""
    from netcompose.drivers.netlink import NetlinkDriver
    project = topo("networks: {n: {}}\ncontainers: {a: {networks: [n]}, b: {networks: [n]}}\n")
    project.up()
    swept = NetlinkDriver.observe

    def addresses(resolved) -> dict:
        return {c.name: str(ep.address) for c in resolved.containers.values() for ep in c.endpoints}
    expected = addresses(project.resolved())
    monkeypatch.setattr(NetlinkDriver, "observe", lambda *_: pytest.fail("config read every sandbox"))
    assert addresses(project.resolved()) == expected and len(set(expected.values())) == 2
    monkeypatch.setattr(NetlinkDriver, "observe", swept)
    os.unlink(project.allocations.path)   # lost: read back from the marks on our veths
    assert addresses(project.resolved()) == expected
    project.down()


def test_an_edited_file_validates_only_entries_it_has_not_seen(tmp_path, monkeypatch):
    """An edit reuses the records of entries the file's (or the project's) last document had,
    by content, and validates only the rest; whatever the path, the records equal a whole
    validation, and errors are the whole document's."""
    import yaml

    from netcompose.errors import SpecError
    from netcompose.spec import _validate, memo
    from netcompose.spec.loader import parse_yaml
    from netcompose.spec.model import Topology
    monkeypatch.setattr(memo, "CACHE_DIR", str(tmp_path / "netcompose" / "validated"))
    asked: list = []
    real = memo.validated

    def validated(doc, project, validate, *more):
        def counted(data):
            asked.append(data)
            return validate(data)
        return real(doc, project, counted, *more)
    monkeypatch.setattr(memo, "validated", validated)
    base = (REPO / "topologies/three-tier.yaml").read_text()
    line = base[:base.index("links:")].count("\n") + 1   # where added containers go

    def adding(*entries: str) -> str:
        return base.replace("links:", "".join(f"  {entry}\n" for entry in entries) + "links:")

    def load(text: str, file: str = "topo.yaml", project: str | None = None):
        asked.clear()
        records = _validate(parse_yaml(text, str(tmp_path / file), {}), project)[0]
        assert records == memo.records(Topology.model_validate(yaml.safe_load(text)))   # as a whole validation
        return records

    load(base)
    assert asked == [yaml.safe_load(base)]
    load(base)
    assert asked == []                                            # remembered
    copied = adding("cache: {networks: {back: {ipv4_address: 10.20.0.30}}}")   # db's content, a new name
    load(copied)
    assert asked == []
    load(adding("cache: {networks: {back: {ipv4_address: 10.20.0.31}}}"))
    assert asked == [{"containers": {"cache": {"networks": {"back": {"ipv4_address": "10.20.0.31"}}}}}]
    load(copied.replace("10.99.0.1/30", "10.99.0.5/30"))             # top-level keys: validated again
    assert [set(data) for data in asked] == [{"name", "links"}]
    # Another file of the same project (-p) builds on the project's last document.
    load(copied, "other.yaml", "shop")
    load(adding("cache: {networks: {back: {ipv4_address: 10.20.0.30}}}", "web2: {networks: [back]}"),
         "other2.yaml", "shop")
    assert asked == [{"containers": {"web2": {"networks": ["back"]}}}]
    # Errors: a bad new name, a bad new entry, each at its place, as a whole validation says.
    for entry, message in (("-x: {}", "invalid name '-x'"),
                           ("x: {networks: {back: {ipv4_address: nope}}}", "containers.x.networks.back.ipv4_address")):
        with pytest.raises(SpecError) as error:
            load(adding(entry))
        assert f":{line}:" in str(error.value) and message in str(error.value), str(error.value)
    # Entries validated by other models (or another pydantic) are not reused.
    monkeypatch.setattr(memo, "_code_stamp", lambda: b"other models")
    load(adding("cache: {networks: {back: {ipv4_address: 10.20.0.30}}}", "more: {networks: [back]}"))
    assert len(asked) == 1 and set(asked[0]["containers"]) == {"web", "app", "db", "cache", "more"}


def test_a_plain_file_seen_before_is_not_parsed_again(tmp_path, monkeypatch):
    """A file without template, include or `$` is remembered by its text: loaded again, its
    YAML is parsed only when a position is asked for (here: an error resolve finds)."""
    from netcompose.errors import SpecError
    from netcompose.spec import load, memo
    from netcompose.spec.loader import UnparsedDocument
    from netcompose.spec.resolve import resolve
    monkeypatch.setattr(memo, "CACHE_DIR", str(tmp_path / "netcompose" / "validated"))
    text = "networks: {n: {subnet: 10.1.0.0/24}}\ncontainers:\n  a: {networks: [n]}\n  b: {networks: [n, m]}\n"
    for name, body, remembered in (("plain.yaml", text, True), ("dollar.yaml", text + "vars: {x: $$1}\n", False),
                                   ("plain.yaml.j2", text, False)):
        path = tmp_path / name
        path.write_text(body)
        first, second = load(path, "tplain"), load(path, "tplain")
        assert isinstance(second.doc, UnparsedDocument) == remembered and not isinstance(first.doc, UnparsedDocument)
        assert second.topology == first.topology and second.digest == first.digest
        errors = []
        for spec in (first, second):
            with pytest.raises(SpecError) as error:
                resolve(spec.topology, spec.doc, "tplain")
            errors.append(str(error.value))
        assert errors[0] == errors[1] and f"{name}:4:" in errors[0], errors


def test_a_damaged_or_foreign_memo_entry_is_a_miss(tmp_path, monkeypatch):
    """An entry cut short, with a byte changed, or of another shape (a checksum that holds
    over something else) is validated again, never trusted, and no traceback."""
    import zlib

    from netcompose.spec import load, memo
    folder = tmp_path / "netcompose" / "validated"
    monkeypatch.setattr(memo, "CACHE_DIR", str(folder))
    path = tmp_path / "lab.yaml"
    path.write_text("networks: {n: {subnet: 10.1.0.0/24}}\ncontainers:\n  a: {networks: [n]}\n")
    first = load(path, "tmemo2").topology

    def damage(change) -> None:
        for entry in folder.glob("*.entry"):
            entry.write_bytes(change(entry.read_bytes()))

    def foreign(data: bytes) -> bytes:
        body = marshal.dumps({"stamp": memo._code_stamp(), "topology": ("m", ["not", "fields"], (0,)),
                              "shape": b"?", "parts": b"?"})
        return zlib.crc32(body).to_bytes(4, "big") + body
    text = path.read_text()
    cut, changed = (lambda data: data[:len(data) // 2]), (lambda data: data.replace(b"10.1.0.0/24", b"10.1.0.0/25"))
    for change in (cut, changed, foreign):
        damage(change)
        assert load(path, "tmemo2").topology == first                      # unchanged: by its text
        damage(change)
        path.write_text(text + "  b: {networks: [n]}\n")                  # edited: from the last entry
        assert set(load(path, "tmemo2").topology.containers) == {"a", "b"}
        path.write_text(text)
