"""Name patterns and address defaults of the file format, without pydantic (the loader and
resolver use them on every run; the models in model.py import them from here)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 48   # of a network or container name
IFNAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
# Names the kernel gives a meaning of its own: `lo` is the sandbox's loopback, `all` and
# `default` are sysctl folders (net.ipv4.conf.all), "." and ".." are refused by the kernel.
RESERVED_IFNAMES = frozenset({"lo", "all", "default", ".", ".."})
HOSTNAME_PATTERN = r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"

DEFAULT_IPV4_POOL = "10.128.0.0/9"   # address_pools without an IPv4 entry
DEFAULT_POOL_SIZE = {4: 24, 6: 64}   # prefix length of pool subnets, per family
