"""Compose files and containerlab topologies read directly: small fixtures per feature with
their exact translation, one-line errors for what cannot be built, the public corpus in
../shared/corpus (when present), and `convert` round trips.  No root, no kernel."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netcompose.errors import SpecError
from netcompose.frontends import detect
from netcompose.frontends.convert import render
from netcompose.saved import resolved_document
from netcompose.spec import Source, load
from netcompose.spec.resolve import resolve

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))


def loaded(folder: Path, files: dict[str, str], main: str = "compose.yaml", environ: dict | None = None,
           **source):
    write(folder, files)
    return load(folder / main, environ=environ or {}, source=Source(**source))


def config(spec) -> dict:
    """What `netcompose config` prints, without host facts (so exact)."""
    return resolved_document(resolve(spec.topology, spec.doc, spec.project))


def error(folder: Path, files: dict[str, str], main: str = "compose.yaml", **source) -> str:
    with pytest.raises(SpecError) as info:
        spec = loaded(folder, files, main, **source)
        resolve(spec.topology, spec.doc, spec.project)
    return str(info.value).replace(str(folder) + "/", "")


# ---- Compose ------------------------------------------------------------------------------
def test_detects_the_format_from_the_content():
    assert detect("services:\n  web: {}\n") == "compose"
    assert detect("name: lab\ntopology:\n  nodes: {}\n") == "clab"
    assert detect("containers:\n  web: {}\nservices: 1\n") == "netcompose"
    assert detect("networks: {}\n") == "netcompose"


def test_compose_networks_ipam_and_driver_opts(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": """
        name: shop
        services:
          web:
            networks: [front, back]
        networks:
          front:
            driver: bridge
            driver_opts:
              com.docker.network.driver.mtu: "1400"
              com.docker.network.bridge.enable_icc: "false"
              com.docker.network.bridge.enable_ip_masquerade: "false"
            ipam:
              config:
                - subnet: 10.1.0.0/24
                  gateway: 10.1.0.254
                  ip_range: 10.1.0.128/25
                  aux_addresses: {printer: 10.1.0.129}
          back:
            internal: true
            name: shop_back
            labels: [a=b]
          unused: {}
    """})
    doc = config(spec)
    assert spec.project == "shop" and spec.format == "compose"
    assert {name: {k: net[k] for k in ("driver", "subnet", "gateway", "mtu", "nat", "internal", "icc")}
            for name, net in doc["networks"].items()} == {
        "front": {"driver": "bridge", "subnet": "10.1.0.0/24", "gateway": "10.1.0.254", "mtu": 1400,
                  "nat": False, "internal": False, "icc": False},
        "back": {"driver": "bridge", "subnet": "10.128.0.0/24", "gateway": "10.128.0.1", "mtu": 1500,
                 "nat": True, "internal": True, "icc": True},
    }
    # ip_range is the pool of automatic addresses; the aux address is never handed out.
    assert doc["containers"]["web"]["networks"]["front"]["ipv4_address"] == "10.1.0.130"
    assert spec.notes == ["ignored (no network meaning): networks.labels, networks.name"]


def test_compose_attachments_names_and_hosts(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": """
        services:
          web:
            hostname: www
            domainname: example.com
            container_name: web-main
            mac_address: 02:42:0a:01:00:0a
            networks:
              front:
                ipv4_address: 10.1.0.10
                aliases: [site]
                interface_name: lan0
              back:
                priority: 10
              mgmt:
                gw_priority: 5
            links: ["db:database"]
            extra_hosts: ["gw:host-gateway", "db.example=10.9.9.9", "old.example:10.9.9.8"]
            dns: 10.1.0.53
            dns_search: [example.com]
            sysctls: ["net.ipv4.ip_forward=1", "kernel.msgmax=65536"]
          db:
            networks: [back]
        networks:
          front: {ipam: {config: [{subnet: 10.1.0.0/24}]}}
          back: {ipam: {config: [{subnet: 10.2.0.0/24}]}}
          mgmt: {ipam: {config: [{subnet: 10.3.0.0/24}]}}
    """}, environ={})
    doc = config(spec)
    web, derived = doc["containers"]["web"], doc["derived"]["containers"]["web"]
    assert derived["netns"] == f"{spec.project}-web" and not derived["adopted"]
    assert {name: (ep["ifname"], ep["ipv4_address"], ep["mac_address"], ep["type"])
            for name, ep in web["networks"].items()} == {  # by priority, then name: eth0, eth1, ... (interface_name wins)
        "back": ("eth0", "10.2.0.2", "02:42:0a:01:00:0a", "veth"),
        "front": ("lan0", "10.1.0.10", None, "veth"),
        "mgmt": ("eth2", "10.3.0.2", None, "veth"),
    }
    assert derived["default_gateway"] == "10.3.0.1"  # gw_priority
    assert web["routes"] == [] and web["dns"] == ["10.1.0.53"] and web["dns_search"] == ["example.com"]
    assert derived["hosts"] == ["10.2.0.3 database", "10.2.0.3 db", "10.1.0.10 site",
                                "10.1.0.10 web", "10.2.0.2 web", "10.3.0.2 web",
                                "10.1.0.10 web-main", "10.2.0.2 web-main", "10.3.0.2 web-main",
                                "10.1.0.10 www", "10.2.0.2 www", "10.3.0.2 www",
                                "10.1.0.10 www.example.com", "10.2.0.2 www.example.com", "10.3.0.2 www.example.com",
                                "10.3.0.1 gw", "10.9.9.9 db.example", "10.9.9.8 old.example"]
    assert web["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert "ignored (no network meaning): sysctls (other than net.*)" in spec.notes


def test_compose_ports_short_long_ranges(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": """
        services:
          web:
            ports:
              - "8080:80"
              - "127.0.0.1:5353:53/udp"
              - "9000-9001:7000-7001"
              - "3000"
              - 4000
              - target: 443
                published: "8443"
                host_ip: 0.0.0.0
                protocol: tcp
                mode: host
            expose: ["3000"]
        networks:
          default:
            driver_opts: {com.docker.network.bridge.host_binding_ipv4: 127.0.0.2}
    """})
    ports = [{**vars(p), "host_ip": str(p.host_ip)} for p in spec.topology.containers["web"].ports]
    assert ports == [
        {"target": 80, "published": 8080, "protocol": "tcp", "host_ip": "127.0.0.2"},
        {"target": 53, "published": 5353, "protocol": "udp", "host_ip": "127.0.0.1"},
        {"target": 7000, "published": 9000, "protocol": "tcp", "host_ip": "127.0.0.2"},
        {"target": 7001, "published": 9001, "protocol": "tcp", "host_ip": "127.0.0.2"},
        {"target": 3000, "published": None, "protocol": "tcp", "host_ip": "127.0.0.2"},
        {"target": 4000, "published": None, "protocol": "tcp", "host_ip": "127.0.0.2"},
        {"target": 443, "published": 8443, "protocol": "tcp", "host_ip": "0.0.0.0"},
    ]
    assert spec.notes == ["ignored (no network meaning): expose"]


def test_compose_network_modes_and_scale(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": """
        services:
          app: {scale: 2}
          sidecar: {network_mode: "service:app"}
          quiet: {network_mode: none}
          hostnet: {network_mode: host, ports: ["80:80"]}
          legacy: {network_mode: bridge}
          adopted: {network_mode: "container:other-ns"}
          api: {deploy: {replicas: 0}}
    """})
    doc = config(spec)
    assert list(doc["containers"]) == ["app-1", "app-2", "quiet", "legacy", "adopted"]
    assert doc["containers"]["quiet"]["networks"] == {}
    assert doc["containers"]["adopted"]["netns"] == "other-ns" and doc["derived"]["containers"]["adopted"]["adopted"]
    assert doc["networks"]["bridge"]["subnet"] == "172.17.0.0/16"
    assert doc["derived"]["containers"]["app-1"]["hosts"] == ["10.128.0.2 app", "10.128.0.3 app", "10.128.0.2 app-1",
                                                   "10.128.0.3 app-2"]
    assert spec.notes[:2] == ["service sidecar shares the sandbox of app (network_mode: service:app)",
                              "service hostnet runs in the host namespace (network_mode: host): no sandbox"]


def test_compose_loading_env_anchors_extends_include_profiles_overrides(tmp_path):
    spec = loaded(tmp_path, {
        "compose.yaml": """
            include: [more.yaml]
            x-net: &net
              networks: [back]
            services:
              web:
                <<: *net
                ports: ["${PORT:-8080}:80"]
                command: echo $${HOME} ${UNSET_IS_EMPTY}
                extra_hosts: ["db:${DB_IP}"]
              db:
                extends: {file: base.yaml, service: base}
                <<: *net
              debug:
                profiles: [debug]
                networks: [back]
              tools:
                profiles: [tools]
            networks:
              back: {ipam: {config: [{subnet: "${SUBNET}"}]}}
        """,
        "base.yaml": """
            services:
              base:
                image: postgres
                dns: [10.9.0.53]
        """,
        "more.yaml": """
            services:
              cache:
                networks: [back]
        """,
        "override.yaml": """
            services:
              web:
                ports: ["9090:90"]
                networks: [front]
            networks:
              front: {}
        """,
        ".env": "SUBNET=10.5.0.0/24\nDB_IP=10.5.0.99\n",
        "other.env": "SUBNET=10.6.0.0/24\nDB_IP=10.6.0.99\nPORT=7070\nCOMPOSE_PROJECT_NAME=Other.Name\n",
    }, more_files=(str(tmp_path / "override.yaml"),), profiles=("debug",))
    doc = config(spec)
    assert list(doc["containers"]) == ["web", "db", "debug", "cache"]
    assert doc["networks"]["back"]["subnet"] == "10.5.0.0/24"
    assert list(doc["containers"]["web"]["networks"]) == ["back", "front"]
    assert doc["containers"]["db"]["dns"] == ["10.9.0.53"]
    assert [(p.published, p.target) for p in spec.topology.containers["web"].ports] == [(8080, 80), (9090, 90)]
    other = load(tmp_path / "compose.yaml", environ={}, source=Source(env_files=(str(tmp_path / "other.env"),)))
    assert other.project == "othername"
    assert resolved_document(resolve(other.topology, other.doc, other.project))["networks"]["back"]["subnet"] == \
        "10.6.0.0/24"
    assert [p.published for p in other.topology.containers["web"].ports][:1] == [7070]
    assert {s.name for s in spec.sources} == {"compose.yaml", "more.yaml", "base.yaml", "override.yaml"}


@pytest.mark.parametrize("body, message", [
    ("services: {a: {networks: [n]}}\nnetworks: {n: {driver: overlay}}\n",
     "compose.yaml:2:24: driver: overlay is not supported: it spans hosts and needs a swarm"),
    ("services: {a: {networks: [n]}}\nnetworks:\n  n:\n    external: true\n",
     "compose.yaml:4:15: external network is not supported"),
    ("services: {a: {ports: ['80:80/sctp']}}\n", "compose.yaml:1:24: protocol sctp is not supported"),
    ("services: {a: {network_mode: 'service:b'}}\n", "compose.yaml:1:30: network_mode names unknown service 'b'"),
    ("services: {a: {network_mode: none, networks: [x]}}\n",
     "compose.yaml:1:16: service 'a' has both network_mode and networks"),
    ("services: {a: {networks: [nope]}}\n", "compose.yaml:1:27: service uses undefined network 'nope'"),
    ("services: {a: {networks: {n: {ipv4_address: 10.0.0.5}}}}\nnetworks: {n: {ipam: {config: [{subnet: 10.1.0.0/24}]}}}\n",
     "compose.yaml:1:45: ipv4_address 10.0.0.5 is outside subnet 10.1.0.0/24"),
    ("services: {a: {scale: 2, container_name: x}}\n", "compose.yaml:1:23: service 'a' has container_name and 2 replicas"),
    ("services: {a: {ports: ['1-3:1-2']}}\n", "compose.yaml:1:24: the port range 1-3:1-2 is not supported"),
    ("services:\n  a:\n    extends: b\n", "compose.yaml:3:14: extends names unknown service 'b'"),
])
def test_compose_errors_are_one_line_at_the_original_place(tmp_path, body, message):
    assert error(tmp_path, {"compose.yaml": body}).startswith(message)


def test_compose_and_clab_ipv6_map_onto_dual_stack(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": """
        services:
          a:
            networks:
              n: {ipv4_address: 10.61.0.5, ipv6_address: "fd00:61::5"}
            ports: ["[::1]:8080:80"]
        networks:
          n:
            enable_ipv6: true
            ipam:
              config:
                - {subnet: 10.61.0.0/24}
                - {subnet: "fd00:61::/64", gateway: "fd00:61::1"}
    """})
    data = spec.doc.data
    assert data["networks"]["n"] == {"enable_ipv6": True, "subnet": "10.61.0.0/24", "subnet6": "fd00:61::/64",
                                     "gateway6": "fd00:61::1"}
    assert data["containers"]["a"]["networks"]["n"] == {"ipv4_address": "10.61.0.5", "ipv6_address": "fd00:61::5"}
    assert data["containers"]["a"]["ports"] == [{"target": 80, "published": 8080, "host_ip": "::1"}]
    config(spec)
    lab = loaded(tmp_path, {"a.clab.yml": "name: x\ntopology:\n  nodes: {n1: {kind: linux, mgmt-ipv6: '3fff:172:20:20::9'}}\n"},
                 main="a.clab.yml")
    assert lab.doc.data["networks"]["clab"]["subnet6"] == "3fff:172:20:20::/64"    # containerlab's default
    assert config(lab)["containers"]["n1"]["networks"]["clab"]["ipv6_address"] == "3fff:172:20:20::9"


def test_unquoted_port_mappings_are_text_as_in_yaml_1_2(tmp_path):
    spec = loaded(tmp_path, {"compose.yaml": "services: {a: {ports: [10022:22]}}\n"})
    assert spec.doc.data["containers"]["a"]["ports"] == [{"target": 22, "published": 10022}]


# ---- containerlab ------------------------------------------------------------------------
LAB = """
    name: lab1
    mgmt:
      network: mgmt
      ipv4-subnet: 172.31.100.0/24
      mtu: 1450
    topology:
      defaults:
        env: {A: b}
      kinds:
        nokia_srlinux: {image: ghcr.io/nokia/srlinux, type: ixrd2l}
        linux: {image: alpine, dns: {servers: [10.0.0.53]}}
      groups:
        leaves: {kind: nokia_srlinux}
      nodes:
        srl1: {group: leaves, mgmt-ipv4: 172.31.100.11}
        srl2: {kind: nokia_srlinux, startup-config: x.cfg}
        h1: {kind: linux, exec: ["ip addr add 10.0.0.1/24 dev eth1"], ports: ["8080:80"]}
        br1: {kind: bridge}
        ${NODE:=h2}: {kind: linux, network-mode: none}
      links:
        - endpoints: ["srl1:ethernet-1/1", "srl2:e1-1"]
        - endpoints: ["srl1:e1-2", "srl2:ethernet-1/2"]
        - endpoints: ["srl1:e1-3", "srl1:e1-4"]
        - endpoints: ["h1:eth1", "br1:port1"]
        - endpoints: ["srl2:e1-3", "host:lab1-srl2"]
        - type: veth
          mtu: 9000
          endpoints:
            - {node: h1, interface: eth2, ipv4: 192.168.0.1/30}
            - {node: h2, interface: eth1, ipv4: 192.168.0.2/30}
        - type: mgmt-net
          endpoint: {node: h1, interface: eth3}
          host-interface: h1-mgmt
"""


def test_clab_translation(tmp_path):
    spec = loaded(tmp_path, {"lab.clab.yml": LAB}, main="lab.clab.yml")
    data = spec.doc.data
    assert spec.project == "clab-lab1" and spec.format == "clab"
    port = data["links"][3]["host_interface"]
    assert data["networks"] == {"mgmt": {"subnet": "172.31.100.0/24", "mtu": 1450}, "br1": {"internal": True}}
    assert data["containers"] == {
        "srl1": {"networks": {"mgmt": {"ifname": "eth0", "ipv4_address": "172.31.100.11"}}},
        "srl2": {"networks": {"mgmt": {"ifname": "eth0"}}},
        "h1": {"networks": {"mgmt": {"ifname": "eth0"}}, "exec": ["ip addr add 10.0.0.1/24 dev eth1"],
               "dns": ["10.0.0.53"], "ports": [{"target": 80, "published": 8080}]},   # dns: kinds.linux
        "h2": {"dns": ["10.0.0.53"]},
    }
    assert data["links"] == [
        {"endpoints": ["srl1:e1-1", "srl2:e1-1"]},
        {"endpoints": ["srl1:e1-2", "srl2:e1-2"]},
        {"endpoints": ["srl1:e1-3", "srl1:e1-4"]},
        {"network": "br1", "host_interface": port, "endpoints": ["h1:eth1"]},
        {"host_interface": "lab1-srl2", "endpoints": ["srl2:e1-3"]},
        {"endpoints": ["h1:eth2", "h2:eth1"], "mtu": 9000, "addresses": ["192.168.0.1/30", "192.168.0.2/30"]},
        {"network": "mgmt", "host_interface": "h1-mgmt", "endpoints": ["h1:eth3"]},
    ]
    assert spec.notes == ["bridge node br1: no bridge br1 exists, so netcompose makes one of its own (named in its "
                          "alias); its ports have netcompose's host-side names",
                          "ignored (no network meaning): env, image, startup-config, type"]
    doc = config(spec)
    assert doc["derived"]["containers"]["srl1"]["netns"] == "clab-lab1-srl1"
    assert {k: doc["links"][2][k] for k in ("endpoints", "mtu", "addresses")} == \
        {"endpoints": ["srl1:e1-3", "srl1:e1-4"], "mtu": 1500, "addresses": None}


def test_clab_vxlan_and_endpoint_macs(tmp_path):
    spec = loaded(tmp_path, {"a.clab.yml": """
        name: x
        topology:
          nodes: {a: {kind: nokia_srlinux}, b: {kind: linux}}
          links:
            - type: vxlan-stitch
              endpoint: {node: a, interface: ethernet-1/6, mac: "02:00:00:00:00:06"}
              remote: 10.0.0.2
              vni: 100
              dst-port: 14788
              mtu: 1450
            - type: veth
              endpoints:
                - {node: a, interface: e1-1, mac: "02:00:00:00:00:01"}
                - {node: b, interface: eth1}
    """}, main="a.clab.yml")
    assert spec.doc.data["links"] == [
        {"endpoints": ["a:e1-6"], "vxlan": {"remote": "10.0.0.2", "vni": 100, "port": 14788}, "mtu": 1450,
         "mac_addresses": ["02:00:00:00:00:06"]},
        {"endpoints": ["a:e1-1", "b:eth1"], "mac_addresses": ["02:00:00:00:00:01", None]},
    ]
    wanted = [
        {"endpoints": ["a:e1-6"], "vxlan": {"vni": 100, "remote": "10.0.0.2", "port": 14788},
         "mac_addresses": ["02:00:00:00:00:06"], "mtu": 1450, "addresses": None},
        {"endpoints": ["a:e1-1", "b:eth1"], "mac_addresses": ["02:00:00:00:00:01", None], "mtu": 1500,
         "addresses": None},
    ]
    links = config(spec)["links"]
    assert len(links) == 2 and [{k: link[k] for k in want} for link, want in zip(links, wanted)] == wanted


@pytest.mark.parametrize("prefix, project", [(None, "clab-lab1"), ('""', "lab1"), ("__lab-name", "lab1"),
                                             ("acme", "acme-lab1")])
def test_clab_prefix_names_the_sandboxes(tmp_path, prefix, project):
    head = f"prefix: {prefix}\n" if prefix is not None else ""
    spec = loaded(tmp_path, {"a.clab.yml": head + "name: lab1\ntopology: {nodes: {n1: {kind: linux}}}\n"},
                  main="a.clab.yml")
    assert spec.project == project and config(spec)["derived"]["containers"]["n1"]["netns"] == f"{project}-n1"


@pytest.mark.parametrize("body, message", [
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - type: dummy\n      endpoint: {node: a, interface: e1}\n",
     "a.clab.yml:5:13: type: dummy is not supported: this kernel has no dummy module"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - type: veth-stitch\n      endpoints: []\n",
     "a.clab.yml:5:13: link type veth-stitch is not supported"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - type: vxlan\n      endpoint: {node: a, interface: e1}\n",
     "a.clab.yml:5:7: a vxlan link needs remote"),
    ("name: x\ntopology:\n  nodes: {a: {kind: bridge}}\n  links:\n    - endpoints: ['a:e1', 'macvlan:eth0']\n",
     "a.clab.yml:5:19: a macvlan on 'a' is not supported"),
    ("name: x\ntopology:\n  nodes:\n    a: {kind: linux, image: '{{ .img }}'}\n",
     "a.clab.yml:4:30: Go templates are not rendered; render the topology first"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - endpoints: ['a:e1', 'b:e1']\n",
     "a.clab.yml:5:27: link endpoint names unknown node 'b'"),
    ("name: x\ntopology:\n  nodes: {a: {image: x}}\n", "a.clab.yml:3:11: node 'a' has no kind"),
])
def test_clab_errors_are_one_line_at_the_original_place(tmp_path, body, message):
    assert error(tmp_path, {"a.clab.yml": body}, main="a.clab.yml").startswith(message)


def test_clab_interface_names_per_kind_and_long_names(tmp_path):
    spec = loaded(tmp_path, {"a.clab.yml": """
        name: x
        topology:
          nodes:
            sros: {kind: nokia_sros}
            sim: {kind: nokia_srsim}
            ceos: {kind: arista_ceos}
          links:
            - endpoints: ["sros:1/1/3", "sim:1/1/c2/1"]
            - endpoints: ["ceos:Ethernet1/1", "ceos:a-very-long-interface-name"]
    """}, main="a.clab.yml")
    ends = [link["endpoints"] for link in spec.doc.data["links"]]
    assert ends[0] == ["sros:eth3", "sim:e1-1-c2-1"]
    assert ends[1][0].startswith("ceos:Ethern-") and ends[1][1].startswith("ceos:averyl-")
    assert all(len(e.partition(":")[2]) <= 15 for e in ends[1])
    config(spec)


# ---- the CLI ------------------------------------------------------------------------------
def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netcompose", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_convert_round_trip_and_notes(tmp_path):
    write(tmp_path, {"compose.yaml": """
        services:
          web: {image: nginx, ports: ["8080:80"], networks: {front: {aliases: [site]}}}
          db: {image: postgres, networks: [front]}
        networks: {front: {ipam: {config: [{subnet: 10.44.0.0/24}]}}}
    """})
    out = tmp_path / "converted.yaml"
    converted = run("convert", "-f", str(tmp_path / "compose.yaml"), "-o", str(out))
    assert converted.returncode == 0, converted.stderr
    assert converted.stderr == "note: ignored (no network meaning): image\n"
    text = out.read_text()
    assert "  web:  # compose.yaml:2\n" in text and "name: " in text
    original = run("config", "--json", "-q", "-f", str(tmp_path / "compose.yaml"))
    again = run("config", "--json", "-f", str(out))
    assert original.returncode == 0 and original.stdout == again.stdout and again.stderr == ""
    bad = run("config", "--format", "clab", "-f", str(tmp_path / "compose.yaml"))
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "containerlab topology needs" in bad.stderr


# ---- the public corpus ---------------------------------------------------------------------
# Files that cannot load, each with the reason (a feature netcompose does not build, or a file
# that is not valid on its own).  Every other file must load.
EXPECTED_FAILURES = {
    "compose": {
        "compose-go__loader__full-example.yml": "link to unknown service 'db'",
        "compose__pkg__e2e__testdata__TestPublishLocalInclude__compose.yaml": "common.yaml': no such file",
        "compose__pkg__e2e__testdata__TestPublishWithExtends__compose.yaml": "common.yaml': no such file",
    },
    "clab": {
        "clab-io-draw__lab-examples__hori.clab.yml": "ipv4_address 172.50.60.33 is outside subnet",
        "clab-io-draw__lab-examples__special_endpoints.clab.yml": "type: dummy is not supported",
        "containerlab__tests__01-smoke__24-bridge-in-ns.clab.yaml": "(a bridge inside another node's namespace) "
                                                                    "is not supported",
        "containerlab__tests__01-smoke__30-bridge-reconcile.clab.yml": "Go templates are not rendered",
        "containerlab__tests__13-srsim__12-srsim-veth-stitch.clab.yml": "link type veth-stitch is not supported",
        "vscode-containerlab__dev__topologies-original__network.clab.yml": "type: dummy is not supported",
    },
}


def corpus_files(kind: str) -> list[Path]:
    if not (CORPUS / kind).is_dir():
        pytest.skip("../shared/corpus is absent")
    return sorted(p for p in (CORPUS / kind).iterdir() if p.suffix in (".yml", ".yaml"))


@pytest.mark.parametrize("kind", ["compose", "clab"])
def test_corpus_loads_or_names_what_is_not_supported(kind):
    files = corpus_files(kind)
    failures = {}
    for path in files:
        try:
            spec = load(path, environ={})
            original = resolved_document(resolve(spec.topology, spec.doc, spec.project))
        except SpecError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path.parent)), exc
            failures[path.name] = str(exc)
            continue
        # convert round trip: the written netcompose file resolves to the same topology
        converted = path.parent / "converted.yaml"
        again = parse_converted(render(spec), converted)
        assert resolved_document(resolve(again.topology, again.doc, again.project)) == original, path.name
    expected = EXPECTED_FAILURES[kind]
    unexpected = {n: m for n, m in failures.items() if n not in expected or expected[n] not in m}
    fixed = [n for n in expected if n not in failures]
    assert not unexpected and not fixed, (unexpected, fixed)
    loaded_share = 1 - len(failures) / len(files)
    assert loaded_share >= 0.9, (loaded_share, failures)


def parse_converted(text: str, where: Path):
    """Load converted text without writing beside the corpus."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "converted.yaml"
        path.write_text(text)
        return load(path, environ={})


def test_compose_folders_that_normalise_alike_are_two_projects(tmp_path):
    """Compose would make folders `a.b` and `ab` one project; each `up` would prune the other's."""
    from netcompose.frontends.compose import project_name
    from netcompose.spec.loader import Document
    doc = Document({"services": {}}, "compose.yaml")
    dotted, plain = (project_name(None, {}, doc, tmp_path / folder / "compose.yaml") for folder in ("a.b", "ab"))
    assert plain == "ab" and dotted != plain and dotted.startswith("ab-")
    assert project_name("My.App", {}, doc, tmp_path / "x" / "compose.yaml") == "myapp"   # -p: as Compose
