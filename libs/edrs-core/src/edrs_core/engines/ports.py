"""Local TCP port helpers: find a free port, test one, or keep a preferred one when it is free."""

from __future__ import annotations

import socket

DEFAULT_HOST = "127.0.0.1"


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a port the OS reports free on ``host`` right now (it may be taken again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be within 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR lets us bind over TIME_WAIT leftovers, as the servers we start will.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None, host: str = DEFAULT_HOST) -> int:
    """Return ``preferred`` if it is free on ``host``, else any free port."""
    if preferred is not None and port_is_free(preferred, host):
        return preferred
    return free_port(host)
