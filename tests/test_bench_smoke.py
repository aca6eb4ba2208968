"""A small run of the bench harness, for correctness only (no timing assertions)."""
from __future__ import annotations

import subprocess
import sys

from .conftest import REPO, needs_root


@needs_root
def test_bench_smoke_run():
    result = subprocess.run([sys.executable, "-m", "bench.run", "--sizes", "20", "--bridges", "2", "--runs", "1",
                             "--repeats", "1", "--settle", "0", "--startup-runs", "2", "--no-mininet"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "### N = 20, 2 bridges" in result.stdout and "| cold up |" in result.stdout
    assert "| netcompose --version |" in result.stdout and "| check |" in result.stdout


def test_bench_modules_do_not_need_pytest():
    blocked = "import sys; sys.modules['pytest'] = None; import bench.run, bench.ovs_scale, bench.ovn_lab, bench.ovn_scale"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
