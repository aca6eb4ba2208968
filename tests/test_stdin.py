"""`-f -`: the topology from standard input, read once and bounded like a file; positions
say `<stdin>`, and what it includes is confined to the current folder."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netcompose.inputs import MAX_FILE_BYTES

from .conftest import REPO

MINIMAL = (REPO / "topologies/minimal.yaml").read_text()
THREE_TIER = (REPO / "topologies/three-tier.yaml").read_text()   # fixed subnets: no allocation that others' labs move


def _cli(*args: str, stdin: bytes | str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(["python3", "-m", "netcompose", *args], input=data, capture_output=True, cwd=cwd,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})   # this checkout from any folder
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize("command", [["config"], ["graph", "-T", "mermaid"], ["explain", "app", "db"]])
def test_stdin_reads_as_the_file_does(command):
    from_file = _cli(*command, "-f", "topologies/three-tier.yaml", stdin=b"")
    from_stdin = _cli(*command, "-f", "-", stdin=THREE_TIER)
    assert from_stdin.returncode == from_file.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout.replace("topologies/three-tier.yaml", "<stdin>")


def test_errors_name_stdin_with_line_and_column():
    result = _cli("plan", "-f", "-", stdin="networks:\n  a: {subnet: bad}\n")
    assert result.returncode == 3 and result.stderr.startswith("error: <stdin>:2:15: networks.a.subnet: ")
    assert "Traceback" not in result.stderr


def test_stdin_is_bounded_like_a_file():
    result = _cli("config", "-f", "-", stdin=b"#" * (MAX_FILE_BYTES + 1))
    assert result.returncode == 3 and f"<stdin> is more than the limit of {MAX_FILE_BYTES} bytes" in result.stderr


def test_includes_are_relative_to_and_confined_in_the_current_folder(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab/nets.yaml").write_text("networks:\n  lan: {subnet: 10.77.0.0/24}\n")
    (tmp_path / "outside.yaml").write_text("networks:\n  x: {}\n")
    main = "name: fromstdin\ninclude: [nets.yaml]\ncontainers:\n  a: {networks: [lan]}\n"
    result = _cli("config", "-f", "-", stdin=main, cwd=tmp_path / "lab")
    assert result.returncode == 0, result.stderr
    assert "10.77.0.0/24" in result.stdout
    escaping = _cli("config", "-f", "-", stdin="include: [../outside.yaml]\n", cwd=tmp_path / "lab")
    assert escaping.returncode == 3
    assert escaping.stderr.startswith("error: <stdin>:1:11: '../outside.yaml' is outside the topology's folder")


def test_project_name_defaults_to_the_current_folder(tmp_path):
    (tmp_path / "mylab").mkdir()
    result = _cli("config", "--json", "-f", "-", stdin="networks:\n  lan: {}\n", cwd=tmp_path / "mylab")
    assert result.returncode == 0, result.stderr
    assert '"name": "mylab"' in result.stdout


def test_compose_file_on_stdin():
    compose = "services:\n  web:\n    image: nginx\n    networks: [front]\nnetworks:\n  front: {}\n"
    result = _cli("config", "-q", "-f", "-", stdin=compose)
    assert result.returncode == 0, result.stderr
    assert "web:" in result.stdout


def test_watch_refuses_stdin():
    result = _cli("watch", "-f", "-", stdin=MINIMAL)
    assert result.returncode == 3 and "standard input cannot be watched" in result.stderr
