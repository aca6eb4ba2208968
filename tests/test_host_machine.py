"""Random sequences against the real kernel: SIGINT at random moments of a 100-container `up`,
and a hypothesis state machine over file edits, hand-made drift, decoys, kill -9 of `up`
and `down`, and `down`.  Bounded: about a minute each."""
from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netcompose import Project, names
from netcompose.drivers import namespaces

from .conftest import REPO, Blocks, needs_root, remove_by_prefix
from .test_host import leftovers, sh

pytestmark = [needs_root, pytest.mark.kernel]


def test_sigint_at_random_moments_of_a_large_up_leaves_the_old_or_the_new_state(topo, project_name, tmp_path, blocks):
    text = blocks("networks: {n: {subnet: 10.176.0.0/24}}\ncontainers:\n") + "".join(
        f"  c{i}: {{networks: [n]}}\n" for i in range(100))
    project = topo(text)
    command = [sys.executable, "-m", "netcompose", "up", "-f", str(tmp_path / "topo.yaml"), "-p", project_name]
    rng = random.Random(int(os.environ.get("SEED", 77)))
    started = time.monotonic()   # how long a whole run takes on this (shared, loaded) machine
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    whole = time.monotonic() - started
    project.down()
    outcomes = {"old": 0, "new": 0}
    for round_no in range(int(os.environ.get("ROUNDS", 12))):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(rng.uniform(0.3, 1.2) * whole)    # start-up, observe, apply and what follows
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
        if leftovers(project_name):
            state = project.plan()
            assert not state.plan, f"round {round_no}: a mix ({stderr.strip()}): {state.plan.counts()}"
            outcomes["new"] += 1
            project.down()
        else:
            outcomes["old"] += 1
        if "interrupted" in stderr:   # never a death by SIGINT (-2), which a shell would show as 130 too
            assert child.returncode == 130, (round_no, child.returncode, stderr)
            if "rolled back" not in stderr:
                assert "the host is as it was before" not in stderr, stderr
    assert outcomes["old"], outcomes   # (how many finished first depends on the machine's load)


NETWORKS = {"n1": "10.177.0.0/24", "n2": "10.178.0.0/24"}


class HostMachine(RuleBasedStateMachine):
    """The file is a set of containers on n1/n2; the host carries decoys named like ours."""

    def __init__(self) -> None:
        super().__init__()
        self.project = "t" + secrets.token_hex(3)[:5]
        self.folder = Path(f"/tmp/{self.project}")
        self.folder.mkdir()
        self.containers: dict[str, list[str]] = {}
        self.given: dict[tuple[str, str], str] = {}    # (container, network) → address it was given
        self.applied_file = ""       # the file as the last up that finished left it
        self.drifted = False         # hand-made drift since that up
        self.next_name = 0
        self.blocks = Blocks()
        self.networks = {name: self.blocks(subnet) for name, subnet in NETWORKS.items()}

    # ---- the file ------------------------------------------------------------------
    def write(self) -> Path:
        lines = ["networks:"] + [f"  {n}: {{subnet: {s}}}" for n, s in self.networks.items()]
        lines += ["containers:"] + [f"  {c}: {{networks: [{', '.join(nets)}]}}" for c, nets in self.containers.items()]
        if not self.containers:
            lines[-1] = "containers: {}"
        path = self.folder / "topo.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def cli(self, verb: str) -> list[str]:
        return [sys.executable, "-m", "netcompose", verb, "-f", str(self.write()), "-p", self.project]

    @initialize()
    def make_decoys(self) -> None:
        """Foreign objects whose names look like ours: a namespace, a host veth, a file."""
        p = self.project
        namespaces.create(f"{p}-zz")
        sh("ip", "link", "add", f"{p}-decoy", "type", "veth", "peer", "name", f"{p}-decoyp")
        Path(f"/etc/netns/{p}-zz").mkdir()
        Path(f"/etc/netns/{p}-zz/hosts").write_text("10.9.9.9 someone\n")
        self.decoys = self.snapshot_decoys()
        self.containers = {"a": ["n1"], "b": ["n1", "n2"]}

    def snapshot_decoys(self) -> tuple:
        p = self.project
        return (sh("ip", "-d", "addr", ns=f"{p}-zz"), sh("ip", "-d", "link", "show", f"{p}-decoy"),
                Path(f"/etc/netns/{p}-zz/hosts").read_text())

    @rule(networks=st.sampled_from([["n1"], ["n2"], ["n1", "n2"], ["n2", "n1"]]), first=st.booleans())
    def add_container(self, networks: list[str], first: bool) -> None:
        name = f"x{self.next_name}"
        self.next_name += 1
        added = {name: networks}
        self.containers = {**added, **self.containers} if first else {**self.containers, **added}

    @rule(data=st.data())
    def remove_container(self, data) -> None:
        if self.containers:
            del self.containers[data.draw(st.sampled_from(sorted(self.containers)))]

    # ---- hand-made drift ------------------------------------------------------------
    def running(self) -> list[str]:
        return [c for c in self.containers if f"{self.project}-{c}" in namespaces.list_named()]

    @rule(data=st.data(), how=st.sampled_from(["delete veth", "move address", "flush address"]))
    def drift(self, data, how: str) -> None:
        running = self.running()
        if not running:
            return
        container = data.draw(st.sampled_from(running))
        ns = f"{self.project}-{container}"
        if "eth0" not in sh("ip", "-o", "link", ns=ns):
            return
        self.drifted = True
        if how == "delete veth":
            sh("ip", "link", "del", "eth0", ns=ns)
        else:
            sh("ip", "addr", "flush", "dev", "eth0", ns=ns)
            if how == "move address":
                subnet = self.networks[self.containers[container][0]]
                sh("ip", "addr", "add", f"{subnet[:-4]}250/24", "dev", "eth0", ns=ns)

    # ---- runs ----------------------------------------------------------------------
    @rule(verb=st.sampled_from(["up", "down"]), delay=st.floats(0.2, 0.8))
    def kill_9(self, verb: str, delay: float) -> None:
        child = subprocess.Popen(self.cli(verb), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()

    @rule()
    def up(self) -> None:
        result = subprocess.run(self.cli("up"), capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        if self.drifted and self.write().read_text() != self.applied_file:
            # An edited file's up observes only where the edit lands (README: Edits cost
            # O(change)); drift elsewhere is repaired by the next up, which must converge.
            result = subprocess.run(self.cli("up"), capture_output=True, text=True, cwd=REPO)
            assert result.returncode == 0, result.stderr
        self.applied_file, self.drifted = self.write().read_text(), False
        project = Project.load(self.write(), project=self.project)
        assert not project.plan().plan
        rows = project.ps()
        assert all(row["state"] == "up" for row in rows)
        for row in rows:
            where = (row["container"], row["network"])
            assert self.given.setdefault(where, row["ipv4"]) == row["ipv4"], f"{where} moved"
        kept = {(c, n) for c, nets in self.containers.items() for n in nets}
        self.given = {k: v for k, v in self.given.items() if k in kept}

    @rule()
    def down(self) -> None:
        result = subprocess.run(self.cli("down"), capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        p = self.project
        assert sorted(leftovers(p)) == sorted([f"{p}-zz", f"{p}-decoy@{p}-decoyp", f"{p}-decoyp@{p}-decoy",
                                               f"/etc/netns/{p}-zz"])
        self.given = {}

    @invariant()
    def decoys_untouched(self) -> None:
        if hasattr(self, "decoys"):
            assert self.snapshot_decoys() == self.decoys

    def teardown(self) -> None:
        subprocess.run(self.cli("down"), capture_output=True, cwd=REPO)
        remove_by_prefix(self.project)
        for path in sorted(self.folder.glob("*")):
            path.unlink()
        self.folder.rmdir()
        self.blocks.release()


TestHostMachine = HostMachine.TestCase
TestHostMachine.settings = settings(max_examples=int(os.environ.get("EXAMPLES", 4)), stateful_step_count=10, deadline=None,
                                    suppress_health_check=list(HealthCheck))
