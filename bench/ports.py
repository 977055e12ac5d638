"""A free port for a server started on this machine: the bench's baseline, the tests' servers."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A port nothing is bound to, drawn from below the kernel's ephemeral range (32768 and
    up on Linux). A port the kernel picks for a bind to port 0 comes from that range, and so
    does the local end of every client connection: between this check and the server's bind,
    one of the machine's connections could take it (a test's worker died so, "Address
    already in use", under the full suite)."""
    for _ in range(200):
        port = random.randrange(20_000, 32_768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767")
