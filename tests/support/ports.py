"""Ports for the tests' own servers, handed out in turn from a block per pytest-xdist worker.

``.ci/run`` spreads the suite over two worker processes. Ports that the kernel picks for
``bind(("127.0.0.1", 0))`` come from its ephemeral range, which every process draws on
(outgoing connections too), so a port that one test frees for a moment (a receiver or a
redis-server stopped, to be started again on the same port) could be handed to a server of
the other worker meanwhile; gRPC servers even share a port (``SO_REUSEPORT``) and split the
traffic. Here each worker takes ports one after the other from its own block of 2000 below
the ephemeral range (20000 and up: ``gw0`` 20000-21999, ``gw1`` 22000-23999...), skipping
any that cannot be bound right now, so no two workers, and no outgoing connection, ever get
the same port, and a worker comes back to a port only after going through its whole block.
"""

from __future__ import annotations

import itertools
import os
import socket

__all__ = ["free_port"]

BASE = 20000
BLOCK = 2000


def _block_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # unset: not under xdist
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return BASE + BLOCK * index


_turns = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now, from this worker's block."""
    start = _block_start()
    for _ in range(BLOCK):
        port = start + next(_turns) % BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a service of the machine, a connection in TIME_WAIT)
            return port
    raise RuntimeError(f"no free port in {start}-{start + BLOCK - 1}")
