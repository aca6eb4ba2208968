"""1000 OVS ports: one IDL transaction vs one chained `ovs-vsctl` vs 1000 `ovs-vsctl` calls,
against a private ovsdb-server/ovs-vswitchd (userspace datapath).

    python3 -m bench.ovs_scale [--ports 1000]
"""
from __future__ import annotations

import argparse
import subprocess
import secrets
import tempfile
import time
from pathlib import Path

from bench.private_ovs import PrivateOvs
from netcompose.drivers.ovsdb import OvsdbDriver
from netcompose.plan import Action
from netcompose import resources as r


def idl_ports(ovs: PrivateOvs, bridge: str, ports: list[str]) -> float:
    driver = OvsdbDriver(ovs.remote)
    actions = [Action("create", f"ovsbr:{bridge}", "ovs_bridge", r.ovs_bridge(bridge, "netdev", "standalone", "bench"),
                      None)]
    actions += [Action("create", f"ovsport:{p}", "ovs_port",
                       r.ovs_port(p, bridge, type="internal", tag=10, trunks=None, external_ids={}), None)
                for p in ports]
    started = time.perf_counter()
    outcome = driver.apply(actions)
    elapsed = time.perf_counter() - started
    driver.close()
    assert not outcome.errors, list(outcome.errors.values())[:3]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ovs = PrivateOvs(Path(folder))
        ovs.start()
        try:
            tag = secrets.token_hex(2)
            names = [f"bo{tag}-{i}" for i in range(args.ports)]
            results = {"IDL, one transaction": idl_ports(ovs, f"bo{tag}-a", [n + "a" for n in names])}
            chained = ["add-br", f"bo{tag}-b", "--", "set", "bridge", f"bo{tag}-b", "datapath_type=netdev"]
            for n in names:
                chained += ["--", "add-port", f"bo{tag}-b", n + "b", "tag=10", "--", "set", "interface", n + "b",
                            "type=internal"]
            started = time.perf_counter()
            ovs.vsctl(*chained)
            results["ovs-vsctl, one chained call"] = time.perf_counter() - started
            ovs.vsctl("add-br", f"bo{tag}-c", "--", "set", "bridge", f"bo{tag}-c", "datapath_type=netdev")
            started = time.perf_counter()
            # --no-wait: waiting for ovs-vswitchd after every call grows with the bridge
            # (70 s for 200 ports here), so this column is a lower bound.
            for n in names:
                ovs.vsctl("--no-wait", "add-port", f"bo{tag}-c", n + "c", "tag=10", "--", "set", "interface",
                          n + "c", "type=internal")
            results[f"ovs-vsctl, {args.ports} calls (--no-wait)"] = time.perf_counter() - started
        finally:
            for suffix in "abc":   # internal ports are devices: remove them before vswitchd goes
                subprocess.run(["ovs-vsctl", f"--db={ovs.remote}", "--if-exists", "del-br", f"bo{tag}-{suffix}"],
                               capture_output=True, env=ovs.env, timeout=300)
            ovs.stop()
    base = results["IDL, one transaction"]
    print(f"| {args.ports} OVS ports | seconds | vs IDL |\n|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {seconds / base:.1f}× |")


if __name__ == "__main__":
    main()
