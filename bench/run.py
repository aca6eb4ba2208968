"""Build and tear down the same topology with netcompose, the kernel floor and Mininet, in
one run, and print one table per (N, bridges): medians and ratios.  Builds and teardowns:
--runs per tool, taking turns.  Reads and one-container edits: --repeats per netcompose
build, each read beside a floor read of that same lab.

    python3 -m bench.run                      # N = 10, 100, 1000; 1 and 10 bridges; 3 runs
    python3 -m bench.run --sizes 20 --bridges 2 --runs 1 --no-mininet   # the CI smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MININET_PYTHON = "/usr/bin/python3"


def topology(n: int, bridges: int, extra: int = 0) -> str:
    lines = ["networks:"]
    lines += [f"  net{j}: {{subnet: 10.{100 + j}.0.0/16}}" for j in range(bridges)]
    lines.append("containers:")
    lines += [f"  c{i}: {{networks: [net{i % bridges}]}}" for i in range(n + extra)]
    return "\n".join(lines) + "\n"


def _cpu_busy(interval: float) -> float:
    """The fraction of all cores busy over `interval` seconds (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]   # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def quiesce(limit: float = 15.0) -> None:
    """Wait until the machine is idle: the kernel frees deleted namespaces in the background
    for seconds after a teardown, and that work would land on whichever step comes next."""
    deadline = time.monotonic() + limit
    while _cpu_busy(0.25) > 0.1 and time.monotonic() < deadline:
        pass


def child(args: list[str], python: str = sys.executable) -> dict:
    quiesce()
    result = subprocess.run([python, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def netcompose_run(n: int, bridges: int, folder: Path, repeats: int) -> dict:
    """Cold up and down once; the steps that leave the lab as it was (reads, and adding a
    container then removing it again) `repeats` times, each read beside a floor read of the
    same lab."""
    project = "bn" + secrets.token_hex(2)
    base, grown = folder / "base.yaml", folder / "grown.yaml"
    base.write_text(topology(n, bridges))
    grown.write_text(topology(n, bridges, extra=1))
    step, floor = str(HERE / "nc_step.py"), str(HERE / "floor.py")
    cold = child([step, "up", str(base), project])
    steps: dict[str, list[dict]] = {"floor read": [], "no-op up": [], "plan": [], "add one container": []}
    for _ in range(repeats):
        steps["floor read"].append(child([floor, "read", project, str(n), str(bridges)]))
        steps["no-op up"].append(child([step, "up", str(base), project]))
        steps["plan"].append(child([step, "plan", str(base), project]))
        steps["add one container"].append(child([step, "up", str(grown), project]))
        assert child([step, "up", str(base), project])["changes"] > 0   # and back
    down = child([step, "down", str(base), project])
    assert cold["changes"] > 0 and all(x["changes"] == 0 for x in steps["no-op up"] + steps["plan"])
    assert all(x["changes"] > 0 for x in steps["add one container"])
    shutil.rmtree(f"/run/netcompose/{project}", ignore_errors=True)
    result = {name: statistics.median(x["seconds"] for x in runs) for name, runs in steps.items()}
    everything = [cold, down] + [x for runs in steps.values() for x in runs if "rss_mb" in x]
    return {"cold up": cold["seconds"], **result, "down": down["seconds"],
            "peak RSS (MB)": max(x["rss_mb"] for x in everything)}


def floor_run(n: int, bridges: int) -> dict:
    prefix = "bf" + secrets.token_hex(2)
    step = str(HERE / "floor.py")
    build = child([step, "build", prefix, str(n), str(bridges)])
    teardown = child([step, "teardown", prefix, str(n), str(bridges)])
    return {"build": build["seconds"], "teardown": teardown["seconds"]}


def mininet_run(n: int, bridges: int) -> dict:
    return child([str(HERE / "mininet_run.py"), "bm" + secrets.token_hex(1), str(n), str(bridges)],
                 python=MININET_PYTHON)


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def table(n: int, bridges: int, nc: dict, floor: dict, mn: dict | None) -> str:
    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:.2f}×" if b else "n/a"
    floor_for = {"cold up": floor["build"], "no-op up": nc["floor read"], "plan": nc["floor read"],
                 "add one container": None, "down": floor["teardown"]}
    mn_for = {"cold up": mn and mn["build"], "down": mn and mn["teardown"]}
    rows = [f"### N = {n}, {bridges} bridge{'s' if bridges > 1 else ''}", "",
            "| step | netcompose | floor | Mininet | vs floor | Mininet / netcompose |", "|---|---|---|---|---|---|"]
    for step in ("cold up", "no-op up", "plan", "add one container", "down"):
        f, m = floor_for.get(step), mn_for.get(step)
        extra = f"{nc[step] / nc['cold up'] * 100:.1f}% of cold up" if step == "add one container" else ratio(nc[step], f)
        rows.append(f"| {step} | {nc[step]:.3f} s | {f'{f:.3f} s' if f else '-'} | {f'{m:.2f} s' if m else '-'} "
                    f"| {extra} | {ratio(m, nc[step]) if m else '-'} |")
    rows.append(f"| peak RSS | {nc['peak RSS (MB)']:.0f} MB | | | | |")
    per_mn = f"{mn['build'] / n * 1000:.2f} ms" if mn else "-"
    rows.append(f"| per container (cold up) | {nc['cold up'] / n * 1000:.2f} ms | {floor['build'] / n * 1000:.2f} ms "
                f"| {per_mn} | | |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--bridges", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=3, help="builds and teardowns per tool")
    parser.add_argument("--repeats", type=int, default=3, help="reads and one-container edits per build")
    parser.add_argument("--no-mininet", action="store_true")
    args = parser.parse_args()
    use_mininet = not args.no_mininet and os.path.exists(MININET_PYTHON) and \
        subprocess.run([MININET_PYTHON, "-c", "import mininet"], capture_output=True).returncode == 0
    print(f"{os.cpu_count()} cores; medians of {args.runs} runs\n", flush=True)
    for bridges in args.bridges:
        for n in args.sizes:
            # Interleaved, so that a noisy minute on a shared machine hits all three alike.
            runs = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as folder:
                    runs.append((netcompose_run(n, bridges, Path(folder), args.repeats), floor_run(n, bridges),
                                 mininet_run(n, bridges) if use_mininet else None))
            nc, floor = median([r[0] for r in runs]), median([r[1] for r in runs])
            mn = median([r[2] for r in runs]) if use_mininet else None
            print(table(n, bridges, nc, floor, mn), flush=True)


if __name__ == "__main__":
    main()
