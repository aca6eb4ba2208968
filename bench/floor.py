"""The kernel floor: the same topology with pre-built netlink messages, pipelined, one
socket per namespace (setns), no planner, no verification.  Run as a child of run.py."""
from __future__ import annotations

import json
import os
import sys
import time

from netcompose.drivers import namespaces, rtnl


def names(prefix: str, n: int, bridges: int):
    return ([f"{prefix}-n{i}" for i in range(n)], [f"{prefix}-b{j}" for j in range(bridges)],
            [f"{prefix}-v{i}" for i in range(n)])


def build(prefix: str, n: int, bridges: int, base: int = 100) -> None:
    nss, brs, veths = names(prefix, n, bridges)
    host = rtnl.RtnlSocket()
    host.execute([rtnl.new_link("bridge", rtnl.link_attrs(name=b)) for b in brs])
    index = {l.name: l.index for l in host.links()}
    fds, socks = [], []
    for ns in nss:
        namespaces.create(ns)
        fd = namespaces.open_fd(namespaces.netns_path(ns))
        with namespaces.entered(fd):
            socks.append(rtnl.RtnlSocket())
        fds.append(fd)
    # As netcompose does, each end comes up without IPv6 autoconfiguration, which on a shared
    # bridge would flood every port with every other port's DAD, RS and MLD.
    requests = []
    for i in range(n):
        requests += [rtnl.new_veth(rtnl.link_attrs(name=veths[i], master=index[brs[i % bridges]]),
                                   rtnl.link_attrs(name="eth0", netns_fd=fds[i]), up=False),
                     rtnl.no_ipv6_autoconf(veths[i]), rtnl.set_link(veths[i], up=True)]
    host.execute(requests)
    for i, sock in enumerate(socks):
        # A fresh namespace numbers lo 1 and the veth end 2.
        sock.execute([rtnl.set_link("lo", up=True), rtnl.no_ipv6_autoconf("eth0"), rtnl.set_link("eth0", up=True),
                      rtnl.new_addr(2, f"10.{base + i % bridges}.{i // 250}.{i % 250 + 2}", 16)])
        sock.close()
    for fd in fds:
        os.close(fd)
    host.close()


def read(prefix: str, n: int, bridges: int) -> None:
    """Every namespace named `<prefix>-*`: the floor's own lab, or netcompose's (its project
    name as the prefix), so that both read the very same kernel state."""
    nss = [ns for ns in namespaces.list_named() if ns.startswith(f"{prefix}-")]
    assert len(nss) >= n, f"expected {n} namespaces named {prefix}-*, found {len(nss)}"
    host = rtnl.RtnlSocket()
    host.links(), host.addrs(), host.routes()
    for ns in nss:
        fd = namespaces.open_fd(namespaces.netns_path(ns))
        with namespaces.entered(fd):
            sock = rtnl.RtnlSocket()
        os.close(fd)
        sock.links(), sock.addrs(), sock.routes()
        sock.close()
    host.close()


def teardown(prefix: str, n: int, bridges: int) -> None:
    nss, brs, veths = names(prefix, n, bridges)
    for ns in nss:
        namespaces.delete(ns)
    host = rtnl.RtnlSocket()
    host.execute([rtnl.del_link(b) for b in brs])
    while any(l.name.startswith(prefix) for l in host.links()):   # the kernel frees veths asynchronously
        time.sleep(0.01)
    host.close()


if __name__ == "__main__":
    step, prefix, n, bridges = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    started = time.perf_counter()
    {"build": build, "read": read, "teardown": teardown}[step](prefix, n, bridges, *map(int, sys.argv[5:]))
    print(json.dumps({"seconds": time.perf_counter() - started}))
