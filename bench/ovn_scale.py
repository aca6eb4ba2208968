"""OVN across hosts at scale: H simulated hosts × N containers each (default 3 × 100), on the
OVN lab of bench/ovn_lab.py.  Every host runs its own `netcompose up` at the same time, as
real hosts would; timed: from that start until every host's `up` has returned (each waits
for its logical ports to come up), until the Northbound DB shows every port up, and until a
`check --all-hosts` (probes from every host, merged) has passed; then a no-op `up` on every
host and the `down`s.

    python3 -m bench.ovn_scale [--hosts 3] [--containers 100] [--networks 2] [--one-at-a-time]

Each container sits on one of the OVN networks (round robin); the networks are joined by
the project's logical router and a policy lets them talk, so `check` probes switched and
routed pairs across hosts.  Whole processes throughout (`python3 -m netcompose`).
"""
from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.ovn_lab import REPO, OvnLab, wait_for


def topology(hosts: list[str], containers: int, networks: int) -> str:
    lines = ["hosts: {" + ", ".join(f"{h}: {{}}" for h in hosts) + "}", "networks:"]
    nets = [f"n{i}" for i in range(networks)]
    lines += [f"  {net}: {{driver: ovn, subnet: 10.{60 + i}.0.0/20}}" for i, net in enumerate(nets)]
    lines.append("containers:")
    for h in hosts:
        for i in range(containers):
            lines.append(f"  {h}c{i}: {{host: {h}, networks: [{nets[i % networks]}]}}")
    lines.append("policies:")
    lines += [f"  - {{from: {a}, to: {b}}}" for a in nets for b in nets if a != b] or ["  []"]
    return "\n".join(lines) + "\n"


def on_every_host(lab: OvnLab, *args: str, one_at_a_time: bool = False) -> tuple[float, dict[str, float]]:
    """`netcompose ARGS` on every host at once (or one after the other): the wall time until
    the last one returned, and when each one did."""
    started = time.perf_counter()

    def run(host) -> float:
        result = host.netcompose(*args, timeout=900)
        if result.returncode:
            raise RuntimeError(f"{host.name}: netcompose {' '.join(args)}: {result.stderr.strip()}")
        return time.perf_counter() - started
    with ThreadPoolExecutor(1 if one_at_a_time else len(lab.hosts)) as pool:
        each = dict(zip(lab.hosts, pool.map(run, lab.hosts.values())))
    return time.perf_counter() - started, each


def ports_up(lab: OvnLab, project: str) -> tuple[int, int]:
    """(up, all) of the project's logical ports of containers."""
    rows = lab.nbctl("--bare", "--columns=up,external_ids", "find", "Logical_Switch_Port",
                     f"external_ids:netcompose-project={project}").split("\n\n")
    endpoints = [row for row in rows if "netcompose-container=" in row]
    return sum(row.split()[0] == "true" for row in endpoints), len(endpoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--containers", type=int, default=100, help="per host")
    parser.add_argument("--networks", type=int, default=2)
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="the hosts' first `up` one after the other instead of all at once")
    args = parser.parse_args()
    project = "bo" + secrets.token_hex(2)
    started = time.perf_counter()
    with OvnLab(hosts=args.hosts) as lab, tempfile.TemporaryDirectory(prefix=f"{project}-") as folder:
        lab_seconds = time.perf_counter() - started
        path = Path(folder) / "topo.yaml"
        path.write_text(topology(list(lab.hosts), args.containers, args.networks))
        common = ("-f", str(path), "-p", project)
        total = args.hosts * args.containers
        results: list[tuple[str, str]] = []
        try:
            begun = time.perf_counter()
            up_wall, up_each = on_every_host(lab, "up", *common, one_at_a_time=args.one_at_a_time)
            wait_for("every logical port up", lambda: ports_up(lab, project) == (total, total), timeout=300)
            all_up = time.perf_counter() - begun
            # Hosts writing the same logical state at once must not make it twice.
            switches = lab.nbctl("--bare", "--columns=name", "find", "Logical_Switch",
                                 f"external_ids:netcompose-project={project}").split()
            if sorted(switches) != sorted(set(switches)) or len(switches) != args.networks:
                raise RuntimeError(f"logical switches after concurrent ups: {switches}")
            check = subprocess.run([sys.executable, "-m", "netcompose", "check", *common, "--all-hosts", "--via",
                                    f"{lab.on_host} {{host}} {sys.executable} -m netcompose"],
                                   capture_output=True, text=True, cwd=REPO, timeout=900)
            checked = time.perf_counter() - begun
            if check.returncode:
                raise RuntimeError(f"check --all-hosts failed:\n{check.stdout[-3000:]}{check.stderr[-2000:]}")
            summary = check.stdout.strip().splitlines()[-1]
            noop_wall, _ = on_every_host(lab, "up", *common)
            transactions = lab.nb_transactions()
            on_every_host(lab, "up", *common)
            noop_transactions = lab.nb_transactions() - transactions
            down_started = time.perf_counter()
            for host in lab.hosts.values():   # the last one takes the logical state along
                result = host.netcompose("down", *common, timeout=900)
                if result.returncode:
                    raise RuntimeError(f"{host.name}: down: {result.stderr.strip()}")
            down_seconds = time.perf_counter() - down_started
        except BaseException:
            for host in lab.hosts.values():
                host.netcompose("down", *common, "--all-hosts", timeout=900)
            raise
        results += [
            ("lab start (central, northd, hosts with OVS and ovn-controller)", f"{lab_seconds:.1f} s"),
            (f"`up` on {args.hosts} hosts {'one after the other' if args.one_at_a_time else 'at once'}, {total} "
             "containers (each waits for its ports up; when each returned)",
             f"{up_wall:.1f} s (" + ", ".join(f"{h} {s:.1f} s" for h, s in up_each.items()) + ")"),
            (f"every logical port up in the Northbound DB ({total}/{total})", f"{all_up:.1f} s after the start"),
            ("`check --all-hosts` passing", f"{checked:.1f} s after the start ({checked - all_up:.1f} s of check; "
             f"{summary})"),
            ("no-op `up` on every host at once", f"{noop_wall:.1f} s, {noop_transactions} Northbound transactions"),
            ("`down` host after host (the last removes the logical state)", f"{down_seconds:.1f} s"),
        ]
    width = max(len(step) for step, _ in results)
    print(f"OVN across hosts: {args.hosts} hosts × {args.containers} containers on {args.networks} networks")
    for step, value in results:
        print(f"  {step.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
