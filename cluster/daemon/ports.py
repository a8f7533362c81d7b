"""
Port numbers for local processes on 127.0.0.1: the demo's nodes, and the
real processes of tests and benchmarks (which import these from
L{cluster.testing}).
"""

from __future__ import annotations

import random
import socket

__all__ = ["ephemeral_port_floor", "free_loopback_port"]

_FREE_PORTS_FROM = 20000
# Every port handed out by this process: a pick is never repeated.
_handed_out: set[int] = set()
_port_choice = random.Random()


def ephemeral_port_floor() -> int:
    """
    The lowest port the kernel hands out for outgoing connections.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_loopback_port() -> int:
    """
    A port number free for both TCP and UDP on 127.0.0.1, for tests and
    benchmarks that start real processes (memberlist uses one number for
    both).

    It comes from below the kernel's ephemeral range and is never handed
    out twice by one process: a port from C{bind(0)} would be ephemeral,
    and between the check and the child's own bind an outgoing connection
    (a benchmark polling a hundred nodes makes many) or a second pick
    could take it.
    """
    ceiling = ephemeral_port_floor()
    if ceiling - _FREE_PORTS_FROM < 1000:
        ceiling = 65536  # an unusual range: any unprivileged port
    while True:
        port = _port_choice.randrange(_FREE_PORTS_FROM, ceiling)
        if port in _handed_out:
            continue
        tcp = socket.socket()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        _handed_out.add(port)
        return port
