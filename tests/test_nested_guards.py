"""Nested guards and cancelled trials against real servers (DESIGN.md 4).

The README's pattern, ``@registry.protect(name)`` around a call through a guarded client,
with the OTel instrumentation and the span processor on: each failure counts once, and a
half-open trial made through the nested guards closes the breaker. A hung redis-server
(SIGSTOP), or PostgreSQL behind a black-holing proxy, with the app's own
``asyncio.wait_for`` deadline re-opens a half-open breaker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import BreakerSpanProcessor, CircuitOpenError, Registry, State, load_config
from otel_resilience.instrumentation import install
from tests.support.health_servers import FaultProxy, RedisServer, need_tool

NO_RETRY = Retry(NoBackoff(), 0)
OPEN_SECONDS = 0.3
FAILURES = 3


def breaker_config(**match: Any) -> dict[str, Any]:
    return {
        "criticality": "critical",
        "match": match,
        "breaker": {"consecutive_failures": FAILURES, "open_seconds": OPEN_SECONDS},
    }


class _Answer(BaseHTTPRequestHandler):
    status = 500
    requests = 0

    def do_GET(self) -> None:
        _Answer.requests += 1
        self.send_response(_Answer.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Answer.status, _Answer.requests = 500, 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    own = RedisServer(need_tool("redis-server"))
    own.start()
    yield own
    own.stop()


@pytest.fixture(params=["instrumented first", "guarded first"])
def wired(request: pytest.FixtureRequest) -> Iterator[Callable[[Registry], None]]:
    """Wire a registry the way configure() does: OTel redis and httpx instrumentation
    feeding the span processor, and the client guards, installed in either order."""
    provider = TracerProvider()
    uninstalls: list[Callable[[], None]] = []

    def wire(registry: Registry) -> None:
        provider.add_span_processor(BreakerSpanProcessor(registry))
        steps = [
            lambda: uninstalls.append(install(registry)),
            lambda: (
                RedisInstrumentor().instrument(tracer_provider=provider),
                HTTPXClientInstrumentor().instrument(tracer_provider=provider),
            ),
        ]
        if request.param == "guarded first":
            steps.reverse()
        for step in steps:
            step()

    yield wire
    RedisInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
    for uninstall in uninstalls:
        uninstall()


def counts(registry: Registry, name: str) -> tuple[str, int, int, int]:
    snap = registry.breaker(name).snapshot()
    return snap.state.value, snap.total_successes, snap.total_failures, snap.total_rejected


def wait_half_open(registry: Registry, name: str) -> None:
    time.sleep(OPEN_SECONDS + 0.05)
    assert registry.breaker(name).state is State.HALF_OPEN


# -- the README pattern: protect around a guarded client ------------------------------


def test_protected_httpx_call_counts_each_500_once_and_closes(
    http_server: str, wired: Callable[[Registry], None]
) -> None:
    """protect("api") around httpx through the guarded client, server answering 500: each
    response is one failure (the breaker opens after exactly FAILURES calls, no request
    reaches the server while open), and the half-open trial through both guards closes."""
    port = int(http_server.rsplit(":", 1)[1])
    registry = load_config({"dependencies": {"api": breaker_config(**{"server.port": port})}})
    wired(registry)

    with httpx.Client(timeout=2) as client:

        @registry.protect("api")
        def fetch() -> httpx.Response:
            return client.get(f"{http_server}/messages")

        for call in range(1, FAILURES + 1):
            assert fetch().status_code == 500
            expected = "open" if call == FAILURES else "closed"
            assert counts(registry, "api") == (expected, 0, call, 0)
        with pytest.raises(CircuitOpenError):
            fetch()
        assert _Answer.requests == FAILURES
        _Answer.status = 200
        wait_half_open(registry, "api")
        assert fetch().status_code == 200
    assert counts(registry, "api") == ("closed", 1, FAILURES, 1)


async def test_protected_async_httpx_call_counts_once_and_closes(
    http_server: str, wired: Callable[[Registry], None]
) -> None:
    """The same with an async protected function and httpx.AsyncClient."""
    port = int(http_server.rsplit(":", 1)[1])
    registry = load_config({"dependencies": {"api": breaker_config(**{"server.port": port})}})
    wired(registry)

    async with httpx.AsyncClient(timeout=2) as client:

        @registry.protect("api")
        async def fetch() -> httpx.Response:
            return await client.get(f"{http_server}/messages")

        for call in range(1, FAILURES + 1):
            assert (await fetch()).status_code == 500
            assert counts(registry, "api")[2] == call
        assert registry.breaker("api").state is State.OPEN
        _Answer.status = 200
        await asyncio.sleep(OPEN_SECONDS + 0.05)
        assert (await fetch()).status_code == 200
    assert counts(registry, "api") == ("closed", 1, FAILURES, 0)


def test_protected_redis_call_counts_each_refusal_once_and_closes(
    redis_server: RedisServer, wired: Callable[[Registry], None]
) -> None:
    """protect("cache") around redis-py with the server killed: one failure per call; after
    a restart the half-open trial through both guards closes the breaker."""
    registry = load_config(
        {"dependencies": {"cache": breaker_config(**{"server.port": redis_server.port})}}
    )
    wired(registry)
    client = redis.Redis(port=redis_server.port, socket_timeout=1, retry=NO_RETRY)

    @registry.protect("cache")
    def read(key: str) -> Any:
        return client.get(key)

    client.set("greeting", "hello")
    assert read("greeting") == b"hello"
    redis_server.stop()
    for call in range(1, FAILURES + 1):
        with pytest.raises(redis.exceptions.ConnectionError):
            read("greeting")
        assert counts(registry, "cache")[2] == call
    assert registry.breaker("cache").state is State.OPEN
    redis_server.start()
    wait_half_open(registry, "cache")
    assert read("greeting") is None  # a fresh server: the key is gone, the answer counts
    assert counts(registry, "cache") == ("closed", 3, FAILURES, 0)


async def test_protected_async_redis_with_guard_inside(
    redis_server: RedisServer, wired: Callable[[Registry], None]
) -> None:
    """An async protected function with registry.guard inside it, around redis.asyncio:
    three layers, one call, one record; the trial closes the breaker."""
    registry = load_config(
        {"dependencies": {"cache": breaker_config(**{"server.port": redis_server.port})}}
    )
    wired(registry)
    client = redis.asyncio.Redis(port=redis_server.port, socket_timeout=1, retry=NO_RETRY)

    @registry.protect("cache")
    async def read(key: str) -> Any:
        async with registry.guard("cache"):
            return await client.get(key)

    await client.set("greeting", "hello")
    assert await read("greeting") == b"hello"
    redis_server.stop()
    for call in range(1, FAILURES + 1):
        with pytest.raises(redis.exceptions.ConnectionError):
            await read("greeting")
        assert counts(registry, "cache")[2] == call
    assert registry.breaker("cache").state is State.OPEN
    redis_server.start()
    await asyncio.sleep(OPEN_SECONDS + 0.05)
    assert await read("greeting") is None
    assert counts(registry, "cache") == ("closed", 3, FAILURES, 0)
    await client.aclose()


def test_guard_inside_protected_function_sync(
    redis_server: RedisServer, wired: Callable[[Registry], None]
) -> None:
    """registry.guard inside a protected function (sync) around redis-py: counted once."""
    registry = load_config(
        {"dependencies": {"cache": breaker_config(**{"server.port": redis_server.port})}}
    )
    wired(registry)
    client = redis.Redis(port=redis_server.port, socket_timeout=1, retry=NO_RETRY)

    @registry.protect("cache")
    def write(key: str) -> Any:
        with registry.guard("cache"):
            return client.set(key, "v")

    assert write("a") is True
    redis_server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        write("a")
    assert counts(registry, "cache") == ("closed", 1, 1, 0)


# -- a hung dependency and the app's own deadline ----------------------------------------


async def test_app_deadline_on_a_hung_redis_reopens_a_half_open_breaker(
    redis_server: RedisServer,
) -> None:
    """redis-server SIGSTOPped: the app's own asyncio.wait_for deadline cancels the
    half-open trial, which is a failed probe: the breaker re-opens (open time doubled) and
    the next call fails fast instead of becoming the next trial."""
    registry = load_config(
        {
            "dependencies": {
                "cache": {
                    "criticality": "critical",
                    "match": {"db.system": "redis", "server.port": redis_server.port},
                    "breaker": {"consecutive_failures": 1, "open_seconds": OPEN_SECONDS},
                }
            }
        }
    )
    uninstall = install(registry)
    # The client's own socket timeout opens the breaker; the app's calls use a client
    # whose timeout is longer than the app's deadline, so only the deadline stops them.
    quick = redis.asyncio.Redis(port=redis_server.port, socket_timeout=0.2, retry=NO_RETRY)
    patient = redis.asyncio.Redis(port=redis_server.port, socket_timeout=10, retry=NO_RETRY)
    try:
        await quick.ping()
        await patient.ping()
        redis_server.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            await quick.get("k")
        breaker = registry.breaker("cache")
        assert breaker.state is State.OPEN
        await asyncio.sleep(OPEN_SECONDS + 0.05)
        assert breaker.state is State.HALF_OPEN
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(patient.get("k"), 0.3)
        snap = breaker.snapshot()
        assert (snap.state, snap.last_error_type) == (State.OPEN, "CancelledError")
        assert snap.open_seconds == pytest.approx(2 * OPEN_SECONDS)
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as fast:
            await asyncio.wait_for(patient.get("k"), 0.3)
        assert time.monotonic() - started < 0.2  # failed fast, did not wait the deadline
        assert fast.value.retry_after > 0
        redis_server.resume()
        await asyncio.sleep(2 * OPEN_SECONDS + 0.05)
        assert await patient.get("k") is None
        assert breaker.state is State.CLOSED
    finally:
        redis_server.resume()
        uninstall()
        await quick.aclose()
        await patient.aclose()


async def test_app_deadline_in_closed_is_no_failure(redis_server: RedisServer) -> None:
    """While closed, a call the app's deadline cancels counts neither way (the app chose
    to stop waiting; the client's own timeouts are what count)."""
    registry = load_config(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis", "server.port": redis_server.port},
                    "breaker": {"consecutive_failures": 1, "open_seconds": OPEN_SECONDS},
                }
            }
        }
    )
    uninstall = install(registry)
    patient = redis.asyncio.Redis(port=redis_server.port, socket_timeout=10, retry=NO_RETRY)
    try:
        await patient.ping()
        redis_server.pause()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(patient.get("k"), 0.1)
        assert counts(registry, "cache") == ("closed", 1, 0, 0)
    finally:
        redis_server.resume()
        uninstall()
        await patient.aclose()


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", 5432)
    proxy.start()
    yield proxy
    proxy.close()


async def test_app_deadline_on_a_hung_postgres_reopens_a_half_open_breaker(
    pg_proxy: FaultProxy,
) -> None:
    """PostgreSQL behind a proxy that black-holes (accepts, never answers): the app's own
    deadline on a query of an open connection cancels the half-open trial, the breaker
    re-opens, and the next connect fails fast instead of waiting out the deadline."""
    registry = load_config(
        {
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql", "server.port": pg_proxy.port},
                    "breaker": {"consecutive_failures": 1, "open_seconds": OPEN_SECONDS},
                }
            }
        }
    )
    dsn = f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test"
    uninstall = install(registry)
    connection = None
    try:
        connection = await asyncpg.connect(dsn, timeout=2)
        pg_proxy.blackhole()
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg.connect(dsn, timeout=0.3)  # asyncpg's own timeout: a failure
        breaker = registry.breaker("postgres")
        assert breaker.state is State.OPEN
        await asyncio.sleep(OPEN_SECONDS + 0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(connection.fetchval("SELECT 1"), 0.5)
        snap = breaker.snapshot()
        assert (snap.state, snap.last_error_type) == (State.OPEN, "CancelledError")
        started = time.monotonic()
        with pytest.raises(CircuitOpenError):
            await asyncio.wait_for(asyncpg.connect(dsn, timeout=2), 0.5)
        assert time.monotonic() - started < 0.2
        pg_proxy.forward()
        await asyncio.sleep(2 * OPEN_SECONDS + 0.05)
        fresh = await asyncpg.connect(dsn, timeout=2)
        assert await fresh.fetchval("SELECT 2") == 2
        assert breaker.state is State.CLOSED
        await fresh.close()
    finally:
        pg_proxy.forward()
        uninstall()
        if connection is not None:
            connection.terminate()
