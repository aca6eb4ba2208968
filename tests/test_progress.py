"""`up` and `down` on a terminal: a progress bar (rich) once they take a second, erased
before the usual summary; into a pipe, the summary alone; NO_COLOR leaves the bar uncoloured,
and `logs` too."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

from .conftest import REPO, needs_root

# `exec:` runs in the sandbox during apply: a sleep makes this `up` outlast the bar's delay.
SLOW = """
networks:
  lan: {}
containers:
  a:
    networks: [lan]
    exec: ["sleep 2"]
"""
SGR_COLOUR = re.compile(rb"\x1b\[[0-9;]*3[0-9][;m]")   # a foreground colour


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the CLI with stdout (and stderr) on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(["python3", "-m", "netcompose", *args], stdin=subprocess.DEVNULL, stdout=follower,
                             stderr=follower, cwd=REPO, env={**os.environ, "TERM": "xterm", **env})
    os.close(follower)
    output, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:   # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif child.poll() is not None:
                break
        return child.wait(timeout=30), output
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(leader)


@needs_root
def test_bar_on_a_terminal_summary_in_a_pipe(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text(SLOW)
    common = ["-f", str(path), "-p", project_name]
    code, output = _on_a_terminal(["up", *common], {"NO_COLOR": ""})
    assert code == 0, output
    text = output.decode()
    assert "up: applying" in text and "━" in text and SGR_COLOUR.search(output)
    assert re.search(r"up: \d+ created, 0 updated, 0 deleted in [\d.]+s", text)

    down = subprocess.run(["python3", "-m", "netcompose", "down", *common], capture_output=True, cwd=REPO,
                          timeout=120)
    assert down.returncode == 0, down.stderr
    assert b"\x1b" not in down.stdout and b"down: " in down.stdout

    code, output = _on_a_terminal(["up", *common], {"NO_COLOR": "1"})
    assert code == 0, output
    assert b"up: applying" in output and not SGR_COLOUR.search(output)
    code, output = _on_a_terminal(["down", *common], {"NO_COLOR": "1"})
    assert code == 0, output


@needs_root
def test_no_bar_in_json(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text(SLOW)
    code, output = _on_a_terminal(["up", "--json", "-f", str(path), "-p", project_name], {})
    assert code == 0 and b"up: applying" not in output and output.lstrip().startswith(b"{")
    code, output = _on_a_terminal(["down", "--json", "-f", str(path), "-p", project_name], {})
    assert code == 0 and b"down: " not in output


@needs_root
def test_logs_colour_only_without_no_color(tmp_path, project_name):
    path = tmp_path / "topo.yaml"
    path.write_text('networks:\n  lan: {}\ncontainers:\n  a:\n    networks: [lan]\n'
                    '    command: [sh, -c, "echo hello; sleep 30"]\n')
    common = ["-f", str(path), "-p", project_name]
    try:
        assert subprocess.run(["python3", "-m", "netcompose", "up", *common], cwd=REPO, capture_output=True,
                              timeout=120).returncode == 0
        deadline = time.monotonic() + 30
        logs = ["logs", "--file", str(path), "-p", project_name]   # logs takes -f as --follow
        while b"hello" not in (output := _on_a_terminal(logs, {"NO_COLOR": ""})[1]):
            assert time.monotonic() < deadline, output
            time.sleep(0.2)
        assert SGR_COLOUR.search(output)   # a colour-coded prefix
        code, output = _on_a_terminal(logs, {"NO_COLOR": "1"})
        assert code == 0 and b"hello" in output and b"\x1b[" not in output
    finally:
        subprocess.run(["python3", "-m", "netcompose", "down", *common], cwd=REPO, capture_output=True, timeout=120)
