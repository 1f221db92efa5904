"""Client guards where they serve fallbacks or meet transport errors, against real servers:
asyncpg behind a fault proxy in front of the shared PostgreSQL, sync httpx against a refused
port and a server that never answers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import asyncpg
import httpx
import pytest

from otel_resilience import BreakerPolicy as Policy
from otel_resilience import CircuitOpenError, Criticality, Dependency, Registry, State
from otel_resilience.instrumentation import install
from tests.support.health_servers import FaultProxy, free_port

POLICY = Policy(consecutive_failures=2, minimum_calls=100, open_seconds=30)


def _install(registry: Registry) -> Any:
    return install(registry)


async def test_asyncpg_fallback_answers_queries_during_an_outage() -> None:
    """An optional PostgreSQL with a fallback: once the proxy refuses and cuts, queries get
    the fallback (called with the method and its arguments), counted by reason."""
    proxy = FaultProxy("127.0.0.1", 5432).start()
    served: list[tuple[Any, ...]] = []

    def stale(method: str, *args: Any) -> list[Any]:
        served.append((method, *args))
        return []

    registry = Registry(
        [
            Dependency(
                "reports",
                Criticality.OPTIONAL,
                match={"db.system": "postgresql", "server.port": proxy.port},
                policy=POLICY,
                fallback=stale,
            )
        ]
    )
    uninstall = _install(registry)
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        connection = await asyncpg.connect(dsn, timeout=2)
        assert await connection.fetchval("SELECT 1") == 1
        proxy.stop()
        proxy.cut()
        assert await connection.fetch("SELECT 2") == []  # the connection broke: error
        assert await connection.fetch("SELECT 3") == []
        assert registry.breaker("reports").state is State.OPEN
        started = time.monotonic()
        assert await connection.fetch("SELECT $1::int", 4) == []  # open: no I/O at all
        assert time.monotonic() - started < 0.5
        assert served[-1] == ("fetch", "SELECT $1::int", 4)
        counts = registry.fallback_counts()
        assert counts[("reports", "open")] >= 1
        assert counts.get(("reports", "error"), 0) >= 1
    finally:
        uninstall()
        proxy.close()


async def test_asyncpg_calls_to_undeclared_servers_pass_through() -> None:
    """A connection to a server no dependency matches is not guarded: its errors are
    asyncpg's own and no breaker counts them."""
    registry = Registry(
        [Dependency("other", match={"db.system": "postgresql", "server.port": 1}, policy=POLICY)]
    )
    uninstall = _install(registry)
    try:
        connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=2)
        try:
            assert await connection.fetchval("SELECT 5") == 5
            with pytest.raises(asyncpg.PostgresError):
                await connection.fetchval("SELECT no_such_column")
        finally:
            await connection.close()
        snapshot = registry.breaker("other").snapshot()
        assert snapshot.total_successes + snapshot.total_failures == 0
    finally:
        uninstall()


class _Silent:
    """A TCP server that accepts connections and never answers (a hung HTTP backend)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        self.stop.set()
        for connection in self.accepted:
            connection.close()
        self.sock.close()


def _http_registry(port: int, fallback: Any = None) -> Registry:
    return Registry(
        [
            Dependency(
                "api",
                Criticality.OPTIONAL,
                match={"server.address": "127.0.0.1", "server.port": port},
                policy=POLICY,
                fallback=fallback,
            )
        ]
    )


def test_sync_httpx_refused_opens_then_fails_fast_as_a_connect_error() -> None:
    """Sync httpx to a refused port: transport errors are failures; once open, a request
    fails at once with an error that is both httpx's ConnectError and CircuitOpenError."""
    port = free_port()
    registry = _http_registry(port)
    uninstall = _install(registry)
    try:
        with httpx.Client(timeout=2) as client:
            for _ in range(2):
                with pytest.raises(httpx.ConnectError) as refused:
                    client.get(f"http://127.0.0.1:{port}/x")
                assert not isinstance(refused.value, CircuitOpenError)
            assert registry.breaker("api").state is State.OPEN
            assert registry.breaker("api").snapshot().last_error_type == "ConnectError"
            with pytest.raises(httpx.ConnectError) as fast:
                client.get(f"http://127.0.0.1:{port}/x")
            assert isinstance(fast.value, CircuitOpenError)
    finally:
        uninstall()


def test_sync_httpx_timeouts_count_and_the_fallback_answers() -> None:
    """Sync httpx to a server that never answers: each ReadTimeout is a failure answered by
    the fallback (called with the request, counted as a timeout); once open the fallback
    answers at once."""
    silent = _Silent()
    requests: list[httpx.Request] = []

    def cached(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"from": "fallback"}, request=request)

    registry = _http_registry(silent.port, fallback=cached)
    uninstall = _install(registry)
    try:
        with httpx.Client(timeout=0.3) as client:
            url = f"http://127.0.0.1:{silent.port}/prices"
            for _ in range(2):
                assert client.get(url).json() == {"from": "fallback"}
            assert registry.breaker("api").state is State.OPEN
            assert registry.breaker("api").snapshot().last_error_type == "ReadTimeout"
            started = time.monotonic()
            assert client.get(url).json() == {"from": "fallback"}
            assert time.monotonic() - started < 0.3  # no request was sent
        assert [str(request.url) for request in requests] == [url] * 3
        assert registry.fallback_counts() == {("api", "timeout"): 2, ("api", "open"): 1}
    finally:
        uninstall()
        silent.close()
