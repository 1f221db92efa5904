"""A leaf guard (redis-py commands) on a CLOSED breaker hands its call's success to the
call's client span, and the span processor counts it as the span ends: each call still
counts exactly once, whatever the call's outcome, the span, or the wiring.

Real parts: configure() on an SDK provider with the OTel redis instrumentation, an own
redis-server (killed for the failures), the shared Redis never touched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import Registry, State, configure
from otel_resilience._configure import reset_for_tests
from otel_resilience._context import GUARDED_SPANS, SPAN_COUNTERS
from otel_resilience._scopes import EXACT_CLIENT_KEYS, EXACT_CLIENT_SCOPE
from otel_resilience._semconv import lookup
from otel_resilience.instrumentation._redis import pool_attributes
from tests.support.health_servers import RedisServer, need_tool, redis_server
from tests.test_clients_outage import semconv

NO_RETRY = Retry(NoBackoff(), 0)


def config(*, fallback: bool = True) -> dict[str, object]:
    cache: dict[str, object] = {
        "criticality": "optional",
        "match": {"db.system": "redis"},
        "breaker": {"consecutive_failures": 3, "open_seconds": 30},
    }
    if fallback:
        cache["fallback"] = "memory"
    return {"dependencies": {"cache": cache}}


def totals(registry: Registry) -> tuple[int, int, int]:
    snapshot = registry.breaker("cache").snapshot()
    return snapshot.total_successes, snapshot.total_failures, snapshot.total_rejected


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as own:
        yield own


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A provider with the OTel redis instrumentation on it; the wiring undone after."""
    provider = TracerProvider()
    RedisInstrumentor().instrument(tracer_provider=provider)
    GUARDED_SPANS.clear()
    yield provider
    RedisInstrumentor().uninstrument()
    reset_for_tests()
    provider.shutdown()
    GUARDED_SPANS.clear()


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY)


def wire(provider: TracerProvider, *, fallback: bool = True) -> Registry:
    return configure(
        config(fallback=fallback), tracer_provider=provider, meter_provider=MeterProvider()
    )


def test_successes_are_counted_once_each_through_the_span(
    provider: TracerProvider, server: RedisServer
) -> None:
    """configure() lets the redis guard hand its successes to the spans: every command
    counts one success on the breaker, nothing waits in GUARDED_SPANS afterwards, and the
    memory fallback still learned what the commands read."""
    registry = wire(provider)
    assert provider._active_span_processor in SPAN_COUNTERS
    client = client_of(server)
    client.set("k", "v")
    for _ in range(20):
        assert client.get("k") == b"v"
    assert totals(registry) == (21, 0, 0)
    assert GUARDED_SPANS == {}
    registry.breaker("cache").force_open()
    assert client.get("k") == b"v"  # served by the memory fallback
    assert totals(registry)[:2] == (21, 0)


def test_an_error_reply_is_one_success_and_no_failure(
    provider: TracerProvider, server: RedisServer
) -> None:
    """An error reply (WRONGTYPE) raised through a handed call is the guard's to record:
    Redis answered, one success; the span, ended with status ERROR, is not counted."""
    registry = wire(provider)
    client = client_of(server)
    client.lpush("list", "x")
    with pytest.raises(redis.exceptions.ResponseError):
        client.get("list")
    assert totals(registry) == (2, 0, 0)
    assert GUARDED_SPANS == {}


def test_a_failed_call_takes_its_success_back(
    provider: TracerProvider, server: RedisServer
) -> None:
    """A command to a killed Redis fails (no fallback): one failure each, no success, and
    after three the breaker is open."""
    registry = wire(provider, fallback=False)
    client = client_of(server)
    assert client.ping() is True
    server.stop()
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            client.get("k")
    assert totals(registry) == (1, 3, 0)
    assert registry.breaker("cache").state is State.OPEN
    assert GUARDED_SPANS == {}


def test_without_a_recorded_span_the_guard_counts_itself(server: RedisServer) -> None:
    """A sampler that records nothing: no span reaches the processor, so the guard counts
    each call itself (nothing handed, nothing left waiting)."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    RedisInstrumentor().instrument(tracer_provider=provider)
    GUARDED_SPANS.clear()
    try:
        registry = configure(
            config(), tracer_provider=provider, meter_provider=MeterProvider(), instrument=True
        )
        provider.sampler = ALWAYS_OFF  # not even the sampler wrapper's RECORD_ONLY
        for tracer in provider._tracers.values():
            tracer.sampler = ALWAYS_OFF
        client = client_of(server)
        for _ in range(5):
            client.get("k")
        assert totals(registry) == (5, 0, 0)
        assert GUARDED_SPANS == {}
    finally:
        RedisInstrumentor().uninstrument()
        reset_for_tests()
        provider.shutdown()


def test_a_switched_off_processor_is_not_handed_successes(
    provider: TracerProvider, server: RedisServer
) -> None:
    """configure() on another provider switches this provider's processor off: its
    pipeline leaves SPAN_COUNTERS, and the guard counts the calls of its spans itself."""
    registry = wire(provider)
    other = TracerProvider()
    try:
        registry = configure(config(), tracer_provider=other, meter_provider=MeterProvider())
        assert provider._active_span_processor not in SPAN_COUNTERS
        assert other._active_span_processor in SPAN_COUNTERS
        client = client_of(server)
        for _ in range(4):
            client.get("k")
        assert totals(registry) == (4, 0, 0)
        # The switched-off processor leaves the spans' entries (bounded), none handed.
        assert [entry[2] for entry in GUARDED_SPANS.values()] == [None] * 4
    finally:
        other.shutdown()


def test_calls_inside_one_client_span_of_the_app_count_once_each(
    server: RedisServer,
) -> None:
    """Without the redis instrumentation, the current client span is the app's own, around
    several commands: the first hands its success to that span, the next count
    themselves (counting the handed one as they mark the span), and each command counts
    once by the time the span ends."""
    provider = TracerProvider()
    GUARDED_SPANS.clear()
    try:
        registry = wire(provider)
        client = client_of(server)
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("batch", kind=SpanKind.CLIENT):
            client.get("a")
            assert totals(registry)[0] == 0  # handed to the app's span, still open
            for key in "bcd":
                client.get(key)
        assert totals(registry) == (4, 0, 0)
        assert GUARDED_SPANS == {}
    finally:
        reset_for_tests()
        provider.shutdown()


def test_a_command_inside_a_protected_function_joins_it(
    provider: TracerProvider, server: RedisServer
) -> None:
    """A redis command inside protect("cache") joins the outer call (it hands nothing):
    one call, one success, recorded by the outer guard."""
    registry = wire(provider)
    client = client_of(server)

    @registry.protect("cache")
    def read() -> object:
        return client.get("k")

    for _ in range(3):
        read()
    assert totals(registry) == (3, 0, 0)
    assert GUARDED_SPANS == {}


def test_a_pipeline_hands_one_success_and_its_fallback_learns(
    provider: TracerProvider, server: RedisServer
) -> None:
    """A pipeline is one call: its success is handed to its span and counted once; the
    memory fallback learned what it read (served once the breaker is forced open)."""
    registry = wire(provider)
    client = client_of(server)
    client.set("p", "1")
    pipeline = client.pipeline()
    pipeline.get("p")
    pipeline.exists("p")
    assert pipeline.execute() == [b"1", 1]
    assert totals(registry) == (2, 0, 0)
    assert GUARDED_SPANS == {}
    registry.breaker("cache").force_open()
    assert client.get("p") == b"1"


# -- the span of a handed success, classified or not --------------------------------------


def successes(registry: Registry, name: str) -> int:
    return registry.breaker(name).snapshot().total_successes


def test_an_app_span_of_another_dependency_still_counts_its_own_call(
    server: RedisServer,
) -> None:
    """Without the redis instrumentation, the current client span is the app's own call to
    another dependency: the redis command hands its success to that span, and as the span
    ends both count, the command on the cache and the app's call on its own dependency
    (the span is not taken for the redis command's own)."""
    provider = TracerProvider()
    GUARDED_SPANS.clear()
    try:
        registry = configure(
            {
                "dependencies": {
                    **config()["dependencies"],  # type: ignore[dict-item]
                    "analytics": {"match": {"server.address": "analytics.internal"}},
                }
            },
            tracer_provider=provider,
            meter_provider=MeterProvider(),
        )
        client = client_of(server)
        tracer = provider.get_tracer("app")
        for _ in range(3):
            with tracer.start_as_current_span(
                "track",
                kind=SpanKind.CLIENT,
                attributes={"server.address": "analytics.internal"},
            ):
                client.get("a")
        assert successes(registry, "cache") == 3
        assert successes(registry, "analytics") == 3
        assert GUARDED_SPANS == {}
    finally:
        reset_for_tests()
        provider.shutdown()


def test_a_match_on_attributes_the_guard_did_not_read_classifies_the_span_as_well(
    provider: TracerProvider, server: RedisServer
) -> None:
    """A dependency declared first that also matches on the database index (which the
    guard does not classify by) takes the instrumentation's span of a command the guard
    counted for the cache: the span is classified, and its dependency counts it too."""
    registry = configure(
        {
            "dependencies": {
                "sessions": {"match": {"db.system": "redis", "db.redis.database_index": 1}},
                **config()["dependencies"],  # type: ignore[dict-item]
            }
        },
        tracer_provider=provider,
        meter_provider=MeterProvider(),
    )
    client = redis.Redis(
        port=server.port, db=1, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY
    )
    for _ in range(4):
        client.get("k")
    assert successes(registry, "cache") == 4
    assert successes(registry, "sessions") == 4
    assert GUARDED_SPANS == {}


@pytest.mark.parametrize("mode", ["spans", "spans-stable"])
def test_the_guard_classifies_by_the_very_attributes_its_span_carries(
    mode: str, server: RedisServer, tmp_path: Path
) -> None:
    """For the attributes the span processor trusts a handed success by, without
    classifying its span again (``EXACT_CLIENT_KEYS``), the redis instrumentation's span
    of a command carries what the guard classified the command by: over TCP with host and
    port given, with redis-py's defaults, from a URL, and over a unix socket; in the
    default and the stable semantic conventions."""
    socket_path = str(tmp_path / "redis.sock")
    unix = subprocess.Popen(
        [
            *(need_tool("redis-server"), "--port", "0", "--unixsocket", socket_path),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        with semconv(mode):
            RedisInstrumentor().instrument(tracer_provider=provider)
            try:
                clients = [
                    redis.Redis(host="127.0.0.1", port=server.port),
                    redis.Redis.from_url(f"redis://localhost:{server.port}/0"),
                    redis.Redis(unix_socket_path=socket_path),
                ]
                for client in clients:
                    client.get("k")
                default = redis.Redis()  # localhost:6379, the shared server: not reached
                spans = exporter.get_finished_spans()
            finally:
                RedisInstrumentor().uninstrument()
        assert len(spans) == len(clients)
        for client, span in zip(clients, spans, strict=True):
            guard = pool_attributes(client.connection_pool.connection_kwargs)
            for key in EXACT_CLIENT_KEYS:
                assert lookup(span.attributes or {}, key) == lookup(guard, key), (key, span)
            assert span.instrumentation_scope is not None
            assert span.instrumentation_scope.name == EXACT_CLIENT_SCOPE
        assert pool_attributes(default.connection_pool.connection_kwargs) == {
            "db.system": "redis",
            "server.address": "localhost",
            "server.port": 6379,
        }
    finally:
        unix.kill()
        unix.wait(5)
        provider.shutdown()


# -- redis.asyncio -----------------------------------------------------------------------


def async_client_of(server: RedisServer) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        port=server.port, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY
    )


@pytest.fixture
async def aclient(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis.asyncio client of the own server, closed after the test."""
    client = async_client_of(server)
    yield client
    await client.aclose()


async def test_async_successes_are_handed_to_the_span_and_counted_once(
    server: RedisServer,
) -> None:
    """redis.asyncio commands hand their successes too: inside an app's CLIENT span the
    first command's success waits for that span (nothing counted yet), the next commands
    count themselves, and each counts once; the memory fallback learned what they read."""
    provider = TracerProvider()
    GUARDED_SPANS.clear()
    client = async_client_of(server)
    try:
        registry = wire(provider)
        await client.set("ak", "v")  # no span current: the guard counts it itself
        with provider.get_tracer("app").start_as_current_span("batch", kind=SpanKind.CLIENT):
            assert await client.get("ak") == b"v"
            assert totals(registry) == (1, 0, 0)  # handed to the app's span, still open
            assert [entry[2] for entry in GUARDED_SPANS.values()] == [registry.breaker("cache")]
            for _ in range(3):
                await client.get("ak")
        assert totals(registry) == (5, 0, 0)
        assert GUARDED_SPANS == {}
        registry.breaker("cache").force_open()
        assert await client.get("ak") == b"v"  # served by the memory fallback
    finally:
        await client.aclose()
        reset_for_tests()
        provider.shutdown()


async def test_async_commands_through_the_instrumentation_count_once(
    provider: TracerProvider, server: RedisServer, aclient: redis.asyncio.Redis
) -> None:
    """With the OTel redis instrumentation's own spans: successes, an error reply (one
    success) and a pipeline each count once, and nothing waits in GUARDED_SPANS."""
    registry = wire(provider)
    await aclient.set("ak", "v")
    for _ in range(10):
        assert await aclient.get("ak") == b"v"
    await aclient.lpush("alist", "x")
    with pytest.raises(redis.exceptions.ResponseError):
        await aclient.get("alist")
    pipeline = aclient.pipeline()
    pipeline.get("ak")
    pipeline.exists("ak")
    assert await pipeline.execute() == [b"v", 1]
    assert totals(registry) == (14, 0, 0)
    assert GUARDED_SPANS == {}


async def test_an_async_failure_takes_its_success_back(
    provider: TracerProvider, server: RedisServer, aclient: redis.asyncio.Redis
) -> None:
    """redis.asyncio against a killed Redis, no fallback: one failure per command, no
    success, and after three the breaker is open."""
    registry = wire(provider, fallback=False)
    assert await aclient.ping() is True
    server.stop()
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            await aclient.get("k")
    assert totals(registry) == (1, 3, 0)
    assert registry.breaker("cache").state is State.OPEN
    assert GUARDED_SPANS == {}


async def test_a_cancelled_async_command_counts_nothing(
    provider: TracerProvider, server: RedisServer, aclient: redis.asyncio.Redis
) -> None:
    """A command cancelled while it waits (BLPOP on an empty list, cancelled by a timeout)
    is no outcome on a closed breaker: nothing counted, nothing left handed, the breaker
    closed, and the next command counts as usual."""
    registry = wire(provider)
    assert await aclient.ping() is True
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(aclient.blpop(["empty"], timeout=5), 0.2)
    assert totals(registry) == (1, 0, 0)
    assert GUARDED_SPANS == {}
    assert registry.breaker("cache").state is State.CLOSED
    await aclient.connection_pool.disconnect()  # the cancelled connection's reply
    assert await aclient.get("k") is None
    assert totals(registry) == (2, 0, 0)
