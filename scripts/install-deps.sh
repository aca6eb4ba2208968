#!/usr/bin/env bash
# Installs what netcompose needs on a fresh Debian machine: the kernel tools
# (iproute2, nftables, Open vSwitch, ethtool, ping), setpriv (util-linux, for processes with
# `user:`), BIRD 2 (the routing daemon of topologies/ospf), Graphviz (`graph -T svg|html`), OVN
# (`driver: ovn` networks across hosts: ovn-central for the tests' central databases, ovn-host for
# ovn-controller) and the Python package.
# Debian would start the system Open vSwitch, OVN and BIRD daemons on install; netcompose and its
# tests never use them, so service start-up is suppressed for this install only.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables iptables openvswitch-switch openvswitch-common ethtool iputils-ping conntrack procps
          util-linux bird2 graphviz ovn-central ovn-host)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip python3-venv >/dev/null
fi
pip_flags=(-q --disable-pip-version-check)
# Debian's own python3 refuses system-wide pip installs (PEP 668); this machine is the lab host.
python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' \
  && pip_flags+=(--break-system-packages)
python3 -m pip install "${pip_flags[@]}" -e ".[test]"
