"""Mininet baseline (Debian's `mininet`, run with /usr/bin/python3): N hosts on B Linux
bridges, no controller.  Prints build and teardown seconds as JSON."""
import json
import sys
import time

from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.log import setLogLevel

prefix, n, bridges, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
setLogLevel("error")
started = time.perf_counter()
net = Mininet(switch=LinuxBridge, controller=None, autoSetMacs=False, build=False)
switches = [net.addSwitch(f"{prefix}s{j + 1}") for j in range(bridges)]
for i in range(n):
    host = net.addHost(f"{prefix}h{i + 1}", ip=f"10.{base + i % bridges}.{i // 250}.{i % 250 + 2}/16")
    net.addLink(host, switches[i % bridges])
net.build()
net.start()
built = time.perf_counter() - started
started = time.perf_counter()
net.stop()
print(json.dumps({"build": built, "teardown": time.perf_counter() - started}))
