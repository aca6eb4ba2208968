"""Sandboxes with a declared process against plain sandboxes: `up` and `down` of N containers
on one bridge, each running `sleep infinity` (and its log writer), or nothing.

    python3 -m bench.processes [--count 100] [--runs 3]

Runs alternate (plain, with processes, plain, ...) and the medians are compared; every
`up` and `down` is timed in this process through the Python API, as `bench/nc_step.py` does.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from netcompose import Project

PROJECT = "bprocs"


def topology(count: int, processes: bool) -> str:
    lines = [f"name: {PROJECT}", "networks:", "  lan: {subnet: 10.230.0.0/16}", "containers:"]
    for i in range(count):
        lines.append(f"  c{i}:")
        lines.append("    networks: [lan]")
        if processes:
            lines.append("    command: [sleep, infinity]")
    return "\n".join(lines) + "\n"


def one_run(folder: Path, count: int, processes: bool) -> tuple[float, float]:
    path = folder / f"{'procs' if processes else 'plain'}.yaml"
    path.write_text(topology(count, processes))
    project = Project.load(path)
    started = time.monotonic()
    project.up()
    up = time.monotonic() - started
    started = time.monotonic()
    project.down()
    return up, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            for processes in (False, True):
                results[processes].append(one_run(Path(tmp), args.count, processes))
    print(f"| step (N = {args.count}) | plain sandboxes | with a process each | ratio |")
    print("|---|---|---|---|")
    for i, step in enumerate(("up", "down")):
        plain = statistics.median(r[i] for r in results[False])
        busy = statistics.median(r[i] for r in results[True])
        print(f"| {step} | {plain:.3f} s | {busy:.3f} s | {busy / plain:.2f}× |")


if __name__ == "__main__":
    main()
