"""Start-up: whole processes of `netcompose --version` and of a no-op `plan` of the
three-tier example, beside the interpreter doing nothing; medians of --runs each, taken in
turns.  Builds the example under a throwaway project name and removes it afterwards.

    python3 -m bench.startup [--runs 15]
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREE_TIER = ROOT / "topologies" / "three-tier.yaml"


def wall(argv: list[str]) -> tuple[float, float]:
    """(wall seconds from start to exit, user + system seconds) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def measure(runs: int) -> dict[str, tuple[float, float]]:
    project = "bs" + secrets.token_hex(2)
    cli = [sys.executable, "-m", "netcompose", "-f", str(THREE_TIER), "-p", project]
    commands = {"python3 -c pass": [sys.executable, "-c", "pass"],
                "netcompose --version": [sys.executable, "-m", "netcompose", "--version"],
                "no-op plan (three-tier)": [*cli, "plan"]}
    subprocess.run([*cli, "up"], check=True, capture_output=True, cwd=ROOT)
    try:
        for argv in commands.values():   # warm: bytecode compiled, the validated file remembered
            wall(argv)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(wall(argv))
    finally:
        subprocess.run([*cli, "down"], check=True, capture_output=True, cwd=ROOT)
        shutil.rmtree(f"/run/netcompose/{project}", ignore_errors=True)
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def table(results: dict[str, tuple[float, float]]) -> str:
    targets = {"netcompose --version": 0.060, "no-op plan (three-tier)": 0.120}
    rows = ["| process | wall (median) | CPU user+sys (median) | target |", "|---|---|---|---|"]
    for name, (seconds, cpu) in results.items():
        goal = targets.get(name)
        met = f"≤ {goal * 1000:.0f} ms: {'yes' if seconds <= goal else 'no'}" if goal else "-"
        rows.append(f"| {name} | {seconds * 1000:.0f} ms | {cpu * 1000:.0f} ms | {met} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"interpreter {sys.executable}; medians of {args.runs}\n")
    print(table(measure(args.runs)), flush=True)


if __name__ == "__main__":
    main()
