"""Plans in the topology's words: grouping by declaration, provenance, reasons, file diffs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netcompose.compile import compile_resources
from netcompose.origins import Origins, annotate, render
from netcompose.plan import Plan, classify, digest, make_plan
from netcompose.spec import load
from netcompose.spec.resolve import resolve

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests/golden"
THREE_TIER = (REPO / "topologies/three-tier.yaml").read_text()
# One MTU and one address edited, as in issue 17.
EDITED = THREE_TIER.replace("mtu: 1400", "mtu: 1450").replace("ipv4_address: 10.20.0.30", "ipv4_address: 10.20.0.31")


def _load(text: str, tmp_path: Path):
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    spec = load(path, "shop")
    return spec, resolve(spec.topology, spec.doc, "shop")


def _plan(tmp_path: Path, before: str | None, after: str):
    observed, applied = {}, {}
    if before is not None:
        _, old = _load(before, tmp_path)
        observed = {k: v.with_owner("shop") for k, v in compile_resources(old).items()}
        applied = {k: digest(v) for k, v in observed.items()}
    spec, res = _load(after, tmp_path)
    plan = make_plan(compile_resources(res), observed, "shop")
    classify(plan, applied)
    origins = Origins(res, spec.doc.where)
    annotate(plan.actions, origins)
    return plan, origins


def _text(plan: Plan, origins: Origins, tmp_path: Path, verbose: bool = False) -> str:
    return "\n".join(line for _, line in render(plan.actions, origins, verbose)).replace(str(tmp_path), "DIR") + "\n"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists():   # a new golden file is written once, then reviewed and committed
        path.write_text(text)
    assert text == path.read_text()


def test_edit_is_grouped_by_declaration_with_provenance(tmp_path):
    plan, origins = _plan(tmp_path, THREE_TIER, EDITED)
    by_key = {a.key: a for a in plan.actions if a.op != "delete"}
    bridge = next(a for a in plan.actions if a.kind == "bridge")
    assert bridge.origin == ("networks", "back") and origins.label(bridge.origin) == "network back"
    assert bridge.source == f"{tmp_path}/topo.yaml:{_line_of(EDITED, '  back:')}:3"
    address = by_key["addr:shop-db/eth0/10.20.0.31/24"]
    assert origins.label(address.origin) == "endpoint db → back"
    assert address.source.endswith(f":{_line_of(EDITED, 'ipv4_address: 10.20.0.31')}:7")
    assert address.cause == "config"
    text = _text(plan, origins, tmp_path)
    assert "network back  (DIR/topo.yaml:9:3)\n  ~ bridge shop-" in text and "(mtu: 1400 → 1450)" in text
    # The hosts file as a unified diff, not a whole-file dump.
    assert "      -10.20.0.30\tdb\n      +10.20.0.31\tdb" in text
    _check_golden("plan-three-tier-edit.txt", text)


def test_consequence_is_not_drift(tmp_path):
    plan, _ = _plan(tmp_path, THREE_TIER, EDITED)
    route = next(a for a in plan.actions if a.key == "route:shop-db/0.0.0.0/0" and a.op == "create")
    assert route.cause == "consequence"
    doc = plan.to_json()
    assert doc["format_version"] == "1.1" and doc["resource_drift"] == []
    assert "route:shop-db/0.0.0.0/0" in {a["key"] for a in doc["resource_changes"] if a["cause"] == "consequence"}
    # The saved form keeps origin, source and cause.
    again = Plan.from_json(json.loads(json.dumps(doc)))
    assert [(a.origin, a.source, a.cause) for a in again.actions] == [(a.origin, a.source, a.cause) for a in plan.actions]


def test_unchanged_file_with_host_drift_is_drift(tmp_path):
    _, res = _load(THREE_TIER, tmp_path)
    desired = compile_resources(res)
    observed = {k: v.with_owner("shop") for k, v in desired.items() if k != "addr:shop-db/eth0/10.20.0.30/24"}
    plan = make_plan(desired, observed, "shop")
    classify(plan, {k: digest(v) for k, v in desired.items()})
    assert {a.cause for a in plan.actions} == {"drift"} and plan.actions


def test_a_rule_added_by_hand_to_our_table_reads_as_drift_in_the_plan(tmp_path):
    """nft lists such a rule without a comment: the plan names it as not ours, never crashes."""
    _, res = _load(THREE_TIER, tmp_path)
    desired = compile_resources(res)
    observed = {k: v.with_owner("shop") for k, v in desired.items()}
    key, table = next((k, v) for k, v in observed.items() if v.kind == "nft_table" and v.attrs["chains"].get("forward"))
    chains = {name: {**chain, "rules": list(chain["rules"])} for name, chain in table.attrs["chains"].items()}
    chains["forward"]["rules"].append(None)
    observed[key] = type(table)(table.kind, key, {**table.attrs, "chains": chains}, table.deps, table.parents,
                                owner="shop")
    plan = make_plan(desired, observed, "shop")
    classify(plan, {k: digest(v) for k, v in desired.items()})
    origins = Origins(res, lambda path, key=False: None)
    annotate(plan.actions, origins)
    text = _text(plan, origins, tmp_path)
    assert [a.key for a in plan.actions] == [key] and plan.actions[0].cause == "drift"
    assert "- chain forward: a rule without a comment (not netcompose's: added by hand)" in text, text


def test_first_plan_golden_text_and_json(tmp_path):
    plan, origins = _plan(tmp_path, None, THREE_TIER)
    _check_golden("plan-three-tier-create.txt", _text(plan, origins, tmp_path))
    sources = {a["key"]: (a["source"] or "").replace(str(tmp_path), "DIR") for a in plan.to_json()["resource_changes"]}
    _check_golden("plan-three-tier-create.json", json.dumps(sources, indent=1, sort_keys=True) + "\n")
    assert sources["route:shop-app/10.30.0.0/24"] == f"DIR/topo.yaml:{_line_of(THREE_TIER, '      back: {')}:7"


def test_many_like_elements_are_counted_unless_verbose(tmp_path):
    containers = "".join(f"  n{i}: {{networks: [lan]}}\n" for i in range(30))
    plan, origins = _plan(tmp_path, None, f"networks: {{lan: {{}}}}\ncontainers:\n{containers}")
    text = _text(plan, origins, tmp_path)
    # A container's endpoints are part of it: counted with it, never listed apart.
    assert "+ 30 containers (n0 … n29) on lan: 150 kernel objects; --verbose lists them" in text
    assert "container n7 " not in text and "endpoint n7 " not in text
    assert "container n7  (DIR/topo.yaml:10:3)" in _text(plan, origins, tmp_path, verbose=True)


# An edit of each example topology: (folder, file, variables before and after, [(old, new)]
# replacements, a resource the host lost meanwhile (drift), {heading: text of the line that
# declares it}).  Between them they change every kind of declaration: networks, endpoints,
# addresses, containers added and removed, firewalls, policies, sysctls, processes, links.
EDITS = {
    "three-tier": ("topologies", "three-tier.yaml", None, None,
                   [("mtu: 1400", "mtu: 1450"), ("ipv4_address: 10.20.0.30", "ipv4_address: 10.20.0.31"),
                    ('sysctls: {net.ipv4.ip_forward: "1"}', 'sysctls: {net.ipv4.ip_forward: "0"}'),
                    ('"10.99.0.1/30", "10.99.0.2/30"', '"10.99.0.5/30", "10.99.0.6/30"')],
                   "addr:shop-web/eth0/10.10.0.10/24",
                   {"network back": "  back:", "endpoint db → back": "back: {ipv4_address: 10.20.0.31}",
                    "sysctls of app": "sysctls:", "link app:p2p0 ↔ db:p2p0": '- endpoints: ["app:p2p0"',
                    "endpoint web → front": "  web:\n    networks:\n      front:"}),
    "policies": ("topologies", "policies.yaml", None, None,
                 [("to: front, proto: tcp, ports: [80]", "to: front, proto: tcp, ports: [8080]"), ("ports: [5432]", "ports: [5433]"),
                  ("  l2:\n    networks: [lockers]\n", "  kiosk2:\n    networks: [guests]\n")],
                 "addr:shop-kiosk/eth0/10.63.0.2/24",
                 {"policies": "policies:", "firewall of web": "    firewall:", "container kiosk2": "  kiosk2:",
                  "endpoint kiosk → guests": "  kiosk:\n    networks: [guests]"}),
    "minimal": ("topologies", "minimal.yaml", None, None,
                [("  lan: {}", "  lan: {mtu: 1400}"), ("  beta:\n    networks: [lan]\n",
                                                       "  beta:\n    networks: [lan]\n  gamma:\n    networks: [lan]\n")],
                "route:shop-alpha/0.0.0.0/0",
                {"network lan": "  lan:", "container gamma": "  gamma:"}),
    "ospf": ("topologies/ospf", "ospf.yaml.j2", None, None,
             [("addresses: [10.201.23.1/30, 10.201.23.2/30]", "addresses: [10.201.23.5/30, 10.201.23.6/30]"),
              ('http.server, "8080"]', 'http.server, "8081"]')],
             "sysctl:shop-r1/net.ipv4.ip_forward",
             {"link r2:to-r3 ↔ r3:to-r2": '- {endpoints: ["r2:to-r3"', "process of h2": "command: [python3",
              "sysctls of r1": "    sysctls:"}),
    "lab200": ("topologies", "lab200.yaml.j2", {"count": 12}, {"count": 14}, [],
               "route:shop-node0/0.0.0.0/0",
               {"container node13": "  node{{ i }}:", "endpoint node12 → net0": "    networks: [net"}),
}


def _example_plan(tmp_path: Path, example: str):
    folder, name, before_vars, after_vars, edits, lost, _ = EDITS[example]
    shutil.copytree(REPO / folder, tmp_path / "lab")
    path = tmp_path / "lab" / name
    before = path.read_text()
    after = before
    for old, new in edits:
        assert after.count(old) == 1, old
        after = after.replace(old, new)
    old_spec = load(path, "shop", before_vars)
    observed = {k: v.with_owner("shop") for k, v in
                compile_resources(resolve(old_spec.topology, old_spec.doc, "shop")).items()}
    applied = {k: digest(v) for k, v in observed.items()}
    del observed[lost]
    path.write_text(after)
    spec = load(path, "shop", after_vars)
    res = resolve(spec.topology, spec.doc, "shop")
    plan = make_plan(compile_resources(res), observed, "shop")
    classify(plan, applied)
    origins = Origins(res, spec.doc.where)
    annotate(plan.actions, origins)
    return plan, origins, after


@pytest.mark.parametrize("example", list(EDITS))
def test_golden_plans_of_an_edit_of_each_example(tmp_path, example):
    plan, origins, after = _example_plan(tmp_path, example)
    folder = str(tmp_path / "lab")
    _check_golden(f"plan-edit-{example}.txt", _text(plan, origins, tmp_path).replace("DIR/lab", "DIR"))
    doc = json.loads(json.dumps(plan.to_json(), ensure_ascii=False).replace(folder, "DIR"))
    _check_golden(f"plan-edit-{example}.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    # Provenance: each heading names the line that declares it (a template's own line).
    headings = {line.split("  (")[0]: line.rsplit(":", 2)[1] for _, line in render(plan.actions, origins)
                if not line.startswith(" ") and "  (" in line}
    for heading, needle in EDITS[example][6].items():   # the line of the needle's last line
        assert headings[heading] == str(after[:after.index(needle) + len(needle)].count("\n") + 1), heading
    # Reasons: what the host lost is drift; what the edit makes again is a consequence; the rest the edit asks.
    lost = EDITS[example][5]
    assert {a.cause for a in plan.actions if a.key == lost} == {"drift"}
    assert doc["resource_drift"] and all(a["key"] == lost for a in doc["resource_drift"])
    assert all(a["cause"] in ("config", "consequence") for a in doc["resource_changes"])
