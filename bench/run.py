"""Build and tear down the same topology with netcompose, the kernel floor and Mininet, in
one run, and print one table per (N, bridges): medians, ratios and the targets.

Every netcompose step is timed as users run it: a whole `python3 -m netcompose ...`
process, wall time from start to exit (interpreter start-up and imports included) and its
peak RSS; beside it the floor's whole process.  The same steps timed inside an already
started interpreter (`bench/nc_step.py`, the floor's own clock) are a second column.

Builds and teardowns: --runs per tool, taking turns.  Reads (no-op `up`, `plan`, `ps`,
`config`) and one-container edits: --repeats per netcompose build, each read beside a
floor read of that same lab; `check` once per build.

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

from bench import startup

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MININET_PYTHON = "/usr/bin/python3"
# What the issue asks of each step at N = 1000: (the step or floor it is compared to, at most).
TARGETS = {"cold up": ("floor build", 1.5), "no-op up": ("floor read", 1.5), "plan": ("floor read", 1.5),
           "add one container": ("cold up", 0.08), "down": ("floor teardown", 1.5),
           "ps": ("plan", 1.0), "config": ("plan", 1.0), "check": (None, 30.0)}


def free_base(bridges: int) -> int:
    """The first second octet b such that 10.b.0.0/16 ... 10.(b+bridges-1).0.0/16 overlap no
    route of the host: labs left by other runs must not share the bench's subnets."""
    from ipaddress import IPv4Network

    from netcompose.drivers import rtnl
    sock = rtnl.RtnlSocket()
    try:
        routes = [IPv4Network(r.dst) for r in sock.routes() if ":" not in r.dst and not r.dst.endswith("/0")]
    finally:
        sock.close()
    for base in range(100, 256 - bridges):
        wanted = [IPv4Network(f"10.{base + j}.0.0/16") for j in range(bridges)]
        if not any(w.overlaps(r) for w in wanted for r in routes):
            return base
    raise SystemExit(f"no {bridges} free /16 subnets in 10.100.0.0-10.255.255.255")


def topology(n: int, bridges: int, base: int = 100, added: str | None = None) -> str:
    lines = ["networks:"]
    lines += [f"  net{j}: {{subnet: 10.{base + j}.0.0/16}}" for j in range(bridges)]
    lines.append("containers:")
    lines += [f"  c{i}: {{networks: [net{i % bridges}]}}" for i in range(n)]
    if added:
        lines.append(f"  {added}: {{networks: [net{n % bridges}]}}")
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


SETTLE = {"limit": 15.0}   # --settle


def quiesce() -> None:
    """Wait until the machine is idle: the kernel frees deleted namespaces in the background
    for seconds after a teardown, and that work would land on whichever step comes next."""
    deadline = time.monotonic() + SETTLE["limit"]
    while _cpu_busy(0.25) > 0.1 and time.monotonic() < deadline:
        pass


def process(args: list[str], python: str = sys.executable, ok: tuple[int, ...] = (0,)) -> dict:
    """One whole process: `wall` seconds from its start to its exit, its own peak RSS
    (wait4's rusage of that child), and what it printed (standard output goes to a file, as
    a redirect would)."""
    quiesce()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([python, *args], stdout=out, stderr=err, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            err.seek(0)
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{err.read()[-2000:]}")
        out.seek(0)
        return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
                "output": out.read()}


def reported(args: list[str], python: str = sys.executable) -> dict:
    """A child that prints its own figures as a JSON last line, plus its whole-process wall and RSS."""
    run = process(args, python)
    return {**json.loads(run["output"].strip().splitlines()[-1]), "wall": run["wall"], "cpu": run["cpu"],
            "rss_mb": run["rss_mb"]}


def cli(step: str, path: Path, project: str, *extra: str, ok: tuple[int, ...] = (0,)) -> dict:
    return process(["-m", "netcompose", step, "-f", str(path), "-p", project, *extra], ok=ok)


def netcompose_run(n: int, bridges: int, folder: Path, repeats: int) -> dict:
    """Two builds of the same lab: one by CLI processes, one by the Python API in a fresh
    process per step.  Reads and the one-container edit (then back) `repeats` times each
    way, each read beside the floor's read of the same lab."""
    base, grown = folder / "base.yaml", folder / "grown.yaml"
    octet = free_base(bridges)
    base.write_text(topology(n, bridges, base=octet))
    edits = iter(range(2 * repeats))

    def edited() -> str:
        """A file never seen before, as after a real edit (a run remembers validated files)."""
        grown.write_text(topology(n, bridges, base=octet, added=f"added{next(edits)}"))
        return grown

    step, floor = str(HERE / "nc_step.py"), str(HERE / "floor.py")
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}      # user + system seconds of the same processes
    inside: dict[str, list[float]] = {}
    rss: list[float] = []
    mismatches: list[int] = []

    def keep(table: dict[str, list[float]], name: str, run: dict, field: str = "wall") -> dict:
        table.setdefault(name, []).append(run[field])
        if table is wall:
            cpu.setdefault(name, []).append(run["cpu"])
        rss.append(run["rss_mb"])
        return run

    project = "bn" + secrets.token_hex(2)
    assert " created" in keep(wall, "cold up", cli("up", base, project))["output"]
    for _ in range(repeats):
        read = reported([floor, "read", project, str(n), str(bridges)])
        wall.setdefault("floor read", []).append(read["wall"])
        cpu.setdefault("floor read", []).append(read["cpu"])
        inside.setdefault("floor read", []).append(read["seconds"])
        assert "nothing to do" in keep(wall, "no-op up", cli("up", base, project))["output"]
        assert "No changes" in keep(wall, "plan", cli("plan", base, project))["output"]
        keep(wall, "ps", cli("ps", base, project))
        keep(wall, "config", cli("config", base, project))
        assert " created" in keep(wall, "add one container", cli("up", edited(), project))["output"]
        cli("up", base, project)   # and back, untimed (the kernel then frees a namespace for a while)
    # A mismatch (exit 1) is the lab's, not the bench's: counted, the run goes on.
    checked = keep(wall, "check", cli("check", base, project, ok=(0, 1)))["output"]
    assert " probes as expected" in checked, checked[-500:]
    mismatches.append(checked.count("\nFAIL "))
    assert " deleted" in keep(wall, "down", cli("down", base, project))["output"]
    shutil.rmtree(f"/run/netcompose/{project}", ignore_errors=True)

    project = "bn" + secrets.token_hex(2)
    assert keep(inside, "cold up", reported([step, "up", str(base), project]), "seconds")["changes"] > 0
    for _ in range(repeats):
        for name, args, changes in (("no-op up", ["up", str(base)], False), ("plan", ["plan", str(base)], False),
                                    ("add one container", ["up", str(edited())], True)):
            assert bool(keep(inside, name, reported([step, *args, project]), "seconds")["changes"]) == changes, name
        assert reported([step, "up", str(base), project])["changes"] > 0   # and back
    keep(inside, "down", reported([step, "down", str(base), project]), "seconds")
    shutil.rmtree(f"/run/netcompose/{project}", ignore_errors=True)
    return {"wall": {k: statistics.median(v) for k, v in wall.items()},
            "cpu": {k: statistics.median(v) for k, v in cpu.items()},
            "inside": {k: statistics.median(v) for k, v in inside.items()},
            "peak RSS (MB)": max(rss), "check mismatches": max(mismatches)}


def floor_run(n: int, bridges: int) -> dict:
    prefix = "bf" + secrets.token_hex(2)
    step = str(HERE / "floor.py")
    build = reported([step, "build", prefix, str(n), str(bridges), str(free_base(bridges))])
    teardown = reported([step, "teardown", prefix, str(n), str(bridges)])
    return {"wall": {"floor build": build["wall"], "floor teardown": teardown["wall"]},
            "cpu": {"floor build": build["cpu"], "floor teardown": teardown["cpu"]},
            "inside": {"floor build": build["seconds"], "floor teardown": teardown["seconds"]}}


def mininet_run(n: int, bridges: int) -> dict:
    """Mininet builds and tears down in one process: its own clock for each."""
    return reported([str(HERE / "mininet_run.py"), "bm" + secrets.token_hex(1), str(n), str(bridges),
                     str(free_base(bridges))], python=MININET_PYTHON)


def merged_medians(runs: list[dict], part: str) -> dict:
    keys = runs[0][part]
    return {k: statistics.median(r[part][k] for r in runs) for k in keys}


def table(n: int, bridges: int, wall: dict, cpu: dict, inside: dict, rss: float, mismatches: int,
          mn: dict | None) -> str:
    """Whole processes first (what users wait for; their CPU time, steadier on a shared
    machine), then the in-process figures."""
    compare = {"cold up": "floor build", "no-op up": "floor read", "plan": "floor read", "down": "floor teardown"}

    def seconds(value: float | None) -> str:
        return f"{value:.3f} s" if value is not None else "-"

    def versus(step: str, figures: dict) -> str:
        base = compare.get(step)
        if step == "add one container":
            return f"{figures[step] / figures['cold up'] * 100:.1f}% of cold up"
        if step in ("ps", "config"):
            return f"{figures[step] / figures['plan']:.2f}× plan"
        return f"{figures[step] / figures[base]:.2f}×" if base in figures else "-"

    def target(step: str) -> str:
        against, limit = TARGETS[step]
        if against is None:
            met = wall[step] <= limit
            return f"≤ {limit:g} s: {'yes' if met else 'no'}"
        reference = wall[against]
        met = wall[step] <= limit * reference
        shown = f"{limit * 100:g}% of {against}" if limit < 1 else f"≤ {limit:g}× {against}"
        return f"{shown}: {'yes' if met else 'no'}"

    rows = [f"### N = {n}, {bridges} bridge{'s' if bridges > 1 else ''}", "",
            "| step | netcompose CLI | floor process | CLI vs floor | target (CLI) | CPU: CLI | floor | vs floor "
            "| in-process: netcompose | floor | vs floor | Mininet |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    mn_for = {"cold up": mn and mn["build"], "down": mn and mn["teardown"]}
    for step in ("cold up", "no-op up", "plan", "add one container", "down", "ps", "config", "check"):
        base = compare.get(step)
        rows.append(f"| {step} | {seconds(wall[step])} | {seconds(wall.get(base))} | {versus(step, wall)} "
                    f"| {target(step)} | {seconds(cpu[step])} | {seconds(cpu.get(base))} | {versus(step, cpu)} "
                    f"| {seconds(inside.get(step))} | {seconds(inside.get(base))} "
                    f"| {versus(step, inside) if step in inside else '-'} "
                    f"| {f'{mn_for[step]:.2f} s' if mn_for.get(step) else '-'} |")
    rows.append(f"| peak RSS (largest step) | {rss:.0f} MB | | | | | | | | | | |")
    if mismatches:
        rows.append(f"\n`check` found {mismatches} mismatched pairs in the lab (another lab on the host "
                    "with the same subnets?); its time stands.")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--bridges", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=3, help="builds and teardowns per tool")
    parser.add_argument("--repeats", type=int, default=3, help="reads and one-container edits per build")
    parser.add_argument("--no-mininet", action="store_true")
    parser.add_argument("--startup-runs", type=int, default=15, help="runs of each start-up process")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="at most this many seconds to wait for an idle machine before each step")
    args = parser.parse_args()
    SETTLE["limit"] = args.settle
    use_mininet = not args.no_mininet and os.path.exists(MININET_PYTHON) and \
        subprocess.run([MININET_PYTHON, "-c", "import mininet"], capture_output=True).returncode == 0
    # As an installed package is: compiled once, not on every start (PYTHONDONTWRITEBYTECODE may be set).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "netcompose"), str(HERE)], check=True)
    print(f"{os.cpu_count()} cores; builds: medians of {args.runs} runs; reads and edits: medians of "
          f"{args.runs * args.repeats}; interpreter {sys.executable}\n", flush=True)
    quiesce()
    print(f"### Start-up (medians of {args.startup_runs})\n\n{startup.table(startup.measure(args.startup_runs))}",
          flush=True)
    for bridges in args.bridges:
        for n in args.sizes:
            # Interleaved, so that a noisy minute on a shared machine hits all three alike.
            runs = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as folder:
                    runs.append((netcompose_run(n, bridges, Path(folder), args.repeats), floor_run(n, bridges),
                                 mininet_run(n, bridges) if use_mininet else None))
            nc, floor = [r[0] for r in runs], [r[1] for r in runs]
            wall = {**merged_medians(nc, "wall"), **merged_medians(floor, "wall")}
            cpu = {**merged_medians(nc, "cpu"), **merged_medians(floor, "cpu")}
            inside = {**merged_medians(nc, "inside"), **merged_medians(floor, "inside")}
            mn = {k: statistics.median(r[2][k] for r in runs) for k in ("build", "teardown")} if use_mininet else None
            print(table(n, bridges, wall, cpu, inside, max(r["peak RSS (MB)"] for r in nc),
                        max(r["check mismatches"] for r in nc), mn), flush=True)


if __name__ == "__main__":
    main()
