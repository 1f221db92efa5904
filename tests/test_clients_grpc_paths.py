"""The grpc guards on the paths around the breaker, against a real grpc server in-process:
targets no dependency names, statuses the server chose, ``.future()`` calls, chaos on
unary calls, streams joining an outer guard, channels that outlive an install, and
response streams that end before they start (closed channel, deadline already passed,
interrupted or cancelled in their chaos delay), which must give their permit back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import grpc
import grpc.aio
import pytest

from otel_resilience import CircuitOpenError, Registry, load_config
from otel_resilience.instrumentation import install
from tests.support.client_servers import SERVICE, GrpcServer
from tests.support.guards import guarded


def _identity(value: bytes) -> bytes:
    return value


@pytest.fixture
def server() -> Iterator[GrpcServer]:
    made = GrpcServer().start()
    try:
        yield made
    finally:
        made.stop()


def registry_for(port: int, **extra: Any) -> Registry:
    chaos = extra.pop("chaos", None)
    config: dict[str, Any] = {
        "dependencies": {
            "dep": {"match": {"server.address": "127.0.0.1", "server.port": port}, **extra}
        }
    }
    if chaos is not None:
        config["chaos"] = {"enabled": True, "dependencies": {"dep": chaos}}
    return load_config(config)


def method(channel: Any, name: str) -> Any:
    """``channel``'s multi-callable for ``test.Echo/name`` (bytes in and out)."""
    kind = {"Unary": "unary_unary", "Stream": "unary_stream", "Collect": "stream_unary"}
    return getattr(channel, kind.get(name, "unary_unary"))(
        f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity
    )


def totals(registry: Registry) -> tuple[int, int, int]:
    snapshot = registry.breaker("dep").snapshot()
    return snapshot.total_successes, snapshot.total_failures, snapshot.total_rejected


def inflight(registry: Registry) -> int:
    return registry.limiters()["dep"].inflight


# -- targets no dependency names -------------------------------------------------------------


def test_sync_calls_to_an_undeclared_target_go_straight_through(server: GrpcServer) -> None:
    """Unary and stream calls on a sync channel to a target no dependency names reach the
    server, with the only declared breaker forced open, and count nowhere."""
    registry = registry_for(1)
    registry.breaker("dep").force_open()
    for _ in guarded(registry):
        with grpc.insecure_channel(server.target) as channel:
            assert method(channel, "Unary")(b"a", timeout=5) == b"a"
            assert list(method(channel, "Stream")(b"b", timeout=5)) == [b"b"] * 3
    assert server.requests == 2
    assert totals(registry) == (0, 0, 0)


async def test_aio_calls_to_an_undeclared_target_go_straight_through(server: GrpcServer) -> None:
    """Unary and stream calls on a grpc.aio channel to a target no dependency names reach
    the server, with the only declared breaker forced open, and count nowhere."""
    registry = registry_for(1)
    registry.breaker("dep").force_open()
    for _ in guarded(registry):
        async with grpc.aio.insecure_channel(server.target) as channel:
            assert await method(channel, "Unary")(b"a", timeout=5) == b"a"
            assert [item async for item in method(channel, "Stream")(b"b", timeout=5)] == [b"b"] * 3
    assert server.requests == 2
    assert totals(registry) == (0, 0, 0)


# -- what a unary call's outcome means -------------------------------------------------------


def test_a_status_the_server_chose_is_an_answer(server: GrpcServer) -> None:
    """A unary call the server answers with a status of its own (UNIMPLEMENTED for a
    method it does not have) raises grpc's error to the application and counts as a
    success of the dependency: the server answered."""
    registry = registry_for(server.port)
    for _ in guarded(registry):
        with (
            grpc.insecure_channel(server.target) as channel,
            pytest.raises(grpc.RpcError) as error,
        ):
            method(channel, "Nope")(b"a", timeout=5)
    assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert totals(registry) == (1, 0, 0)


def test_sync_future_calls_are_admitted_and_rejected_like_blocking_ones(
    server: GrpcServer,
) -> None:
    """A sync ``.future()`` unary call goes through the breaker: while closed it reaches
    the server and counts once (when admitted: its outcome comes later); while open its
    future fails at once with the UNAVAILABLE rejection, and the server sees nothing."""
    registry = registry_for(server.port)
    for _ in guarded(registry):
        with grpc.insecure_channel(server.target) as channel:
            assert method(channel, "Unary").future(b"a", timeout=5).result() == b"a"
            assert totals(registry) == (1, 0, 0)
            registry.breaker("dep").force_open()
            rejected = method(channel, "Unary").future(b"b", timeout=5)
            with pytest.raises(grpc.RpcError) as error:
                rejected.result()
    assert isinstance(error.value, CircuitOpenError)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.requests == 1


def test_chaos_fault_on_a_unary_call_is_an_unavailable_failure(
    server: GrpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Armed chaos with error_rate 1.0 on a sync unary call: grpc's UNAVAILABLE before any
    I/O (the server sees nothing), counted as a failure of the dependency."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(server.port, chaos={"error_rate": 1.0})
    for _ in guarded(registry):
        with (
            grpc.insecure_channel(server.target) as channel,
            pytest.raises(grpc.RpcError) as error,
        ):
            method(channel, "Unary")(b"a", timeout=5)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert not isinstance(error.value, CircuitOpenError)
    assert server.requests == 0
    assert totals(registry) == (0, 1, 0)


# -- streams and installs ------------------------------------------------------------------------


def test_stream_inside_a_guard_of_its_dependency_joins_it(server: GrpcServer) -> None:
    """A response stream read inside ``registry.guard`` of its own dependency joins that
    call: one call is recorded, not two."""
    registry = registry_for(server.port)
    for _ in guarded(registry):
        with grpc.insecure_channel(server.target) as channel, registry.guard("dep"):
            assert list(method(channel, "Stream")(b"a", timeout=5)) == [b"a"] * 3
    assert totals(registry) == (1, 0, 0)


def test_channel_made_while_guarded_is_unguarded_after_uninstall(server: GrpcServer) -> None:
    """A sync channel made while guarded keeps working after the guards are uninstalled,
    unguarded: the forced-open breaker no longer rejects its calls."""
    registry = registry_for(server.port)
    uninstall = install(registry)
    channel = grpc.insecure_channel(server.target)
    try:
        registry.breaker("dep").force_open()
        with pytest.raises(CircuitOpenError):
            method(channel, "Unary")(b"a", timeout=5)
        uninstall()
        assert method(channel, "Unary")(b"b", timeout=5) == b"b"
        assert list(method(channel, "Stream")(b"c", timeout=5)) == [b"c"] * 3
        assert totals(registry) == (0, 0, 1)
    finally:
        uninstall()
        channel.close()


async def test_aio_client_streaming_call_is_guarded(server: GrpcServer) -> None:
    """A grpc.aio client-streaming (stream-unary) call goes through the breaker: one call
    while closed, rejected with UNAVAILABLE before reaching the server while open."""
    registry = registry_for(server.port)
    for _ in guarded(registry):
        async with grpc.aio.insecure_channel(server.target) as channel:
            assert await method(channel, "Collect")(iter([b"a", b"b"]), timeout=5) == b"ab"
            assert totals(registry) == (1, 0, 0)
            registry.breaker("dep").force_open()
            with pytest.raises(grpc.RpcError) as error:
                await method(channel, "Collect")(iter([b"c"]), timeout=5)
    assert isinstance(error.value, CircuitOpenError)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.requests == 1


# -- streams that end before they start: the permit comes back -----------------------------------


def test_sync_stream_on_a_closed_channel_gives_its_permit_back(server: GrpcServer) -> None:
    """A response stream started on a closed sync channel fails with grpc's own error and
    gives its concurrency permit back: the next stream (limit 1) is admitted."""
    registry = registry_for(server.port, limits={"max_concurrent_calls": 1})
    for _ in guarded(registry):
        closed = grpc.insecure_channel(server.target)
        closed.close()
        with pytest.raises(ValueError, match="closed"):
            list(method(closed, "Stream")(b"a", timeout=5))
        assert inflight(registry) == 0
        with grpc.insecure_channel(server.target) as channel:
            assert list(method(channel, "Stream")(b"b", timeout=5)) == [b"b"] * 3
    assert server.requests == 1


async def test_aio_stream_on_a_closed_channel_gives_its_permit_back(server: GrpcServer) -> None:
    """A response stream started on a closed grpc.aio channel fails with grpc's own
    UsageError and gives its concurrency permit back: the next stream is admitted."""
    registry = registry_for(server.port, limits={"max_concurrent_calls": 1})
    for _ in guarded(registry):
        closed = grpc.aio.insecure_channel(server.target)
        await closed.close()
        with pytest.raises(grpc.aio.UsageError):
            [item async for item in method(closed, "Stream")(b"a", timeout=5)]
        assert inflight(registry) == 0
        async with grpc.aio.insecure_channel(server.target) as channel:
            assert [item async for item in method(channel, "Stream")(b"b", timeout=5)] == [b"b"] * 3
    assert server.requests == 1


def test_sync_stream_past_its_deadline_is_a_failure_and_gives_its_permit_back(
    server: GrpcServer,
) -> None:
    """A response stream whose deadline has already passed (a negative timeout: a
    propagated deadline that ran out) ends at once, before or after the guard hooked its
    end (a race): either way it is recorded as a DEADLINE_EXCEEDED failure and gives its
    concurrency permit back."""
    registry = registry_for(server.port, limits={"max_concurrent_calls": 1})
    for _ in guarded(registry):
        with grpc.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.RpcError) as error:
                list(method(channel, "Stream")(b"a", timeout=-1))
            assert error.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert inflight(registry) == 0
            assert totals(registry) == (0, 1, 0)
            assert registry.breaker("dep").snapshot().last_error_type == "DEADLINE_EXCEEDED"
            assert list(method(channel, "Stream")(b"b", timeout=5)) == [b"b"] * 3


class _Stopped(Exception):
    """What a signal handler of the application raises (say, on SIGTERM)."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def test_sync_stream_interrupted_in_its_chaos_delay_gives_its_permit_back(
    server: GrpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync response stream interrupted by a signal handler while chaos delays it never
    reaches the server, records no outcome and gives its concurrency permit back."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(
        server.port,
        chaos={"latency_seconds": 5.0, "latency_rate": 1.0},
        limits={"max_concurrent_calls": 1},
    )
    previous = signal.signal(signal.SIGALRM, _stop)
    try:
        for _ in guarded(registry):
            with grpc.insecure_channel(server.target) as channel:
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                with pytest.raises(_Stopped):
                    list(method(channel, "Stream")(b"a", timeout=10))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert server.requests == 0
    assert inflight(registry) == 0
    assert totals(registry) == (0, 0, 0)


async def test_aio_stream_cancelled_in_its_chaos_delay_gives_its_permit_back(
    server: GrpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grpc.aio response stream cancelled while chaos delays it never reaches the
    server, records no outcome and gives its concurrency permit back."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = registry_for(
        server.port,
        chaos={"latency_seconds": 5.0, "latency_rate": 1.0},
        limits={"max_concurrent_calls": 1},
    )
    for _ in guarded(registry):
        async with grpc.aio.insecure_channel(server.target) as channel:
            call = method(channel, "Stream")(b"a", timeout=10)
            reading = asyncio.ensure_future(call.read())
            await asyncio.sleep(0.1)
            assert inflight(registry) == 1  # admitted, waiting in the chaos delay
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(reading, 5)
            for _ in range(100):
                if inflight(registry) == 0:
                    break
                await asyncio.sleep(0.01)
    assert server.requests == 0
    assert inflight(registry) == 0
    assert totals(registry) == (0, 0, 0)
