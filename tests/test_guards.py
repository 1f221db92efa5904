"""Client guards against real servers and real faults: redis-server, PostgreSQL, HTTP."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import CircuitOpenError, Registry, State, load_config
from otel_resilience._context import GUARDED, GUARDED_SPANS
from otel_resilience.instrumentation import install
from tests.support.guards import guarded
from tests.support.health_servers import FaultProxy, RedisServer, free_port, need_tool

NO_RETRY = Retry(NoBackoff(), 0)
OPEN_SECONDS = 0.3


def registry_for(**dependencies: dict[str, Any]) -> Registry:
    return load_config({"dependencies": dependencies})


@pytest.fixture
def server() -> Iterator[RedisServer]:
    own = RedisServer(need_tool("redis-server"))
    own.start()
    yield own
    own.stop()


def redis_dependency(server: RedisServer, **extra: Any) -> dict[str, Any]:
    return {
        "match": {"db.system": "redis", "server.port": server.port},
        "breaker": {"consecutive_failures": 2, "open_seconds": OPEN_SECONDS},
        **extra,
    }


def sync_client(server: RedisServer, **kwargs: Any) -> redis.Redis:
    return redis.Redis(
        port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=NO_RETRY, **kwargs
    )


# -- redis ---------------------------------------------------------------------------


def test_redis_outage_fails_fast_with_a_redis_connection_error(server: RedisServer) -> None:
    """Killed redis: the breaker opens after the configured failures, then calls fail at
    once with an error that is both CircuitOpenError and redis' ConnectionError; after
    open_seconds a call closes it again."""
    registry = registry_for(cache=redis_dependency(server, criticality="critical"))
    for _ in guarded(registry):
        client = sync_client(server)
        assert client.set("k", "v")
        server.stop()
        for _ in range(2):
            with pytest.raises(redis.exceptions.ConnectionError) as refused:
                client.get("k")
            assert not isinstance(refused.value, CircuitOpenError)
        assert registry.breaker("cache").state is State.OPEN
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError) as fast:
            client.get("k")
        assert time.monotonic() - started < 0.1  # no network wait
        assert isinstance(fast.value, CircuitOpenError)
        assert fast.value.dependency == "cache"
        restored = pickle.loads(pickle.dumps(fast.value))
        assert isinstance(restored, redis.exceptions.ConnectionError)
        server.start()
        time.sleep(OPEN_SECONDS + 0.05)
        assert client.set("k", "again")
        assert registry.breaker("cache").state is State.CLOSED
        snap = registry.breaker("cache").snapshot()
        assert (snap.total_failures, snap.total_rejected) == (2, 1)


def test_hung_redis_opens_on_timeouts_then_fails_fast(server: RedisServer) -> None:
    """SIGSTOPped redis: socket timeouts count as failures, then calls fail fast."""
    registry = registry_for(cache=redis_dependency(server, criticality="critical"))
    for _ in guarded(registry):
        client = sync_client(server)
        client.ping()
        server.pause()
        try:
            for _ in range(2):
                with pytest.raises(redis.exceptions.TimeoutError):
                    client.get("k")
            started = time.monotonic()
            with pytest.raises(CircuitOpenError):
                client.get("k")
            assert time.monotonic() - started < 0.1
            assert registry.breaker("cache").snapshot().last_error_type == "TimeoutError"
        finally:
            server.resume()


def test_memory_fallback_serves_what_was_seen(server: RedisServer) -> None:
    """An optional redis with the memory fallback answers from the values it saw while up."""
    registry = registry_for(cache=redis_dependency(server, fallback="memory"))
    for _ in guarded(registry):
        client = sync_client(server, decode_responses=True)
        client.set("session:1", "alice")
        client.hset("user:1", mapping={"name": "alice", "plan": "pro"})
        assert client.hgetall("user:1") == {"name": "alice", "plan": "pro"}
        server.stop()
        # the failing calls themselves are answered from memory
        assert client.get("session:1") == "alice"
        assert client.get("session:1") == "alice"
        assert registry.breaker("cache").state is State.OPEN
        assert client.get("session:1") == "alice"  # rejected, served at once
        assert client.hget("user:1", "plan") == "pro"
        assert client.set("session:2", "bob") is True  # local to this process
        assert client.get("session:2") == "bob"
        assert client.get("missing") is None
        with pytest.raises(CircuitOpenError):
            client.lpush("queue", "x")  # not served by the memory fallback
        counts = registry.fallback_counts()
        assert counts[("cache", "error")] == 2
        assert counts[("cache", "open")] >= 5


def test_redis_pipelines_are_guarded(server: RedisServer) -> None:
    """A pipeline is one guarded call; while open it is served from memory or rejected."""
    registry = registry_for(cache=redis_dependency(server, fallback="memory"))
    for _ in guarded(registry):
        client = sync_client(server)
        assert client.pipeline().set("a", "1").incr("a").get("a").execute() == [True, 2, b"2"]
        server.stop()
        for _ in range(2):
            client.get("x")  # fail, served from memory (None)
        assert registry.breaker("cache").state is State.OPEN
        assert client.pipeline().get("a").set("b", "2").get("b").execute() == [b"2", True, b"2"]


async def test_asyncio_redis_is_guarded(server: RedisServer) -> None:
    """redis.asyncio calls are guarded the same way, pipelines included."""
    registry = registry_for(cache=redis_dependency(server, criticality="critical"))
    for _ in guarded(registry):
        client = redis.asyncio.Redis(
            port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=NO_RETRY
        )
        await client.set("k", "v")
        async with client.pipeline() as pipe:
            assert await pipe.get("k").execute() == [b"v"]
        server.stop()
        for _ in range(2):
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.get("k")
        with pytest.raises(CircuitOpenError):
            await client.get("k")
        with pytest.raises(redis.exceptions.ConnectionError):
            async with client.pipeline() as pipe:
                await pipe.get("k").execute()
        await client.aclose()


def test_error_replies_are_not_failures(server: RedisServer) -> None:
    """A WRONGTYPE reply means Redis answered: it is not a dependency failure."""
    registry = registry_for(cache=redis_dependency(server))
    for _ in guarded(registry):
        client = sync_client(server)
        client.lpush("list", "x")
        for _ in range(3):
            with pytest.raises(redis.exceptions.ResponseError):
                client.get("list")
        assert registry.breaker("cache").state is State.CLOSED


def test_unmatched_redis_calls_pass_through(server: RedisServer) -> None:
    """A client that matches no dependency is not guarded (the span processor observes it)."""
    registry = registry_for(other={"match": {"db.system": "redis", "server.port": 1}})
    for _ in guarded(registry):
        assert sync_client(server).set("k", "v")
        assert registry.breaker("other").snapshot().total_successes == 0


def test_uninstall_removes_the_guard(server: RedisServer) -> None:
    """After uninstall, calls are no longer counted."""
    registry = registry_for(cache=redis_dependency(server))
    uninstall = install(registry)
    client = sync_client(server)
    client.ping()
    uninstall()
    client.ping()
    assert registry.breaker("cache").snapshot().total_successes == 1


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    def on_end(self, span: ReadableSpan) -> None:
        entered = GUARDED_SPANS.get(id(span.context))
        ours = [key for key in span.attributes or {} if key.startswith("otel_resilience")]
        self.seen.append((GUARDED.get(), entered and entered[1], ours))


def test_guard_marks_the_call_for_the_span_processor(server: RedisServer) -> None:
    """With the OTel redis instrumentation, the client span ends after the guard (the
    innermost layer) returned, outside the GUARDED context, with its context entered in
    GUARDED_SPANS for the dependency, so the span processor knows the guard counted the
    call; nothing is added to the span."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    provider = TracerProvider()
    collect = _Collect()
    provider.add_span_processor(collect)
    RedisInstrumentor().instrument(tracer_provider=provider)
    registry = registry_for(cache=redis_dependency(server))
    try:
        for _ in guarded(registry):
            sync_client(server).ping()
    finally:
        RedisInstrumentor().uninstrument()
    assert collect.seen == [(None, "cache", [])]


# -- asyncpg -------------------------------------------------------------------------


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", 5432)
    proxy.start()
    yield proxy
    proxy.close()


def pg_registry(proxy: FaultProxy) -> Registry:
    return registry_for(
        postgres={
            "criticality": "critical",
            "match": {"db.system": "postgresql", "server.port": proxy.port},
            "breaker": {"consecutive_failures": 2, "open_seconds": OPEN_SECONDS},
        }
    )


async def test_postgres_outage_fails_fast_and_recovers(pg_proxy: FaultProxy) -> None:
    """PostgreSQL behind a proxy that stops: connect failures open the breaker (recorded by
    the guard: connecting has no span), then connects and queries fail fast with an error
    that is also asyncpg's InterfaceError and an OSError; recovery closes it."""
    registry = pg_registry(pg_proxy)
    dsn = f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test"
    for _ in guarded(registry):
        connection = await asyncpg.connect(dsn, timeout=2)
        assert await connection.fetchval("SELECT 1") == 1
        pg_proxy.stop()
        pg_proxy.cut()
        with pytest.raises((OSError, asyncpg.exceptions.InterfaceError, asyncpg.PostgresError)):
            await connection.fetchval("SELECT 1")
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(dsn, timeout=2)
        assert registry.breaker("postgres").state is State.OPEN
        started = time.monotonic()
        with pytest.raises(asyncpg.exceptions.InterfaceError) as fast:
            await asyncpg.connect(dsn, timeout=2)
        assert isinstance(fast.value, CircuitOpenError)
        assert isinstance(fast.value, OSError)
        with pytest.raises(CircuitOpenError):
            await connection.fetchval("SELECT 1")
        assert time.monotonic() - started < 0.1
        pg_proxy.start()
        await asyncio.sleep(OPEN_SECONDS + 0.05)
        connection = await asyncpg.connect(dsn, timeout=2)
        assert registry.breaker("postgres").state is State.CLOSED
        assert await connection.fetchval("SELECT 2") == 2
        await connection.close()


async def test_postgres_error_replies_are_not_failures(pg_proxy: FaultProxy) -> None:
    """A syntax error is PostgreSQL answering: not a dependency failure."""
    registry = pg_registry(pg_proxy)
    for _ in guarded(registry):
        connection = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test", timeout=2
        )
        for _ in range(3):
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await connection.execute("SELEC 1")
        assert registry.breaker("postgres").state is State.CLOSED
        await connection.close()


# -- httpx ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    status = 200
    hang = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/hang":
            _Handler.hang.wait(5)
        code = int(self.path.strip("/")) if self.path.strip("/").isdigit() else _Handler.status
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    _Handler.hang.set()
    server.shutdown()
    server.server_close()
    _Handler.hang.clear()


def http_registry(port: int, **extra: Any) -> Registry:
    return registry_for(
        api={
            "match": {"server.address": "127.0.0.1", "server.port": port},
            "breaker": {"consecutive_failures": 3, "open_seconds": OPEN_SECONDS},
            **extra,
        }
    )


def test_http_statuses_decide_and_open_fails_fast(http_server: int) -> None:
    """404 is an answer, 500 and 429 are failures (the response still reaches the caller),
    then the open breaker fails fast with an httpx.ConnectError."""
    registry = http_registry(http_server, criticality="critical")
    base = f"http://127.0.0.1:{http_server}"
    for _ in guarded(registry):
        with httpx.Client(timeout=2) as client:
            assert client.get(f"{base}/404").status_code == 404
            assert client.get(f"{base}/500").status_code == 500
            assert client.get(f"{base}/429").status_code == 429
            assert client.get(f"{base}/503").status_code == 503
            assert registry.breaker("api").state is State.OPEN
            with pytest.raises(httpx.ConnectError) as fast:
                client.get(f"{base}/200")
            assert isinstance(fast.value, CircuitOpenError)
            assert fast.value.request.url.path == "/200"
            time.sleep(OPEN_SECONDS + 0.05)
            assert client.get(f"{base}/200").status_code == 200
            assert registry.breaker("api").state is State.CLOSED
    snap = registry.breaker("api").snapshot()
    assert (snap.total_successes, snap.total_failures, snap.total_rejected) == (2, 3, 1)


async def test_async_http_refused_and_hanging_use_the_fallback(http_server: int) -> None:
    """Refused and timed-out async requests of an optional dependency get its fallback."""
    registry = http_registry(http_server, fallback="tests.fallbacks_for_tests:local_analytics")
    refused_port = free_port()
    for _ in guarded(registry):
        async with httpx.AsyncClient(timeout=0.3) as client:
            assert await client.get(f"http://127.0.0.1:{http_server}/hang") == "kept locally"
        assert registry.breaker("api").snapshot().last_error_type == "ReadTimeout"
    other = registry_for(api={"match": {"server.port": refused_port}, "fallback": "none"})
    for _ in guarded(other):
        async with httpx.AsyncClient(timeout=1) as client:
            assert await client.get(f"http://127.0.0.1:{refused_port}/") is None
    assert other.fallback_counts() == {("api", "error"): 1}


async def test_prober_closes_a_guarded_breaker_with_no_traffic(pg_proxy: FaultProxy) -> None:
    """The health prober's sql check is not stopped by the asyncpg guard of the very breaker
    it probes, and its own calls are not counted twice: after an outage, the breaker of a
    guarded PostgreSQL closes with no user traffic."""
    from otel_resilience import HealthProber

    dsn = f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test"
    registry = registry_for(
        postgres={
            "criticality": "critical",
            "match": {"db.system": "postgresql", "server.port": pg_proxy.port},
            "breaker": {"consecutive_failures": 2, "open_seconds": OPEN_SECONDS},
            "health_check": {
                "type": "sql",
                "dsn": dsn,
                "timeout_seconds": 1,
                "interval_seconds": 0.1,
            },
        }
    )
    for _ in guarded(registry):
        pg_proxy.stop()
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await asyncpg.connect(dsn, timeout=1)
        breaker = registry.breaker("postgres")
        assert breaker.state is State.OPEN
        pg_proxy.start()
        async with HealthProber(registry, interval_seconds=0.1):
            deadline = time.monotonic() + 10
            while breaker.state is not State.CLOSED and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert breaker.state is State.CLOSED
        assert breaker.snapshot().total_failures == 2  # the probes' calls were not counted
