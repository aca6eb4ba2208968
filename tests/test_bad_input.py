"""Every bad file gives one line with file:line:col, exit code 3, no traceback, no host change."""
from __future__ import annotations

import pytest

from netcompose.errors import SpecError
from netcompose.spec import load
from netcompose.spec.resolve import resolve

from .conftest import needs_root, run_cli

OK_NET = "networks:\n  front:\n    subnet: 10.10.0.0/24\n"

# (file text, expected "line:col", expected words in the message)
CORPUS = [
    ("networks: [\n", "2:1", "invalid YAML"),
    ("networks:\n  a: {}\n  a: {}\n", "3:3", "duplicate key 'a'"),
    ("- a\n- b\n", "1:1", "must be a mapping"),
    ("netwrks: {}\n", "1:1", "unknown key 'netwrks'"),
    (OK_NET + "    colour: red\n", "4:5", "unknown key 'colour'"),
    (OK_NET + "    mtu: big\n", "4:10", "valid integer"),
    (OK_NET + "    mtu: 20\n", "4:10", "greater than or equal to 68"),
    (OK_NET + "    driver: vxlan\n", "4:13", "'bridge', 'ovs' or 'ovn'"),
    ("networks:\n  front:\n    subnet: 10.10.0.1/24\n", "3:13", "host bits set"),
    ("networks:\n  front:\n    subnet: banana\n", "3:13", "IPv4 network"),
    ("networks:\n  front:\n    subnet: false\n", "3:13", "not a number or boolean"),
    ("containers:\n  a: {}\n  b: {}\nlinks:\n  - endpoints: [a:p0, b:p0]\n    addresses: [true, 10.0.0.2/30]\n",
     "6:17", "not a number or boolean"),
    ("networks:\n  front:\n    subnet: 10.1.1.0/31\n", "3:13", "use a prefix of /30 or shorter"),
    ("networks:\n  a: {subnet: 10.0.0.0/16}\n  b: {subnet: 10.0.5.0/24}\n", "3:15", "overlaps"),
    (OK_NET + "    gateway: 10.20.0.1\n", "4:14", "outside subnet"),
    (OK_NET + "    gateway: 10.10.0.255\n", "4:14", "broadcast address"),
    (OK_NET + "    gateway: 10.10.0.0\n", "4:14", "network address"),
    (OK_NET + "containers:\n  web:\n    networks: [frnt]\n", "6:16", "undefined network 'frnt'"),
    (OK_NET + "containers:\n  web:\n    networks:\n      frnt: {}\n", "7:7", "undefined network 'frnt'"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ipv4_address: 10.10.0.1}\n", "7:29",
     "gateway"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ipv4_address: 10.20.0.5}\n", "7:29",
     "outside subnet"),
    (OK_NET + "containers:\n  a:\n    networks:\n      front: {ipv4_address: 10.10.0.5}\n"
     "  b:\n    networks:\n      front: {ipv4_address: 10.10.0.5}\n", "10:29", "already used"),
    (OK_NET + "containers:\n  a:\n    networks:\n      front: {ipv4_address: 10.10.0.255}\n", "7:29",
     "broadcast"),
    ("networks:\n  a: {}\n  b: {}\ncontainers:\n  web:\n    networks:\n      a: {ifname: eth0}\n"
     "      b: {ifname: eth0}\n", "8:19", "used twice"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ifname: averyveryverylongname}\n", "7:23",
     "at most 15"),
    (OK_NET + "containers:\n  'bad name':\n    networks: [front]\n", "5:3", "invalid name"),
    ("networks:\n  'a/b': {}\n", "2:3", "invalid name"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {mac_address: zz:zz}\n", "7:28",
     "invalid MAC address"),
    (OK_NET + "containers:\n  web: {networks: [front]}\nlinks:\n  - endpoints: ['web:p0', 'ghost:p0']\n",
     "7:27", "unknown container 'ghost'"),
    (OK_NET + "containers:\n  web: {networks: [front]}\nlinks:\n  - endpoints: ['web', 'web:p1']\n",
     "7:17", "not CONTAINER:IFNAME"),
    (OK_NET + "containers:\n  web: {networks: [front], default_route: back}\n", "5:43", "default_route"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    routes: [{to: 10.50.0.0/24, via: 10.60.0.1}]\n",
     "7:38", "not on any network"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    sysctls: {kernel.panic: 1}\n", "7:15",
     "not a network sysctl"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    ports: ['99999:80']\n", "7:13", "less than"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    ports: ['80:80/sctp']\n", "7:12",
     "not [HOST_IP:]"),
    (OK_NET + "containers:\n  web:\n    netns: x\n    pid: 1\n    networks: [front]\n", "6:5", "either"),
    (OK_NET + "    vlan: 10\n", "3:5", "driver: ovs"),
    (OK_NET + "policies:\n  - {from: front, to: nowhere}\n", "5:23", "unknown network 'nowhere'"),
    (OK_NET + "containers:\n  web: {networks: [front]}\nexpect:\n  - {from: web, to: 'ghost:80'}\n", "7:21",
     "unknown container 'ghost'"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    firewall:\n      ingress:\n"
     "        - {from: 'not-a-thing!', proto: tcp}\n", "9:18", "not a network, container, CIDR"),
    ("name: Bad_Name\n", "1:7", "invalid name"),
    ("networks:\n  a: {subnet: '${NET_SUBNET:?set the subnet}'}\n", "2:15", "required"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    extra_hosts: {'bad host!': 10.0.0.1}\n",
     "7:19", "not a valid host name"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: []\n", "7:14", "empty command"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: ''\n", "7:14", "empty command"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: sleep 'oops\n", "7:14", "No closing quotation"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    ready: {tcpp: 80}\n",
     "8:13", "unknown key 'tcpp'"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    ready: {tcp: 80, udp: 53}\n",
     "8:12", "exactly one of tcp, udp, exec or delay"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    ready: {delay: soon}\n",
     "8:20", "not a duration"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    restart: sometimes\n",
     "8:14", "'no', 'on-failure' or 'always'"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    ready: {tcp: 80}\n", "7:5", "no command"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    environment: [NOEQUALS]\n",
     "8:18", "not NAME=VALUE"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    command: [sleep, '1']\n    ready: {exec: []}\n",
     "8:19", "at least 1 item"),
    ("networks:\n  a: {}\n  b: {internal: true}\npolicies:\n  - {from: a, to: b}\n", "5:19",
     "internal network 'b'"),
    ("networks:\n  b: {internal: true}\ncontainers:\n  db:\n    networks: [b]\n    ports: ['5432:5432']\n",
     "6:12", "no network that is not internal"),
]

WEB = OK_NET + "containers:\n  web:\n    networks: [front]\n"
TWO_NETS = "networks:\n  a: {subnet: 10.1.0.0/24}\n  b: {subnet: 10.2.0.0/24}\n"
# Everything the kernel would reject, or that would break the host, caught before any change.
CORPUS += [
    (WEB + "    routes: [{to: 10.50.0.0/24, via: 10.10.0.1, metric: 4294967296}]\n", "7:57", "less than or equal"),
    (WEB + "    routes: [{to: 10.50.0.0/24}]\n", "7:19", "has no via"),
    (WEB + "    routes: [{to: 10.10.0.0/24}]\n", "7:19", "already connected"),
    (WEB + "    routes:\n      - {to: 10.50.0.0/24, via: 10.10.0.2}\n", "8:33", "itself"),
    (WEB + "    routes:\n      - {to: 10.50.0.0/24, via: 10.10.0.255}\n", "8:33", "broadcast"),
    (WEB + "    routes:\n      - {to: 10.50.0.0/24, via: 10.10.0.1}\n      - {to: 10.50.0.0/24, via: 10.10.0.3}\n",
     "9:14", "already set by containers.web.routes.0"),
    (WEB + "    routes:\n      - {to: 0.0.0.0/0, via: 10.10.0.3}\n", "8:14", "default route"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ifname: lo}\n", "7:23", "reserved"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ifname: all}\n", "7:23", "reserved"),
    (OK_NET + "containers:\n  a: {}\n  b: {}\nlinks:\n  - endpoints: ['a:default', 'b:p0']\n", "8:17",
     "not a valid interface name"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ifname: \"eth0\\n\"}\n", "7:23",
     "invalid interface name"),
    (OK_NET + "containers:\n  \"web\\n\": {networks: [front]}\n", "5:3", "invalid name"),
    (OK_NET + "containers:\n  a: {}\n  b: {}\nlinks:\n  - endpoints: ['a:p0', \"b:p0\\n\"]\n", "8:25",
     "not a valid interface name"),
    (WEB + "    sysctls: {\"net.ipv4.ip_forward\\n\": 1}\n", "7:15", "not a network sysctl"),
    (WEB + "    extra_hosts: {\"db\\n\": 10.0.0.1}\n", "7:19", "not a valid host name"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {mac_address: '01:00:5e:00:00:01'}\n", "7:28",
     "multicast"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {mac_address: '00:00:00:00:00:00'}\n", "7:28",
     "not a usable MAC"),
    (OK_NET + "containers:\n  a:\n    networks:\n      front: {mac_address: '02:00:00:00:00:01'}\n"
     "  b:\n    networks:\n      front: {mac_address: '02:00:00:00:00:01'}\n", "10:28", "also used by"),
    (OK_NET + "containers:\n  a: {networks: {front: {ipv4_address: 10.10.0.5}}}\n  b: {}\n  c: {}\nlinks:\n"
     "  - endpoints: ['b:p0', 'c:p0']\n    addresses: [10.10.0.5/30, 10.10.0.6/30]\n", "5:40",
     "already used by links.0.addresses.0"),
    (OK_NET + "containers:\n  a: {networks: [front]}\n  b: {}\nlinks:\n"
     "  - endpoints: ['a:p0', 'b:p0']\n    addresses: [10.10.0.65/30, 10.10.0.66/30]\n", "9:17", "overlaps subnet"),
    (OK_NET + "    mtu: 67\n", "4:10", "greater than or equal to 68"),
    (OK_NET + "    mtu: 65536\n", "4:10", "less than or equal to 65535"),
    ("networks:\n  t: {driver: ovs, ovs: {datapath_type: netdev}}\ncontainers:\n  r:\n    networks:\n"
     "      t: {trunks: [10, 20, 10]}\n", "6:19", "listed twice"),
    (WEB + "    sysctls: {net.ipv4.ip_forward: ''}\n", "7:36", "empty"),
    (WEB + "    sysctls: {net.core.netdev_max_backlog: 5000}\n", "7:15", "global to the host"),
    (WEB + "    sysctls: {net.netfilter.nf_conntrack_max: 5000}\n", "7:15", "global to the host"),
    (WEB + "    sysctls: {net.core.rmem_max: 5000}\n", "7:15", "global to the host"),
    (WEB + "    sysctls: {net.ipv4.conf.eth7.forwarding: 1}\n", "7:15", "does not have"),
    (WEB + "    ports: ['8080:80', '127.0.0.1:8080:81']\n", "7:24", "already published by containers.web.ports.0"),
    (WEB + "  api:\n    networks: [front]\n    ports: ['9000:90/udp']\n  db:\n    networks: [front]\n"
     "    ports: ['0.0.0.0:9000:91/udp']\n", "12:13", "already published by containers.api.ports.0"),
    (WEB + "    ports: ['80', '9000:90', '80']\n", "7:30", "listed twice without a host port"),
    (WEB + "    firewall:\n      ingress:\n        - {to: front, proto: tcp}\n", "9:12", "write from: instead"),
    (WEB + "    firewall:\n      egress:\n        - {from: front}\n", "9:12", "write to: instead"),
]

NET6 = OK_NET + "    subnet6: fd00:10::/64\n"
CORPUS += [  # IPv6 (issue 14)
    (NET6 + "containers:\n  web:\n    networks:\n      front: {ipv6_address: 'fd00:11::5'}\n", "8:29",
     "outside subnet fd00:10::/64"),
    (NET6 + "containers:\n  web:\n    networks:\n      front: {ipv6_address: 'fd00:10::1'}\n", "8:29",
     "is the gateway of network 'front'"),
    (NET6 + "containers:\n  web:\n    networks:\n      front: {ipv6_address: 'fd00:10::'}\n", "8:29",
     "subnet-router anycast"),
    (NET6 + "  back: {subnet6: 'fd00:10::8000/113'}\n", "5:19", "overlaps fd00:10::/64"),
    ("networks:\n  front: {subnet6: 'fd00:10::1/128'}\n", "2:20", "/127 or shorter"),
    ("networks:\n  front: {subnet: 10.10.0.0/24, nat6: false}\n", "2:39", "nat6 needs IPv6"),
    (OK_NET + "containers:\n  web:\n    networks: [front]\n    ports: ['[fd00::1]:8080:80']\n", "7:13",
     "host address fd00::1 is IPv6 but container 'web' has no IPv6 address"),
    ("networks:\n  v6: {subnet6: 'fd00:10::/64'}\ncontainers:\n  web:\n    networks: [v6]\n"
     "    ports: ['127.0.0.1:8080:80']\n", "6:13", "has no IPv4 address"),
    (NET6 + "containers:\n  web:\n    networks: [front]\n    ports: ['::1:8080:80']\n", "8:12",
     "IPv6 HOST_IP in brackets"),
    (NET6 + "containers:\n  web:\n    networks: [front]\n    ports: ['8080:80', '[::]:8080:80']\n", "8:24",
     "already published by containers.web.ports.0"),
    ("networks:\n  front: {subnet: 'fd00:10::/64'}\n", "2:19", "write it under 'subnet6'"),
    ("networks:\n  front: {subnet6: 'fd00:10::1/64'}\n", "2:20", "did you mean fd00:10::/64?"),
    (NET6 + "    mtu: 1200\n", "5:10", "below IPv6's minimum of 1280"),
    (OK_NET + "containers:\n  web:\n    networks:\n      front: {ipv6_address: 'fd00:10::5'}\n", "7:29",
     "network 'front' has no IPv6"),
    (NET6 + "containers:\n  web:\n    networks: [front]\n    routes: [{to: 'fd00:30::/64', via: 10.10.0.1}]\n",
     "8:40", "is IPv4 but the route to fd00:30::/64 is IPv6"),
    ("networks:\n  front: {subnet6: 'fd00:10::/64', gateway: 10.0.0.1}\n", "2:45", "gateway needs IPv4"),
    (NET6 + "    gateway6: 'fd00:20::1'\n", "5:15", "outside subnet fd00:10::/64"),
    ("containers:\n  a: {}\n  b: {}\nlinks:\n  - endpoints: [a:p0, b:p0]\n"
     "    addresses: ['fd99::1/64', 'fd99::2/64']\n    mtu: 1000\n", "7:10", "below IPv6's minimum"),
    ("address_pools:\n  - {base: 10.0.0.0/8, size: 64}\n", "2:5", "no usable address in an IPv4 subnet"),
]


@pytest.mark.parametrize("text,where,words", CORPUS, ids=[f"bad{i:02d}" for i in range(len(CORPUS))])
def test_bad_file(tmp_path, text, where, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        spec = load(path, "p", environ={})
        resolve(spec.topology, spec.doc, "p")
    message = str(info.value)
    assert message.startswith(f"{path}:{where}: "), message
    assert words in message
    assert "\n" not in message and "; " in message  # one line, with a fix


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


def footprint(project: str) -> dict:
    """What a project could have made on the host: namespaces, links, /etc/netns entries,
    nft tables and its state folder."""
    import os
    import shutil
    import subprocess
    from netcompose.drivers import namespaces, rtnl
    sock = rtnl.RtnlSocket()
    try:
        links = sorted(link.name for link in sock.links() if link.name.startswith(project[:6]))
    finally:
        sock.close()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout if shutil.which("nft") else ""
    return {"netns": sorted(n for n in namespaces.list_named() if n.startswith(project)), "links": links,
            "etc": sorted(e for e in os.listdir("/etc/netns") if e.startswith(project)) if os.path.isdir("/etc/netns") else [],
            "nft": [line for line in tables.splitlines() if project in line],
            "state": os.path.exists(f"/run/netcompose/{project}/journal.json")
            or os.path.exists(f"/run/netcompose/{project}/applied.json")}


# The CLI on one case per class: a YAML error, a schema error, a cross-reference, a route,
# a sysctl, a MAC, a published port, a firewall direction.
CLI_CASES = [0, 4, 14, 18, 25] + [i for i, (_, _, words) in enumerate(CORPUS) if words in (
    "has no via", "global to the host", "multicast", "already published by containers.web.ports.0",
    "write from: instead")]


@needs_root
@pytest.mark.parametrize("index", CLI_CASES)
def test_cli_bad_file_no_traceback_no_host_change(tmp_path, project_name, index):
    path = tmp_path / "bad.yaml"
    path.write_text(CORPUS[index][0])
    before = footprint(project_name)
    result = run_cli("up", "-f", str(path), "-p", project_name)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert footprint(project_name) == before


@pytest.mark.parametrize("args,words", [
    (["--var", "=1"], "is not NAME=VALUE"),
    (["--var", "a b=1"], "is not NAME=VALUE"),
    (["--var", "x=[1"], "is not a valid YAML value"),
    (["--vars-file", "VARS"], "vars file must be a mapping"),
    (["--vars-file", "/dev/zero"], "not a regular file"),
    (["--plan", "PLAN"], "is not a saved plan"),
    (["--plan", "/dev/zero"], "not a regular file"),
], ids=["var-empty-name", "var-bad-name", "var-bad-yaml", "vars-file-list", "vars-file-device", "plan-json",
        "plan-device"])
def test_malformed_command_line_inputs(tmp_path, args, words):
    path = tmp_path / "ok.yaml"
    path.write_text(OK_NET)
    (tmp_path / "vars.yaml").write_text("- a\n- b\n")
    (tmp_path / "plan.json").write_text("[1, 2]\n")
    args = [{"VARS": str(tmp_path / "vars.yaml"), "PLAN": str(tmp_path / "plan.json")}.get(a, a) for a in args]
    result = run_cli("up", "-f", str(path), "-p", "tbadcli", *args)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_command_line_errors_exit_3_without_position_and_exec_needs_the_container_up(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text("networks: {lan: {}}\ncontainers: {a: {networks: [lan]}}\n")
    for argv in (("plan", "-f", str(tmp_path / "missing.yaml")), ("plan", "-f", str(path), "-p", "Bad Name"),
                 ("plan", "-f", str(path), "-p", project_name, "--var", "novalue"),
                 ("exec", "-f", str(path), "-p", project_name, "ghost", "--", "true")):
        result = run_cli(*argv)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 3 and len(lines) == 1 and lines[0].startswith("error: "), (argv, result.stderr)
        assert f"{path}:" not in lines[0], lines   # about the command line, not a place in the file
    # A container that is not up: netcompose's own one-line error, not ip's raw message and 255.
    result = run_cli("exec", "-f", str(path), "-p", project_name, "a", "--", "true")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "container 'a' is not up" in lines[0], result.stderr


@pytest.mark.parametrize("argv,words", [
    (["plan", "--detailed-exitcode", "--bogus"], "unrecognized arguments: --bogus"),
    (["plan", "--detailed-exitcode", "-o"], "-o/--out: expected one argument"),
    (["frob"], "invalid choice: 'frob'"),
    ([], "required: command"),
    (["exec"], "required: container, command"),
], ids=["unknown-option", "missing-value", "unknown-command", "no-command", "exec-without-container"])
def test_a_command_line_the_parser_rejects_exits_3_never_the_changes_pending_code(argv, words):
    """Exit 2 means "changes pending" to a pipeline running `plan --detailed-exitcode`: a typo
    in a flag must not read as that.  One line, naming the command's --help."""
    result = run_cli(*argv)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1 and lines[0].startswith("error: "), (argv, result.stderr)
    assert words in lines[0] and lines[0].endswith("--help'"), lines


@needs_root
def test_down_by_name_refuses_a_project_name_that_is_a_path(tmp_path):
    """`down -p NAME` without a file names folders under /run/netcompose and /var/log/netcompose
    from NAME: a name with '/' or '..' would remove another folder of the host."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep").write_text("not netcompose's\n")
    result = run_cli("down", "-p", "../.." + str(victim))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1 and "invalid project name" in lines[0], result.stderr
    assert (victim / "keep").read_text() == "not netcompose's\n" and (victim / "sub").is_dir()
