"""Inputs are confined and bounded: includes and template includes stay inside the
topology's folder, only regular files are read, and a hostile file (alias bomb, huge
loop, string product, /dev/zero, a FIFO) fails in seconds with exit 3, a one-line error
and a bounded memory peak, in `plan` and in `watch`, which also stops at once on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, needs_root

SECONDS = 15          # "fails in seconds", with room for a loaded shared machine
MAX_RSS_MB = 300
# Runs the CLI under an address-space cap (a regression must not take the shared machine's
# memory) and reports its peak RSS, and its children's (the template renderer), on stderr.
WRAPPER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))
from netcompose.cli import main
try:
    code = main(sys.argv[1:])
finally:
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(f"peak-rss-kb {peak}", file=sys.stderr)
sys.exit(code)
"""

SECRET = "SECRET-FIRST-LINE: root-only-content"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))
MERGE_BOMB = "x0: &x0 {k: v}\n" + "".join(f"x{i + 1}: &x{i + 1} {{<<: [*x{i}, *x{i}]}}\n" for i in range(40))


def run_bounded(*args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, cwd=REPO,
                            timeout=SECONDS * 4)
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    peak = int(lines[-1].split()[1]) if lines and lines[-1].startswith("peak-rss-kb") else 0
    result.stderr = "\n".join(lines[:-1])
    return result, elapsed, peak // 1024


def assert_invalid(path: Path, *words: str) -> str:
    result, elapsed, peak_mb = run_bounded("plan", "-f", str(path), "-p", "tbound")
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert elapsed < SECONDS, elapsed
    assert peak_mb < MAX_RSS_MB, peak_mb
    assert SECRET not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def outside(tmp_path):
    """A root-only file outside the topology's folder, and that folder."""
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\nnetworks: {stolen: {}}\n")
    secret.chmod(0o600)
    folder = tmp_path / "topo"
    folder.mkdir()
    return folder, secret


@pytest.mark.parametrize("include", ["ABSOLUTE", "../shadow", "link.yaml", "sub/../../shadow"])
def test_include_stays_inside_the_topology_folder(outside, include):
    folder, secret = outside
    (folder / "link.yaml").symlink_to(secret)
    (folder / "sub").mkdir()
    include = str(secret) if include == "ABSOLUTE" else include
    path = folder / "t.yaml"
    path.write_text(f"include: ['{include}']\n")
    assert_invalid(path, "t.yaml:1:11:", "outside the topology's folder")


@pytest.mark.parametrize("entry", ["['ABSOLUTE']", "['../shadow']", "['link.yaml']", "[{path: ['ok.yaml', '../shadow']}]",
                                   "[sub/in.yaml]", "EXTENDS"])
def test_compose_include_and_extends_stay_inside_the_folder(outside, entry):
    """What a Compose file pulls in is confined as a netcompose include is (an override
    given with -f is the user's choice, but its own includes are confined to its folder)."""
    folder, secret = outside
    (folder / "link.yaml").symlink_to(secret)
    (folder / "ok.yaml").write_text("services: {b: {}}\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "in.yaml").write_text("include: [../../shadow]\n")
    path = folder / "compose.yaml"
    if entry == "EXTENDS":
        path.write_text("services:\n  a:\n    extends: {file: ../shadow, service: x}\n")
        assert_invalid(path, "compose.yaml:3:21:", "'../shadow' is outside the topology's folder")
        return
    path.write_text(f"include: {entry.replace('ABSOLUTE', str(secret))}\nservices: {{a: {{}}}}\n")
    where = "in.yaml:1:11:" if "sub" in entry else "compose.yaml:1:"
    assert_invalid(path, where, "outside the topology's folder")


def test_compose_include_cycle_and_dotenv_link_are_refused(outside):
    folder, secret = outside
    (folder / "a.yaml").write_text("include: [b.yaml]\nservices: {a: {}}\n")
    (folder / "b.yaml").write_text("include: [a.yaml]\nservices: {b: {}}\n")
    assert_invalid(folder / "a.yaml", "b.yaml:1:11:", "include or extends cycle")
    (folder / "compose.yaml").write_text("services: {a: {}}\n")
    (folder / ".env").symlink_to(secret)
    assert_invalid(folder / "compose.yaml", ".env' is outside the topology's folder")


def test_template_include_of_a_symlink_out_is_refused(outside):
    folder, secret = outside
    (folder / "frag.yaml").symlink_to(secret)
    path = folder / "t.yaml.j2"
    path.write_text("{% include 'frag.yaml' %}\n")
    assert_invalid(path, "outside the topology's folder")


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for target in ("fifo.yaml", "zero.yaml", "/dev/zero"):
        path = tmp_path / "t.yaml"
        path.write_text(f"include: ['{target}']\n")
        assert_invalid(path, "not a regular file" if target == "fifo.yaml" else "outside the topology's folder")
    assert_invalid(fifo, "not a regular file")
    assert_invalid(Path("/dev/zero"), "not a regular file")


def test_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(1 << 30)   # sparse: reading it would take a GB
    assert_invalid(path, "more than the limit")


@pytest.mark.parametrize("text,words", [
    (BOMB, "more than 200000 values"),
    (MERGE_BOMB, "t.yaml:1:"),   # caught (value budget, or duplicate keys) before the merges double 40 times
    ("x: [" + ",".join(["a"] * 300_000) + "]\n", "more than 200000 YAML nodes"),
    ("networks:\n  n: {subnet: 10.0.0.0/24}\n? " + "k" * 100_000 + "\n: 1\n", "unknown key"),
    ("name: " + "k" * 100_000 + "\n", "at most 32"),
], ids=["alias-bomb", "merge-bomb", "too-many-nodes", "long-key", "long-value"])
def test_yaml_is_bounded(tmp_path, text, words):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    line = assert_invalid(path, words)
    assert len(line) < 600   # an excerpt of the offending token, never the whole of it


@pytest.mark.parametrize("body,words", [
    ("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", "longer than"),
    ("{% for a in range(99999) %}{% for b in range(99999) %}xxxxxxxx{% endfor %}{% endfor %}", "output exceeds"),
    ("{{ 'x' * 2000000000 }}", "more than"),
    ("{{ 9 ** 999999999 }}", "longer than"),
], ids=["loop", "output", "string-product", "bigint"])
def test_templates_are_bounded(tmp_path, body, words):
    path = tmp_path / "t.yaml.j2"
    path.write_text(f"networks: {{}}\n# {body}\n")
    assert_invalid(path, "t.yaml.j2:", words)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


@needs_root
def test_watch_reports_a_bomb_and_stops_at_once_on_sigterm_while_rendering(tmp_path, project_name):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    child = subprocess.Popen([sys.executable, "-m", "netcompose", "watch", "--json", "-f", str(bomb), "-p",
                              project_name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        event = json.loads(child.stdout.readline())
        assert event["event"] == "error" and "more than 200000 values" in event["error"]
        status = Path(f"/proc/{child.pid}/status").read_text()
        peak_kb = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))
        assert peak_kb < MAX_RSS_MB * 1024 and child.poll() is None
    finally:
        child.kill()
        child.wait()

    slow = tmp_path / "slow.yaml.j2"
    slow.write_text("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}\n")
    child = subprocess.Popen([sys.executable, "-m", "netcompose", "watch", "-f", str(slow), "-p", project_name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + SECONDS
        while not _children(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        renderers = _children(child.pid)
        assert renderers, "the template never started rendering"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=SECONDS)
        assert time.monotonic() - started < 3
        assert not any(Path(f"/proc/{pid}").exists() for pid in renderers)   # the renderer went too
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
