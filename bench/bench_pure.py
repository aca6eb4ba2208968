"""compile and plan at 10,000+ resources (the pure core).  Not part of the pass/fail suite:

    python3 -m pytest bench/bench_pure.py --benchmark-enable
"""
from __future__ import annotations

from netcompose.compile import compile_resources
from netcompose.plan import make_plan
from netcompose.spec.loader import Document
from netcompose.spec.model import Topology
from netcompose.spec.resolve import resolve

from .run import topology
import yaml

N = 2000  # 2000 containers on 10 networks compile to about 12,000 resources


def _resolved():
    topo = Topology.model_validate(yaml.safe_load(topology(N, 10)))
    return resolve(topo, Document(None, "bench"), "bench")


def test_compile(benchmark):
    res = _resolved()
    resources = benchmark(compile_resources, res)
    assert len(resources) >= 10_000


def test_plan_cold_and_steady(benchmark):
    desired = compile_resources(_resolved())
    observed = {k: v.with_owner("bench") for k, v in desired.items()}

    def both():
        return make_plan(desired, {}, "bench"), make_plan(desired, observed, "bench")
    cold, steady = benchmark(both)
    assert len(cold.actions) == len(desired) and not steady
