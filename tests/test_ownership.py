"""Ownership by proof and file safety, against the real kernel: objects named like ours
but not carrying our mark are conflicts (exit 1, one line, nothing changed), never
adopted or deleted; nothing under /etc/netns is written through a symlink we did not make."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netcompose.drivers import namespaces

from .conftest import needs_root, run_cli
from .test_kernel import ip, link_facts

pytestmark = [needs_root, pytest.mark.kernel]

NAT_TOPO = """
networks:
  front: {subnet: 10.151.0.0/24}
containers:
  web:
    networks: {front: {ipv4_address: 10.151.0.10}}
    ports: ["8151:80"]
"""


def host_snapshot(prefix: str) -> dict:
    """Everything a test project could have touched: its namespaces, host links, nft
    tables, /etc/netns entries (folders walked without following links)."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
    listed = {}
    for line in tables:
        parts = line.split()
        if len(parts) == 3 and prefix in parts[2]:
            listed[line] = subprocess.run(["nft", "list", "table", parts[1], parts[2]],
                                          capture_output=True, text=True).stdout
    etc = {}
    for folder, dirs, files in os.walk("/etc/netns"):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if prefix in path:
                etc[path] = os.readlink(path) if os.path.islink(path) else (
                    "dir" if os.path.isdir(path) else Path(path).read_text())
    return {"netns": [n for n in namespaces.list_named() if n.startswith(prefix)],
            "links": sorted((l.name, l.alias) for l in link_facts().values() if l.name.startswith(prefix)),
            "nft": listed, "etc": etc}


def cli(project_name: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(args[0], "-f", str(path), "-p", project_name, *args[1:])


def one_line_conflict(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("family", ["inet", "ip"])
def test_hand_made_nft_table_with_our_name_is_a_conflict(tmp_path, project_name, family):
    table = f"netcompose-{project_name}"
    subprocess.run(["nft", "add", "table", family, table], check=True)
    subprocess.run(["nft", "add", "chain", family, table, "keep", "{ type filter hook forward priority 5; }"],
                   check=True)
    path = tmp_path / "topo.yaml"
    path.write_text(NAT_TOPO)
    before = host_snapshot(project_name)
    one_line_conflict(cli(project_name, path, "up"), table, "another tool")
    assert host_snapshot(project_name) == before
    assert cli(project_name, path, "down").returncode == 0
    assert host_snapshot(project_name) == before


def test_our_nft_table_carries_its_mark_and_goes_with_down(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text(NAT_TOPO)
    assert cli(project_name, path, "up").returncode == 0
    listing = subprocess.run(["nft", "list", "table", "inet", f"netcompose-{project_name}"],
                             capture_output=True, text=True, check=True).stdout
    assert f'comment "netcompose project={project_name}"' in listing
    assert cli(project_name, path, "plan", "--detailed-exitcode").returncode == 0
    assert cli(project_name, path, "down").returncode == 0
    assert not host_snapshot(project_name)["nft"]
