"""TX checksum offload through the legacy SIOCETHTOOL ioctl (no `ethtool` process)."""
from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM = 0x16, 0x17


def _call(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = array.array("I", [cmd, data])
    address, _ = value.buffer_info()
    request = struct.pack("16sP", ifname.encode(), address)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
    return value[1]


def tx_checksum(sock: socket.socket, ifname: str) -> bool:
    return bool(_call(sock, ifname, ETHTOOL_GTXCSUM))


def set_tx_checksum(sock: socket.socket, ifname: str, enabled: bool) -> None:
    _call(sock, ifname, ETHTOOL_STXCSUM, int(enabled))
