"""Test helpers for the health tests: free ports (``ports``), an own redis-server, a TCP fault
proxy.

Named for the health work so they do not collide with other helpers' support modules.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator

import pytest

from otel_resilience_demo._servers import FaultProxy, RedisProcess
from tests.support.ports import free_port

__all__ = [
    "REQUIRED_TOOLS",
    "FaultProxy",
    "RedisServer",
    "free_port",
    "need_tool",
    "redis_server",
    "tools_required",
]


# Needed by any run of the README's test command, which needs a Redis anyway: never skipped.
REQUIRED_TOOLS = frozenset({"redis-server"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def tools_required() -> bool:
    """Whether every tool is required: ``CI`` (or ``OTEL_RESILIENCE_REQUIRE_TOOLS``) is set to
    anything but an empty or false-like value (``0``, ``false``, ``no``, ``off``)."""
    return any(
        os.environ.get(variable, "").strip().lower() not in _FALSE
        for variable in ("CI", "OTEL_RESILIENCE_REQUIRE_TOOLS")
    )


def need_tool(name: str) -> str:
    """The path of ``name``; a missing tool fails the test, or skips it where allowed.

    A missing ``redis-server`` always fails. The other tools (chromium, promtool,
    prometheus; ``.ci/install-*.sh`` installs them) fail the test whenever ``CI`` is set to
    anything truthy (``bash .ci/run`` sets ``CI=true``), and skip it, with the reason in
    pytest's summary, on a developer's machine without them.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/install-*.sh installs the test tools)"
        if name in REQUIRED_TOOLS or tools_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisServer(RedisProcess):
    """An own redis-server on a free port that a test may kill (``stop``), pause and restart."""

    def stop(self) -> None:
        """Kill it: connections are refused from now on."""
        self.kill()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started RedisServer, killed when the block ends."""
    server = RedisServer(need_tool("redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def serve_asgi(app: object, *, lifespan: str = "on") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan=lifespan,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
