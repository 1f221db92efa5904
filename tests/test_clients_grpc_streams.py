"""grpc response streams on the guarded-call path: the concurrency limit and chaos.

Against a real grpc server whose streams stay open until the test lets them end, sync
and asyncio channels, unary-stream and stream-stream calls: a stream holds a limit
permit from its start to its end (finished, failed or cancelled), a call over the limit
is rejected before it reaches the server, and chaos faults are injected before any I/O.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from otel_resilience import CircuitOpenError, ConcurrencyLimitError, Registry, load_config
from otel_resilience.instrumentation import install
from tests.support.health_servers import free_port

SERVICE = "test.Hold"
KINDS = ["unary-stream", "stream-stream"]
WAIT = 10.0  # hang-catching bound


def _identity(value: bytes) -> bytes:
    return value


class HoldServer:
    """``Hold`` (unary-stream) answers once, then waits for ``release`` and answers again;
    ``Chat`` (stream-stream) echoes each request until the client's requests end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests = 0
        self.release = threading.Event()
        self._server: Any = None

    def start(self) -> HoldServer:
        def hold(request: bytes, context: Any) -> Iterator[bytes]:
            self.requests += 1
            yield request
            self.release.wait(WAIT)
            yield request

        def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            self.requests += 1
            yield from requests

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Hold": grpc.unary_stream_rpc_method_handler(hold),
                "Chat": grpc.stream_stream_rpc_method_handler(chat),
            },
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.stop(grace=None).wait(5)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[HoldServer]:
    made = HoldServer().start()
    try:
        yield made
    finally:
        made.stop()


def registry_for(server: HoldServer, **extra: Any) -> Registry:
    chaos = extra.pop("chaos", None)
    config: dict[str, Any] = {
        "dependencies": {
            "dep": {
                "match": {"server.address": "127.0.0.1", "server.port": server.port},
                "breaker": {"consecutive_failures": 50, "minimum_calls": 100},
                **extra,
            }
        }
    }
    if chaos is not None:
        config["chaos"] = {"enabled": True, "dependencies": {"dep": chaos}}
    return load_config(config)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_limit_rejection(error: BaseException) -> None:
    assert isinstance(error, ConcurrencyLimitError)
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


# -- sync channels ---------------------------------------------------------------------


class SyncStreams:
    """Stream calls on a sync channel; a stream-stream call's requests end on ``done``."""

    def __init__(self, server: HoldServer, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.channel = grpc.insecure_channel(server.target)

    def open(self, done: threading.Event) -> Any:
        if self.kind == "unary-stream":
            method = self.channel.unary_stream(
                f"/{SERVICE}/Hold", request_serializer=_identity, response_deserializer=_identity
            )
            return method(b"x", timeout=WAIT)

        def requests() -> Iterator[bytes]:
            yield b"x"
            done.wait(WAIT)
            yield b"y"

        method = self.channel.stream_stream(
            f"/{SERVICE}/Chat", request_serializer=_identity, response_deserializer=_identity
        )
        return method(requests(), timeout=WAIT)

    def end(self, done: threading.Event) -> None:
        """Let open streams end: the server's held ones and the client's requests."""
        self.server.release.set()
        done.set()


@pytest.mark.parametrize("kind", KINDS)
def test_sync_stream_over_the_limit_is_rejected_until_the_open_one_ends(
    server: HoldServer, kind: str
) -> None:
    """Limit 1, one stream open: a second stream call is rejected at once with the grpc
    rejection (a ConcurrencyLimitError), counted as rejected for the limit, and never
    reaches the server; once the first stream ends, a new one is admitted."""
    registry = registry_for(server, limits={"max_concurrent_calls": 1})
    limiter = registry.limiters()["dep"]
    uninstall = install(registry)
    streams = SyncStreams(server, kind)
    done = threading.Event()
    try:
        first = streams.open(done)
        assert next(first) == b"x"
        assert (server.requests, limiter.inflight) == (1, 1)
        with pytest.raises(grpc.RpcError) as rejected:
            list(streams.open(threading.Event()))
        assert_limit_rejection(rejected.value)
        assert server.requests == 1
        assert limiter.rejected == 1
        assert registry.breaker("dep").snapshot().total_rejected == 0  # not the breaker's
        streams.end(done)
        assert list(first) == ([b"x"] if kind == "unary-stream" else [b"y"])
        wait_until(lambda: limiter.inflight == 0)
        again = threading.Event()
        again.set()
        whole = [b"x", b"x"] if kind == "unary-stream" else [b"x", b"y"]
        assert list(streams.open(again)) == whole
        assert server.requests == 2
        wait_until(lambda: limiter.inflight == 0)
        assert limiter.rejected == 1
        assert registry.breaker("dep").snapshot().total_successes == 2
    finally:
        streams.end(done)
        streams.channel.close()
        uninstall()


@pytest.mark.parametrize("kind", KINDS)
def test_sync_cancelled_stream_gives_its_permit_back(server: HoldServer, kind: str) -> None:
    """A stream the application cancels while the server holds it releases its permit."""
    registry = registry_for(server, limits={"max_concurrent_calls": 1})
    limiter = registry.limiters()["dep"]
    uninstall = install(registry)
    streams = SyncStreams(server, kind)
    done = threading.Event()
    try:
        first = streams.open(done)
        assert next(first) == b"x"
        assert limiter.inflight == 1
        first.cancel()
        wait_until(lambda: limiter.inflight == 0)
        server.release.set()
        done.set()
        assert len(list(streams.open(done))) == 2
        assert server.requests == 2
        assert limiter.rejected == 0
    finally:
        streams.end(done)
        streams.channel.close()
        uninstall()


def test_sync_failed_stream_gives_its_permit_back(server: HoldServer) -> None:
    """A stream that fails (the server is gone) releases its permit and is a failure."""
    registry = registry_for(server, limits={"max_concurrent_calls": 1})
    limiter = registry.limiters()["dep"]
    uninstall = install(registry)
    streams = SyncStreams(server, "unary-stream")
    try:
        first = streams.open(threading.Event())
        assert next(first) == b"x"
        server._server.stop(grace=None).wait(5)  # cut the held stream
        with pytest.raises(grpc.RpcError):
            list(first)
        wait_until(lambda: limiter.inflight == 0)
        assert registry.breaker("dep").snapshot().total_failures == 1
    finally:
        streams.channel.close()
        uninstall()


@pytest.mark.parametrize("kind", KINDS)
def test_sync_chaos_errors_reach_no_server(
    server: HoldServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Armed chaos with error_rate 1.0: each stream call fails with grpc's UNAVAILABLE
    before any I/O (the server sees none), recorded as a failure and counted."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(server, chaos={"error_rate": 1.0}, limits={"max_concurrent_calls": 1})
    uninstall = install(registry)
    streams = SyncStreams(server, kind)
    done = threading.Event()
    done.set()
    try:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as injected:
                list(streams.open(done))
            assert injected.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert not isinstance(injected.value, CircuitOpenError)
    finally:
        streams.end(done)
        streams.channel.close()
        uninstall()
    assert server.requests == 0
    assert registry.chaos_counts()[("dep", "error")] == 2
    assert registry.breaker("dep").snapshot().total_failures == 2
    assert registry.limiters()["dep"].inflight == 0  # the permits were given back


def test_sync_chaos_latency_delays_then_calls(
    server: HoldServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Armed chaos latency only: the stream call waits, then reaches the server."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(server, chaos={"latency_seconds": 0.05, "latency_rate": 1.0})
    uninstall = install(registry)
    streams = SyncStreams(server, "unary-stream")
    server.release.set()
    try:
        assert list(streams.open(threading.Event())) == [b"x", b"x"]
    finally:
        streams.channel.close()
        uninstall()
    assert server.requests == 1
    assert registry.chaos_counts()[("dep", "latency")] == 1


# -- asyncio channels --------------------------------------------------------------------


class AioStreams:
    def __init__(self, server: HoldServer, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.channel = grpc.aio.insecure_channel(server.target)
        self.done = asyncio.Event()

    def open(self) -> Any:
        if self.kind == "unary-stream":
            method = self.channel.unary_stream(
                f"/{SERVICE}/Hold", request_serializer=_identity, response_deserializer=_identity
            )
            return method(b"x", timeout=WAIT)
        done = self.done

        async def requests() -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.wait_for(done.wait(), WAIT)
            yield b"y"

        method = self.channel.stream_stream(
            f"/{SERVICE}/Chat", request_serializer=_identity, response_deserializer=_identity
        )
        return method(requests(), timeout=WAIT)

    def end(self) -> None:
        self.server.release.set()
        self.done.set()


async def async_wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def collect(call: Any) -> list[bytes]:
    return [item async for item in call]


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_stream_over_the_limit_is_rejected_until_the_open_one_ends(
    server: HoldServer, kind: str
) -> None:
    """As the sync test, on a grpc.aio channel."""
    registry = registry_for(server, limits={"max_concurrent_calls": 1})
    limiter = registry.limiters()["dep"]
    uninstall = install(registry)
    streams = AioStreams(server, kind)
    try:
        first = streams.open()
        assert await first.read() == b"x"
        assert (server.requests, limiter.inflight) == (1, 1)
        with pytest.raises(grpc.RpcError) as rejected:
            await asyncio.wait_for(collect(streams.open()), WAIT)
        assert_limit_rejection(rejected.value)
        assert server.requests == 1
        assert limiter.rejected == 1
        streams.end()
        await asyncio.wait_for(collect(first), WAIT)
        await async_wait_until(lambda: limiter.inflight == 0)
        await asyncio.wait_for(collect(streams.open()), WAIT)
        assert server.requests == 2
        await async_wait_until(lambda: limiter.inflight == 0)
        assert limiter.rejected == 1
        assert registry.breaker("dep").snapshot().total_successes == 2
    finally:
        streams.end()
        await streams.channel.close()
        uninstall()


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_cancelled_stream_gives_its_permit_back(server: HoldServer, kind: str) -> None:
    """A grpc.aio stream cancelled while the server holds it releases its permit."""
    registry = registry_for(server, limits={"max_concurrent_calls": 1})
    limiter = registry.limiters()["dep"]
    uninstall = install(registry)
    streams = AioStreams(server, kind)
    try:
        first = streams.open()
        assert await first.read() == b"x"
        assert limiter.inflight == 1
        first.cancel()
        await async_wait_until(lambda: limiter.inflight == 0)
        streams.end()
        await asyncio.wait_for(collect(streams.open()), WAIT)
        assert server.requests == 2
        assert limiter.rejected == 0
    finally:
        streams.end()
        await streams.channel.close()
        uninstall()


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_chaos_errors_reach_no_server(
    server: HoldServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the sync chaos test, on a grpc.aio channel."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(server, chaos={"error_rate": 1.0}, limits={"max_concurrent_calls": 1})
    uninstall = install(registry)
    streams = AioStreams(server, kind)
    streams.end()
    try:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as injected:
                await asyncio.wait_for(collect(streams.open()), WAIT)
            assert injected.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert not isinstance(injected.value, CircuitOpenError)
    finally:
        await streams.channel.close()
        uninstall()
    assert server.requests == 0
    assert registry.chaos_counts()[("dep", "error")] == 2
    assert registry.breaker("dep").snapshot().total_failures == 2
    assert registry.limiters()["dep"].inflight == 0
