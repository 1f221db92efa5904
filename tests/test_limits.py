"""Concurrency limits: static and adaptive (gradient2, vegas) limiters, pure."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import (
    CircuitOpenError,
    ConcurrencyLimitError,
    ConfigError,
    Registry,
    load_config,
)
from otel_resilience._limits import (
    ConcurrencyLimiter,
    Gradient2Limit,
    LimitAlgorithm,
    LimitPolicy,
)
from otel_resilience._metrics import ResilienceMetrics
from otel_resilience.instrumentation import install
from tests.support.health_servers import RedisServer, redis_server
from tests.test_metrics import points

BASE_RTT = 0.010


def saturate(algorithm: LimitAlgorithm, rtt: float, samples: int) -> list[float]:
    """Feed ``samples`` calls of latency ``rtt`` made while the limit is fully used."""
    limits = []
    for _ in range(samples):
        algorithm.update(rtt, int(algorithm.limit))
        limits.append(algorithm.limit)
    return limits


def adaptive(kind: str) -> LimitAlgorithm:
    return LimitPolicy(adaptive=kind, min=4, max=200, initial=20).algorithm(random.Random(7))


# -- static ----------------------------------------------------------------------------


def test_static_limit_admits_up_to_the_limit_and_gives_permits_back() -> None:
    """max_concurrent_calls: N admitted at once, the next rejected, admitted again after a
    release; rejections are counted."""
    limiter = ConcurrencyLimiter(LimitPolicy(max_concurrent_calls=2))
    assert limiter.reason == "limit"
    assert limiter.acquire()
    assert limiter.acquire()
    assert not limiter.acquire()
    assert (limiter.inflight, limiter.rejected, limiter.limit) == (2, 1, 2)
    limiter.release()
    assert limiter.acquire()
    limiter.release()
    limiter.release()
    assert limiter.inflight == 0
    limiter.release()  # an extra release never takes inflight below zero
    assert limiter.inflight == 0
    assert not limiter.timed


# -- adaptive ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_limit_falls_when_latency_rises_tenfold_and_recovers(kind: str) -> None:
    """At steady latency under full use the limit grows; ten times the latency drives it
    down (towards min); back at the old latency it grows again. (Over a longer spell both
    algorithms take the new latency as the new baseline, as Netflix's do.)"""
    algorithm = adaptive(kind)
    steady = saturate(algorithm, BASE_RTT, 200)
    assert steady[-1] > 20
    before = algorithm.limit
    slow = saturate(algorithm, BASE_RTT * 10, 120)
    assert slow[-1] < before / 2
    assert min(slow) >= 4
    low = algorithm.limit
    recovered = saturate(algorithm, BASE_RTT, 200)
    assert recovered[-1] > low * 2
    assert max(recovered) <= 200


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_limit_stays_within_min_and_max(kind: str) -> None:
    """However long latency stays high or low, the limit stays in [min, max]."""
    algorithm = adaptive(kind)
    assert 4 <= min(saturate(algorithm, BASE_RTT, 2000)) <= max(saturate(algorithm, 0.001, 500))
    assert algorithm.limit <= 200
    for _ in range(300):
        algorithm.update(BASE_RTT * 50, int(algorithm.limit))
        assert algorithm.limit >= 4


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_an_idle_dependency_does_not_move_the_limit(kind: str) -> None:
    """Calls made far below the limit (app-limited) say nothing about it: no change."""
    algorithm = adaptive(kind)
    algorithm.update(BASE_RTT, 1)
    for rtt in (BASE_RTT, BASE_RTT * 10, BASE_RTT):
        for _ in range(50):
            algorithm.update(rtt, 2)
    assert algorithm.limit == 20


def test_gradient2_follows_the_long_to_short_latency_ratio() -> None:
    """gradient2 shrinks by at most half a step when short-term latency jumps, and its
    long-term baseline moves towards the new latency over time."""
    algorithm = Gradient2Limit(minimum=1, maximum=1000, initial=100)
    saturate(algorithm, BASE_RTT, 50)
    long_before = algorithm.long_rtt
    limit = algorithm.limit
    algorithm.update(BASE_RTT * 10, int(limit))
    # gradient clamps at 0.5: limit * (0.8 + 0.2 * 0.5) + 0.2 * queue_size
    assert algorithm.limit == pytest.approx(limit * 0.9 + 0.8)
    assert algorithm.long_rtt > long_before


def test_adaptive_limiter_learns_only_from_successful_calls() -> None:
    """The limiter passes durations of successful calls to the algorithm; failed calls
    only give their permit back."""
    limiter = ConcurrencyLimiter(LimitPolicy(adaptive="gradient2", min=1, max=50, initial=2))
    assert limiter.timed
    for _ in range(30):
        assert limiter.acquire()
        assert limiter.acquire()
        limiter.release(BASE_RTT, failed=False)
        limiter.release(BASE_RTT, failed=False)
    grown = limiter.limit
    assert grown > 2
    for _ in range(30):
        assert limiter.acquire()
        assert limiter.acquire()
        limiter.release(BASE_RTT * 100, failed=True)
        limiter.release(BASE_RTT * 100, failed=True)
    assert limiter.limit == grown


def test_initial_defaults_to_20_within_min_and_max() -> None:
    """Without initial, an adaptive limit starts at 20, or the nearest bound."""
    assert LimitPolicy(adaptive="vegas").initial == 20
    assert LimitPolicy(adaptive="vegas", max=8).initial == 8
    assert LimitPolicy(adaptive="vegas", min=50, max=100).initial == 50
    assert ConcurrencyLimiter(LimitPolicy(adaptive="vegas", max=8)).limit == 8


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "max_concurrent_calls or adaptive"),
        ({"max_concurrent_calls": 0}, "max_concurrent_calls"),
        ({"max_concurrent_calls": -3}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 10**9}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 2.5}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 4, "adaptive": "vegas"}, "cannot be combined"),
        ({"adaptive": "aimd"}, "adaptive must be one of gradient2, vegas"),
        ({"adaptive": "vegas", "min": 0}, "min"),
        ({"adaptive": "vegas", "min": 50, "max": 10}, "min must be <= max"),
        ({"adaptive": "gradient2", "initial": 500}, "initial"),
        ({"adaptive": "gradient2", "max": 10**7}, "max"),
        ({"adaptive": "gradient2", "min": 2, "max": 8, "initial": 9}, "initial"),
    ],
)
def test_bad_limits_name_the_field(values: dict[str, object], field: str) -> None:
    """Zero, negative, fractional or absurd limits, and contradictory ones, are refused."""
    with pytest.raises(ValueError, match=field):
        LimitPolicy(**values)  # type: ignore[arg-type]


# -- enforced on real calls: an own redis-server, paused with SIGSTOP --------------------


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as own:
        yield own


def redis_registry(server: RedisServer, **extra: Any) -> Registry:
    return load_config(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis", "server.port": server.port},
                    "breaker": {"consecutive_failures": 2, "open_seconds": 30},
                    "limits": {"max_concurrent_calls": 1},
                    **extra,
                }
            }
        }
    )


def client_for(server: RedisServer, **kwargs: Any) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5, retry=Retry(NoBackoff(), 0), **kwargs)


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_second_call_is_rejected_at_once_while_the_first_hangs(server: RedisServer) -> None:
    """max_concurrent_calls 1 and a SIGSTOPped redis-server: while one call hangs, a second
    fails at once with ConcurrencyLimitError, which is also an open-circuit error and
    redis' ConnectionError; it is counted as rejected (limit), not as a failure, and once
    the server answers, calls go through again."""
    registry = redis_registry(server)
    uninstall = install(registry)
    try:
        client = client_for(server)
        assert client.set("k", "v")
        limiter = registry.limiters()["cache"]
        server.pause()
        outcome: list[Any] = []
        hanging = threading.Thread(target=lambda: outcome.append(client.get("k")))
        hanging.start()
        try:
            wait_until(lambda: limiter.inflight == 1)
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError) as rejected:
                client_for(server).get("k")
            assert time.monotonic() - started < 1.0  # at once: no I/O, no timeout waited for
            assert isinstance(rejected.value, ConcurrencyLimitError)
            assert isinstance(rejected.value, CircuitOpenError)
            assert rejected.value.retry_after > 0
        finally:
            server.resume()
            hanging.join(10)
        assert outcome == [b"v"]
        assert client.get("k") == b"v"
    finally:
        uninstall()
    snapshot = registry.breaker("cache").snapshot()
    assert (snapshot.total_failures, snapshot.total_rejected) == (0, 0)
    assert snapshot.state.value == "closed"
    assert limiter.rejected == 1
    assert limiter.inflight == 0


def test_rejection_gets_the_fallback(server: RedisServer) -> None:
    """An optional dependency with the memory fallback: the call over the limit is
    answered from the cache instead, counted as a fallback of reason limit."""
    registry = redis_registry(server, criticality="optional", fallback="memory")
    uninstall = install(registry)
    try:
        client = client_for(server)
        assert client.set("k", "v")
        assert client.get("k") == b"v"  # seen by the cache
        limiter = registry.limiters()["cache"]
        server.pause()
        hanging = threading.Thread(target=client.get, args=("k",))
        hanging.start()
        try:
            wait_until(lambda: limiter.inflight == 1)
            assert client_for(server).get("k") == b"v"
        finally:
            server.resume()
            hanging.join(10)
    finally:
        uninstall()
    assert registry.fallback_counts() == {("cache", "limit"): 1}


async def test_async_redis_calls_share_the_limit(server: RedisServer) -> None:
    """redis.asyncio: with one call hanging in a task, another task's call is rejected at
    once; the hanging one completes when the server resumes."""
    registry = redis_registry(server)
    uninstall = install(registry)
    try:
        first = redis.asyncio.Redis(port=server.port, socket_timeout=5, retry=None)
        second = redis.asyncio.Redis(port=server.port, socket_timeout=5, retry=None)
        assert await first.set("k", "v")
        limiter = registry.limiters()["cache"]
        server.pause()
        hanging = asyncio.ensure_future(first.get("k"))
        try:
            while limiter.inflight < 1:
                await asyncio.sleep(0.005)
            with pytest.raises(redis.exceptions.ConnectionError) as rejected:
                await asyncio.wait_for(second.get("k"), 1.0)
            assert isinstance(rejected.value, ConcurrencyLimitError)
        finally:
            server.resume()
        assert await asyncio.wait_for(hanging, 10) == b"v"
        await first.aclose()
        await second.aclose()
    finally:
        uninstall()
    assert limiter.rejected == 1


def test_call_protect_and_guard_enforce_the_limit() -> None:
    """registry.call, protect and guard all take a permit: while one call is inside,
    the others are rejected with ConcurrencyLimitError (or get the call's fallback)."""
    registry = load_config({"dependencies": {"svc": {"limits": {"max_concurrent_calls": 1}}}})
    inside, leave = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        leave.wait(5)
        return "done"

    @registry.protect("svc")
    def protected() -> str:
        return "protected"

    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(registry.call("svc", slow)))
    worker.start()
    try:
        assert inside.wait(5)
        with pytest.raises(ConcurrencyLimitError) as rejected:
            registry.call("svc", lambda: "never")
        assert rejected.value.dependency == "svc"
        with pytest.raises(ConcurrencyLimitError):
            protected()
        with pytest.raises(ConcurrencyLimitError), registry.guard("svc"):
            pytest.fail("a rejected guard block must not run")
        assert registry.call("svc", lambda: "never", fallback=lambda: "fallback") == "fallback"
    finally:
        leave.set()
        worker.join(5)
    assert results == ["done"]
    assert protected() == "protected"
    assert registry.limiters()["svc"].rejected == 4
    assert registry.fallback_counts() == {("svc", "limit"): 1}
    assert registry.breaker("svc").snapshot().total_failures == 0


async def test_acall_enforces_the_limit() -> None:
    """await registry.acall: a second concurrent call is rejected at once."""
    registry = load_config({"dependencies": {"svc": {"limits": {"max_concurrent_calls": 1}}}})
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    first = asyncio.ensure_future(registry.acall("svc", slow))
    await asyncio.sleep(0.01)
    with pytest.raises(ConcurrencyLimitError):
        await registry.acall("svc", slow)
    release.set()
    assert await first == "done"
    assert registry.limiters()["svc"].inflight == 0


def test_adaptive_limit_is_configured_and_reported() -> None:
    """limits.adaptive makes an adaptive limiter starting at initial."""
    registry = load_config(
        {"dependencies": {"db": {"limits": {"adaptive": "gradient2", "min": 2, "max": 64}}}}
    )
    limiter = registry.limiters()["db"]
    assert limiter.timed
    assert limiter.limit == 20
    assert registry["db"].limits == LimitPolicy(adaptive="gradient2", min=2, max=64, initial=20)


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ({"max_concurrent_calls": 0}, "dependencies.db.limits.max_concurrent_calls"),
        ({"max_concurrent_calls": -5}, "dependencies.db.limits.max_concurrent_calls"),
        ({"max_concurrent_calls": 10**9}, "dependencies.db.limits.max_concurrent_calls"),
        ({"adaptive": "aimd"}, "dependencies.db.limits.adaptive"),
        ({"adaptive": "vegas", "min": 0}, "dependencies.db.limits.min"),
        ({"adaptive": "vegas", "max": 10**9}, "dependencies.db.limits.max"),
        ({"adaptive": "vegas", "min": 10, "max": 5}, "dependencies.db.limits"),
        ({"max_concurrent_calls": 4, "adaptive": "vegas"}, "dependencies.db.limits"),
        ({}, "dependencies.db.limits"),
        ({"max_concurent_calls": 4}, "dependencies.db.limits.max_concurent_calls"),
    ],
)
def test_bad_limits_are_config_errors_naming_the_key(limits: Any, key: str) -> None:
    """Zero, negative, absurd, unknown or contradictory limits fail at load."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config({"dependencies": {"db": {"limits": limits}}})


def test_limit_metrics_report_limit_inflight_and_rejections() -> None:
    """The limit and in-flight gauges report each limited dependency; a rejection is
    counted as outcome=rejected with reject.reason=limit, and the fallback as reason limit."""
    registry = load_config(
        {
            "dependencies": {
                "svc": {"limits": {"max_concurrent_calls": 1}},
                "other": {},
            }
        }
    )
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    ResilienceMetrics(provider).attach(registry)
    inside, leave = threading.Event(), threading.Event()

    def slow() -> None:
        inside.set()
        leave.wait(5)

    worker = threading.Thread(target=registry.call, args=("svc", slow))
    worker.start()
    try:
        assert inside.wait(5)
        assert registry.call("svc", lambda: "never", fallback=lambda: "fallback") == "fallback"
        found = points(reader)
    finally:
        leave.set()
        worker.join(5)
    assert found["resilience.dependency.concurrency.limit"] == [({"dependency.name": "svc"}, 1)]
    assert found["resilience.dependency.concurrency.inflight"] == [({"dependency.name": "svc"}, 1)]
    rejected = {
        (a["dependency.name"], a["reject.reason"]): v
        for a, v in found["resilience.dependency.calls"]
        if a["outcome"] == "rejected" and a["dependency.name"] != "telemetry"
    }
    assert rejected == {("svc", "open"): 0, ("svc", "limit"): 1, ("other", "open"): 0}
    fallbacks = {
        (a["dependency.name"], a["reason"]): v for a, v in found["resilience.dependency.fallbacks"]
    }
    assert fallbacks == {("svc", "limit"): 1}


def test_reload_changes_limits_and_keeps_calls_in_flight() -> None:
    """registry.reload: a new limit applies at once (rejections counted on), a call
    admitted under the old limiter gives its permit back to it, and removing limits
    takes the step away."""
    config: dict[str, Any] = {"dependencies": {"svc": {"limits": {"max_concurrent_calls": 1}}}}
    registry = load_config(config)
    inside, leave = threading.Event(), threading.Event()

    def slow() -> None:
        inside.set()
        leave.wait(5)

    old = registry.limiters()["svc"]
    worker = threading.Thread(target=registry.call, args=("svc", slow))
    worker.start()
    try:
        assert inside.wait(5)
        with pytest.raises(ConcurrencyLimitError):
            registry.call("svc", lambda: None)
        config["dependencies"]["svc"]["limits"] = {"max_concurrent_calls": 2}
        registry.reload(config)
        new = registry.limiters()["svc"]
        assert new is not old
        assert (new.limit, new.rejected) == (2, 1)
        assert registry.call("svc", lambda: "admitted") == "admitted"
    finally:
        leave.set()
        worker.join(5)
    assert (old.inflight, new.inflight) == (0, 0)
    registry.reload(config)
    assert registry.limiters()["svc"] is new  # unchanged policy: same limiter, same state
    del config["dependencies"]["svc"]["limits"]
    registry.reload(config)
    assert registry.limiters() == {}
    assert registry._entry("svc").admission is None
    assert registry._entry("svc").fast


class _Hanging(BaseHTTPRequestHandler):
    """Answers 200, after ``release`` is set; counts the requests it got."""

    release = threading.Event()
    requests = 0

    def do_GET(self) -> None:
        _Hanging.requests += 1
        _Hanging.release.wait(5)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_httpx_calls_over_the_limit_fail_with_httpx_own_error() -> None:
    """The same limit through another client's guard: while one httpx request hangs, a
    second fails at once with an error that is httpx.ConnectError and
    ConcurrencyLimitError; the server never sees it."""
    _Hanging.release.clear()
    _Hanging.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    registry = load_config(
        {
            "dependencies": {
                "api": {
                    "match": {"server.address": "127.0.0.1", "server.port": port},
                    "limits": {"max_concurrent_calls": 1},
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        limiter = registry.limiters()["api"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            results: list[int] = []
            first = threading.Thread(target=lambda: results.append(client.get("/").status_code))
            first.start()
            try:
                wait_until(lambda: limiter.inflight == 1)
                with pytest.raises(httpx.ConnectError) as rejected:
                    client.get("/")
                assert isinstance(rejected.value, ConcurrencyLimitError)
            finally:
                _Hanging.release.set()
                first.join(10)
            assert results == [200]
    finally:
        uninstall()
        server.shutdown()
        server.server_close()
    assert limiter.rejected == 1
    assert _Hanging.requests == 1
    assert registry.breaker("api").snapshot().total_failures == 0


def test_many_threads_never_exceed_the_limit() -> None:
    """16 threads hammering a dependency limited to 3: never more than 3 calls inside at
    once, every call either ran or was rejected, and the permits all come back."""
    registry = load_config({"dependencies": {"svc": {"limits": {"max_concurrent_calls": 3}}}})
    lock = threading.Lock()
    inside = 0
    most = 0
    ran = 0

    def work() -> None:
        nonlocal inside, most, ran
        with lock:
            inside += 1
            most = max(most, inside)
            ran += 1
        time.sleep(0.001)
        with lock:
            inside -= 1

    rejected = 0

    def hammer() -> None:
        nonlocal rejected
        for _ in range(50):
            try:
                registry.call("svc", work)
            except ConcurrencyLimitError:
                with lock:
                    rejected += 1

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    limiter = registry.limiters()["svc"]
    assert most <= 3
    assert ran + rejected == 16 * 50
    assert limiter.rejected == rejected > 0
    assert limiter.inflight == 0
