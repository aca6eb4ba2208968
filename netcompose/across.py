"""`check` and `ps` across the hosts of a multi-host file (`hosts:`).

Each host knows only its own slice (its sandboxes, its processes, its listeners), so the
command runs on every host, each with `--host` naming it, and the answers are merged here.
How a host is reached is the user's: `--via` (or $NETCOMPOSE_VIA) is a command with `{host}`
in it that runs netcompose there, e.g. `ssh {host} netcompose`; it is split like a shell
would (no shell runs it) and `{host}` replaced by each name of `hosts:`.  The file's path
(`-f`) and the other options are passed as given, so they must be valid on every host.

`check`: every host first opens the listeners of the TCP/UDP probes aimed at its
containers and says so; once all of them listen, each probes from its own containers and
reports; the listeners close once every host has reported.  Each host is one process
speaking JSON lines on stdout (`{"listening": true}`, then the probes); its stdin carries
"go" and, when closed, the end.  All hosts draw the same sample of pairs (one seed).
"""
from __future__ import annotations

import json
import random
import shlex
import subprocess
import threading
import time
from collections.abc import Callable

from .errors import NetcomposeError, SpecError

TIMEOUT = 600.0      # seconds for the slowest host's part of one command


class HostFailed(NetcomposeError):
    pass


def host_command(via: str, host: str) -> list[str]:
    """The argv that runs netcompose on `host`."""
    try:
        words = shlex.split(via)
    except ValueError as exc:
        raise SpecError(None, f"--via {via!r}: {exc}", "quote it as a shell would") from None
    if not any("{host}" in word for word in words):
        raise SpecError(None, f"--via {via!r} does not say where the host's name goes",
                        "put {host} in it, e.g. --via 'ssh {host} netcompose'")
    return [word.replace("{host}", host) for word in words]


def hosts_of(spec) -> list[str]:
    hosts = spec.topology.hosts
    if not hosts:
        raise SpecError(None, f"--all-hosts: {spec.path} declares no hosts:",
                        "drop --all-hosts (everything runs on this host)")
    return list(hosts)


class _Peer:
    """netcompose running on one host, spoken to by JSON lines."""

    def __init__(self, host: str, argv: list[str]) -> None:
        self.host = host
        self.argv = argv
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        try:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise HostFailed(f"host {self.host}: cannot run {self.argv[0]}: {exc.strerror}") from None

    def expect(self, key: str) -> dict:
        line = self.process.stdout.readline()
        try:
            message = json.loads(line) if line else None
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or key not in message:
            raise self.failure()
        return message

    def failure(self, stderr: str | None = None) -> HostFailed:
        """What went wrong on the host, in its own last line."""
        if stderr is None:
            self.process.kill()
            self.process.wait()
            stderr = self.process.stderr.read()
        said = [line for line in stderr.splitlines() if line.strip()]
        return HostFailed(f"host {self.host}: {said[-1] if said else f'exit {self.process.returncode}'} "
                          f"(ran: {shlex.join(self.argv)})")

    def send(self, text: str) -> None:
        try:
            self.process.stdin.write(text)
            self.process.stdin.flush()
        except OSError:
            raise self.failure() from None

    def finish(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _on_every_host(peers: list[_Peer], talk: Callable[[_Peer], None], timeout: float) -> None:
    """Run talk(peer) for every host at once; the first failure (or the timeout) stops them
    all and is the one reported (the others' follow from it)."""
    failures: list[BaseException] = []

    def run(peer: _Peer) -> None:
        try:
            peer.start()
            talk(peer)
        except threading.BrokenBarrierError:
            pass   # another host failed: its error is the one reported
        except BaseException as exc:   # noqa: BLE001 - handed to the main thread
            failures.append(exc)
            for other in peers:
                other.kill()
    threads = [threading.Thread(target=run, args=(peer,), daemon=True) for peer in peers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        slow = [peer.host for peer, thread in zip(peers, threads) if thread.is_alive()]
    finally:
        for peer in peers:
            peer.kill()
        for thread in threads:
            thread.join(5)
    if slow:
        raise HostFailed(f"host {', '.join(slow)}: no answer within {timeout:.0f} s")
    if failures:
        raise failures[0]


def check(hosts: list[str], via: str, arguments: list[str], timeout: float = TIMEOUT):
    """The merged probes of `check` on every host (check.Probes); `arguments` are the
    per-host command's, before `--host`."""
    from .check import Probe, Probes
    seed = str(random.SystemRandom().randrange(2 ** 32))
    peers = [_Peer(host, host_command(via, host) + [*arguments, "--host", host, "--seed", seed, "--peer"])
             for host in hosts]
    listening, reported = threading.Barrier(len(peers)), threading.Barrier(len(peers))
    answers: dict[str, dict] = {}

    def talk(peer: _Peer) -> None:
        try:
            peer.expect("listening")
            listening.wait()
            peer.send("go\n")
            answers[peer.host] = peer.expect("probes")
            reported.wait()
            peer.finish()
        except BaseException:
            listening.abort()
            reported.abort()
            raise
    _on_every_host(peers, talk, timeout)
    fields = set(Probe.__dataclass_fields__)
    merged = [Probe(**{k: v for k, v in found.items() if k in fields})
              for host in hosts for found in answers[host]["probes"]]
    return Probes(merged, answers[hosts[0]]["classes"])


def ps(hosts: list[str], via: str, arguments: list[str], order: list[str], timeout: float = TIMEOUT) -> list[dict]:
    """`ps` rows of every host's own containers (state, process), in the file's order."""
    peers = [_Peer(host, host_command(via, host) + [*arguments, "--host", host, "--json"]) for host in hosts]
    rows: list[dict] = []

    def talk(peer: _Peer) -> None:
        out, err = peer.process.communicate()
        try:
            found = json.loads(out) if peer.process.returncode == 0 else None
        except json.JSONDecodeError:
            found = None
        if not isinstance(found, list):
            raise peer.failure(err)
        rows.extend(row for row in found if row.get("host") == peer.host)
    _on_every_host(peers, talk, timeout)
    index = {name: i for i, name in enumerate(order)}
    return sorted(rows, key=lambda row: index.get(row["container"], len(index)))
