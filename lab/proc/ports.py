"""Free loopback ports for the processes of one real run.

Every process of a run (Kamailio, the SIPp agent, each pjsua2 UAC) binds its own
UDP port on 127.0.0.1. Several runs may share the machine (parallel tests), so a
preferred port is used only when it is free; otherwise the kernel picks one
(binding port 0 returns a port from the ephemeral range that no socket holds).
"""

from __future__ import annotations

import socket


def udp_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound for UDP right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(preferred: int | None = None, host: str = "127.0.0.1",
                  avoid: set[int] | None = None) -> int:
    """A UDP port on ``host`` that is free now: ``preferred`` if possible.

    Parameters
    ----------
    preferred
        The port to use when it is free (e.g. 5060, the RFC 3261 default).
    avoid
        Ports already handed to other processes of the same run.
    """
    avoid = avoid or set()
    if preferred and preferred not in avoid and udp_port_free(preferred, host):
        return preferred
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid and udp_port_free(port + 1, host):
            return port
    raise OSError("no free UDP port on the loopback")
