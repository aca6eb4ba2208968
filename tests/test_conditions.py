"""Link conditions: units and validation (pure), the messages netem would get (pure), and
rate, loss, link state, in-place change and drift against the real kernel."""
from __future__ import annotations

import json
import re
import struct
import subprocess

import pytest

from netcompose import conditions
from netcompose.compile import compile_resources
from netcompose.drivers import tc
from netcompose.spec import load
from netcompose.spec.resolve import HostFacts, resolve

from .conftest import needs_root, run_cli
from .throughput import holds_cap, measure

MBIT = 10**6


# ---- units and validation -----------------------------------------------------------------

@pytest.mark.parametrize("text, bits", [("10mbit", 10**7), ("1gbit", 10**9), ("100gbit", 10**11),
                                        ("10Mbit", 10**7), ("512kbit", 512000), ("1mibit", 2**20),
                                        ("2mbps", 16 * 10**6), ("1.5gbit", 15 * 10**8)])
def test_rates_read_as_tc_writes_them(text, bits):
    assert conditions.rate_bits(text) == bits


@pytest.mark.parametrize("text, size", [("32kb", 32768), ("1mb", 2**20), ("1500b", 1500), ("10kbit", 1250)])
def test_sizes_read_as_tc_writes_them(text, size):
    assert conditions.size_bytes(text) == size


def test_times_and_percentages():
    assert conditions.time_ns("40ms") == 40 * 10**6 and conditions.time_ns("5us") == 5000
    assert conditions.percent("0.5%") == 0.5 and conditions.percent("100%") == 100


def test_default_burst_is_four_milliseconds_at_the_rate_and_never_below_a_frame():
    assert conditions.normalised({"rate": "1gbit"}, 1500)["burst"] == 500000
    assert conditions.normalised({"rate": "64kbit"}, 1500)["burst"] == 1514


BAD = [
    ("egress: {rate: 10megabit}", "is not a rate"),
    ("egress: {rate: 10mbit, speed: 1}", "speed"),
    ("egress: {loss: 120%}", "more than 100%"),
    ("egress: {loss: -1%}", "is not a percentage"),
    ("egress: {loss: 5}", "valid string"),
    ("egress: {rate: 100mbit, burst: 1kb}", "below tbf's minimum"),
    ("egress: {burst: 32kb}", "burst: needs a rate"),
    ("egress: {jitter: 5ms}", "jitter: needs a delay"),
    ("egress: {rate: 10mbit, delay: 40ms}", "need the kernel's netem qdisc"),
    ("state: sideways", "state"),
]


@pytest.mark.parametrize("endpoint, message", BAD)
def test_bad_conditions_are_one_line_errors_at_their_key(tmp_path, endpoint, message):
    if "netem" in message and tc.netem_available():
        pytest.skip("this kernel has sch_netem: delay is valid here")
    path = tmp_path / "topo.yaml"
    path.write_text("networks:\n  wan: {}\ncontainers:\n  a:\n    networks:\n      wan:\n        " + endpoint + "\n")
    result = run_cli("config", "-f", str(path), "-p", "tbadcond")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert re.match(rf"error: {re.escape(str(path))}:7:\d+: ", line), line
    assert message in line


def test_netem_message_carries_delay_jitter_and_probabilities():
    requests = tc.qdisc_requests(7, {"rate": 10 * MBIT, "burst": 32768, "limit": 100000,
                                     "netem": {"delay": 40 * 10**6, "jitter": 5 * 10**6, "loss": 1.0,
                                               "reorder": 25.0}})
    tbf, netem = requests
    assert struct.unpack_from("=BxxxiIII", tbf.body) == (0, 7, tc.HANDLE, tc.TC_H_ROOT, 0)
    assert struct.unpack_from("=BxxxiIII", netem.body) == (0, 7, tc.CHILD_HANDLE, tc.HANDLE | 1, 0)
    options = netem.body[20 + 12 + 4:]   # after tcmsg, TCA_KIND "netem", TCA_OPTIONS header
    latency, limit, loss, gap, duplicate, jitter = struct.unpack_from("=IIIIII", options)
    assert (limit, gap, duplicate) == (tc.NETEM_LIMIT, 1, 0)
    assert loss == round(0.01 * tc.U32_MAX)
    decoded = tc._decode_netem(memoryview(options))
    assert decoded == {"loss": 1.0, "delay": 40 * 10**6, "jitter": 5 * 10**6, "reorder": 25.0}


def test_rates_beyond_four_gigabytes_per_second_go_in_64_bits():
    options = tc.tbf_options(100 * 10**9, 50 * 10**6, 10**8)
    assert struct.pack("=Q", 100 * 10**9 // 8) in options
    assert tc._decode_tbf(memoryview(options))["rate"] == 100 * 10**9


def resolved(tmp_path, text: str, project: str):
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    spec = load(path, project)
    return resolve(spec.topology, spec.doc, project, HostFacts())


def test_compile_shapes_the_sending_device_and_leaves_routes_off_downed_wires(tmp_path):
    res = compile_resources(resolved(tmp_path, """
networks:
  wan: {subnet: 10.77.0.0/24}
containers:
  branch:
    networks:
      wan: {egress: {rate: 10mbit, loss: 2%}, ingress: {rate: 50mbit}, state: down}
  r1: {networks: [wan], routes: [{to: 10.98.0.0/24, via: 10.99.0.2}]}
  r2: {networks: [wan]}
links:
  - endpoints: ["r1:eth1", "r2:eth1"]
    addresses: ["10.99.0.1/30", "10.99.0.2/30"]
    conditions: {rate: 100mbit}
    state: down
""", "tcomp"))
    qdiscs = {k: v.attrs for k, v in res.items() if v.kind == "qdisc"}
    ep = next(v for v in res.values() if v.kind == "veth" and v.attrs["peer_ns"] == "tcomp-branch")
    assert qdiscs["qdisc:tcomp-branch/eth0"]["rate"] == 10 * MBIT
    assert qdiscs[f"qdisc:/{ep.attrs['ifname']}"]["rate"] == 50 * MBIT   # ingress: the host's end sends
    assert {"qdisc:tcomp-r1/eth1", "qdisc:tcomp-r2/eth1"} <= qdiscs.keys()
    assert ep.attrs["up"] is False and ep.attrs["peer_up"] is True      # the network's side is shut
    wire = res["link:tcomp-r1/eth1"].attrs
    assert (wire["up"], wire["peer_up"]) == (False, False)
    assert "route:tcomp-r1/10.98.0.0/24" not in res                    # the kernel drops it with the device
    table = res["nft:tcomp-branch/inet/netcompose-tcomp"].attrs
    assert table["chains"]["postrouting"]["rules"][0].startswith("containers.branch.networks.wan.egress.loss")


# ---- the real kernel ------------------------------------------------------------------------

LAB = """
networks:
  wan: {{subnet: {subnet}.0/24}}
containers:
  branch:
    networks:
      wan: {{egress: {egress}, ingress: {ingress}}}
    command: ["sleep", "600"]
  hq:
    networks:
      wan: {{ipv4_address: {subnet}.100}}
  r1: {{networks: [wan]}}
  r2: {{networks: [wan]}}
links:
  - endpoints: ["r1:eth1", "r2:eth1"]
    addresses: ["10.99.1.1/30", "10.99.1.2/30"]
    conditions: {link}
    state: {state}
"""


def lab(topo, blocks, egress="{rate: 10mbit}", ingress="{rate: 20mbit}", link="{loss: 20%}", state="up"):
    """The lab and its network's first three octets, in blocks free on the host (see conftest.Blocks)."""
    return topo(blocks(LAB.format(subnet="10.77.7", egress=egress, ingress=ingress, link=link, state=state))), \
        blocks("10.77.7")


def ns_of(project_name: str, container: str) -> str:
    return f"{project_name}-{container}"


def ping_loss(ns: str, address: str, count: int) -> float:
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-q", "-n", "-c", str(count), "-i", "0.002", "-W", "1",
                          address], capture_output=True, text=True, timeout=60).stdout
    return float(re.search(r"([\d.]+)% packet loss", out).group(1))


def ifindex(ns: str, ifname: str) -> int:
    return int(subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/ifindex"],
                              capture_output=True, text=True, check=True).stdout)


@needs_root
@pytest.mark.kernel
def test_rate_loss_state_in_place_and_drift(topo, project_name, blocks):
    project, subnet = lab(topo, blocks)
    project.up()
    branch, hq = ns_of(project_name, "branch"), ns_of(project_name, "hq")
    assert not project.plan().plan, "a second run changes nothing"

    # Egress of branch capped at 10mbit, ingress at 20mbit (TCP payload: ~95% of the frames).
    assert not holds_cap(branch, hq, f"{subnet}.100", 10 * MBIT)
    assert not holds_cap(hq, branch, f"{subnet}.2", 20 * MBIT)

    # 20% loss on each direction of the wire: a ping round trip crosses it twice (1 - 0.8²).
    loss = ping_loss(ns_of(project_name, "r1"), blocks("10.99.1.2"), 500)
    assert 26 <= loss <= 46, loss

    # A rate changed in place (and loss added): same device, same process.
    index, pid = ifindex(branch, "eth0"), project.processes()["branch"]["pid"]
    project, _ = lab(topo, blocks, egress="{rate: 40mbit, loss: 20%}")
    changes = {(a.op, a.key) for a in project.plan().plan.actions}
    assert changes == {("update", f"qdisc:{branch}/eth0"), ("create", f"nft:{branch}/inet/netcompose-{project_name}")}
    project.up()
    assert ifindex(branch, "eth0") == index and project.processes()["branch"]["pid"] == pid
    assert 14 <= ping_loss(branch, f"{subnet}.100", 500) <= 26     # one way: only the requests are dropped
    assert "rate 40Mbit" in subprocess.run(["ip", "netns", "exec", branch, "tc", "qdisc", "show", "dev", "eth0"],
                                           capture_output=True, text=True).stdout

    # Drift: a deleted qdisc and a deleted drop rule come back.
    subprocess.run(["ip", "netns", "exec", branch, "tc", "qdisc", "del", "dev", "eth0", "root"], check=True)
    r1 = ns_of(project_name, "r1")
    table = json.loads(subprocess.run(["ip", "netns", "exec", r1, "nft", "-j", "list", "table", "inet",
                                       f"netcompose-{project_name}"], capture_output=True, text=True).stdout)
    handle = next(item["rule"]["handle"] for item in table["nftables"]
                  if "rule" in item and "conditions.loss" in item["rule"].get("comment", ""))
    subprocess.run(["ip", "netns", "exec", r1, "nft", "delete", "rule", "inet", f"netcompose-{project_name}",
                    "postrouting", "handle", str(handle)], check=True)
    drift = {a.key for a in project.plan().plan.actions if a.cause == "drift"}
    assert {f"qdisc:{branch}/eth0", f"nft:{r1}/inet/netcompose-{project_name}"} <= drift
    project.up(refresh=True)
    assert not project.plan().plan

    # A failure drill: the wire goes down, its pings fail; it comes back with state: up.
    project, _ = lab(topo, blocks, egress="{rate: 40mbit, loss: 20%}", link="{rate: 100mbit}", state="down")
    project.up()
    assert ping_loss(r1, blocks("10.99.1.2"), 3) == 100
    project, _ = lab(topo, blocks, egress="{rate: 40mbit, loss: 20%}", link="{rate: 100mbit}", state="up")
    project.up()
    assert ping_loss(r1, blocks("10.99.1.2"), 3) == 0

    project.down()
    assert not [line for line in subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout.splitlines()
                if "9d00" in line and project_name in line]


@needs_root
@pytest.mark.kernel
def test_another_projects_qdisc_is_never_ours(tmp_path, project_name, blocks):
    """Every project's qdiscs carry the same handle: only the device's own mark tells whose."""
    from netcompose import Project
    topology = "networks: {{n: {{subnet: 10.{}.0/24}}}}\ncontainers: {{c: {{networks: {{n: {{ingress: {{rate: 5mbit}}}}}}}}}}\n"
    projects = []
    for i, name in enumerate((project_name + "b", project_name)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(blocks(topology.format(f"77.{i + 50}")))
        projects.append(Project.load(path, project=name))
    other, mine = projects
    other.up()
    mine.up()
    mine.down()
    assert not other.plan().plan, "the other project's qdisc survived our up and down"
    other.down()


@needs_root
@pytest.mark.kernel
def test_gigabit_cap_where_the_machine_reaches_it(topo, project_name, blocks):
    project, subnet = lab(topo, blocks, egress="{rate: 1gbit}", ingress="{rate: 10gbit}", link="{rate: 1mbit}")
    project.up()
    branch, hq = ns_of(project_name, "branch"), ns_of(project_name, "hq")
    unshaped = measure(hq, branch, f"{subnet}.2", seconds=1.0)   # hq → branch: only the 10gbit cap
    if unshaped < 1.5 * 10**9:
        pytest.skip(f"this machine moves {unshaped / 10**9:.2f} Gbit/s between two sandboxes now: "
                    "too little to check a 1gbit cap (10gbit is never reached here)")
    assert not holds_cap(branch, hq, f"{subnet}.100", 10**9)


def test_check_expects_nothing_through_a_downed_link_or_endpoint(tmp_path):
    from netcompose import check
    res = resolved(tmp_path, """
networks:
  lan: {subnet: 10.78.0.0/24}
containers:
  x: {networks: {lan: {state: down}}}
  y: {networks: [lan]}
  z: {networks: [lan]}
  p: {}
  q: {}
links:
  - endpoints: ["p:eth0", "q:eth0"]
    addresses: ["10.99.9.1/30", "10.99.9.2/30"]
    state: down
""", "tchk")
    probes = {(p.source, p.target): p for p in check.expected_probes(res, everything=True)}
    assert not probes[("p", "q")].expected and probes[("p", "q")].reason == "their direct link is down"
    assert not probes[("y", "x")].expected and "x's endpoint on lan is down" == probes[("y", "x")].reason
    assert probes[("y", "z")].expected
