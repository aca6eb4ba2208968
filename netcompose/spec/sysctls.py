"""Which `net.*` sysctls a sandbox may set.

Most of /proc/sys/net belongs to each network namespace, but some entries are global: a
child namespace does not see them at all (net.core.netdev_max_backlog, the route cache's
gc_*, tcp_mem, ...), or sees them read-only (net.core.rmem_max, nf_conntrack_max, ...).
Writing one from a sandbox fails in the kernel (or would change the whole host), so the
file is refused before anything is touched.  The list was probed on Linux 6.x by comparing
/proc/sys/net in the initial namespace with the writable entries of a fresh one; `*`
stands for a device (or `default`).
"""
from __future__ import annotations

import re

GLOBAL_ONLY = frozenset("""
core.bpf_jit_enable core.bpf_jit_harden core.bpf_jit_kallsyms core.bpf_jit_limit core.busy_poll core.busy_read
core.default_qdisc core.dev_weight core.dev_weight_rx_bias core.dev_weight_tx_bias core.devconf_inherit_init_net
core.fb_tunnels_only_for_init_net core.flow_limit_cpu_bitmap core.flow_limit_table_len core.gro_normal_batch
core.high_order_alloc_disable core.max_skb_frags core.mem_pcpu_rsv core.message_burst core.message_cost
core.netdev_budget core.netdev_budget_usecs core.netdev_max_backlog core.netdev_rss_key core.netdev_tstamp_prequeue
core.netdev_unregister_timeout_secs core.rps_sock_flow_entries core.skb_defer_max core.warnings
core.rmem_default core.rmem_max core.wmem_default core.wmem_max
ipv4.cipso_cache_bucket_size ipv4.cipso_cache_enable ipv4.cipso_rbm_optfmt ipv4.cipso_rbm_strictvalid
ipv4.fib_sync_mem ipv4.inet_peer_maxttl ipv4.inet_peer_minttl ipv4.inet_peer_threshold ipv4.ipfrag_secret_interval
ipv4.neigh.*.gc_interval ipv4.neigh.*.gc_thresh1 ipv4.neigh.*.gc_thresh2 ipv4.neigh.*.gc_thresh3
ipv4.route.error_burst ipv4.route.error_cost ipv4.route.gc_elasticity ipv4.route.gc_interval
ipv4.route.gc_min_interval ipv4.route.gc_min_interval_ms ipv4.route.gc_thresh ipv4.route.gc_timeout
ipv4.route.max_size ipv4.route.redirect_load ipv4.route.redirect_number ipv4.route.redirect_silence
ipv4.tcp_available_ulp ipv4.tcp_low_latency ipv4.tcp_max_orphans ipv4.tcp_mem ipv4.udp_mem
ipv4.conf.*.mc_forwarding ipv4.tcp_allowed_congestion_control ipv4.tcp_available_congestion_control
ipv4.tcp_ehash_entries ipv4.udp_hash_entries
ipv6.calipso_cache_bucket_size ipv6.calipso_cache_enable ipv6.ip6frag_secret_interval ipv6.mld_max_msf
ipv6.mld_qrv ipv6.neigh.*.gc_interval ipv6.neigh.*.gc_thresh1 ipv6.neigh.*.gc_thresh2 ipv6.neigh.*.gc_thresh3
mptcp.available_path_managers mptcp.available_schedulers
netfilter.nf_log_all_netns netfilter.nf_conntrack_buckets netfilter.nf_conntrack_count
netfilter.nf_conntrack_expect_max netfilter.nf_conntrack_max nf_conntrack_max
""".split())

NAME = re.compile(r"net\.[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+")
_PER_DEVICE = re.compile(r"(ipv4|ipv6)\.(conf|neigh)\.([^.]+)\.(.+)")


def device_of(name: str) -> str | None:
    """The device a per-device sysctl (net.ipv4.conf.DEV.x, net.ipv6.neigh.DEV.x) is about."""
    match = _PER_DEVICE.fullmatch(name.removeprefix("net."))
    return match.group(3) if match else None


def problem(name: str) -> str | None:
    """Why a sandbox cannot set sysctl `name`, or None."""
    if not NAME.fullmatch(name):
        return "is not a network sysctl (net.*)"
    rest = name.removeprefix("net.")
    match = _PER_DEVICE.fullmatch(rest)
    generic = f"{match.group(1)}.{match.group(2)}.*.{match.group(4)}" if match else rest
    if generic in GLOBAL_ONLY:
        return "is global to the host (not per network namespace), so a sandbox cannot set it"
    return None
