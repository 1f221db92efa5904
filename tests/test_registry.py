"""Registry and guarded calls: call, acall, protect, guard, fallbacks, timeouts, errors."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_resilience import (
    BreakerPolicy,
    CircuitOpenError,
    Criticality,
    Dependency,
    Registry,
    State,
    UnknownDependencyError,
)
from tests.conftest import FakeClock

QUICK = BreakerPolicy(consecutive_failures=2, open_seconds=5)


class Down(ConnectionError):
    pass


class NotFound(Exception):
    pass


def boom(*_: object, **__: object) -> None:
    raise Down("refused")


async def aboom(*_: object, **__: object) -> None:
    raise Down("refused")


def registry_with(clock: FakeClock, **dependency: object) -> Registry:
    dependency.setdefault("policy", QUICK)
    return Registry([Dependency("dep", **dependency)], clock=clock)  # type: ignore[arg-type]


def test_call_passes_arguments_and_counts_success(clock: FakeClock) -> None:
    """A closed breaker runs the call with its arguments and records a success."""
    registry = registry_with(clock)
    assert registry.call("dep", lambda a, b=0: a + b, 1, b=2) == 3
    assert registry.breaker("dep").snapshot().total_successes == 1


def test_critical_dependency_fails_fast_when_open(clock: FakeClock) -> None:
    """After the breaker opens, calls raise CircuitOpenError without running."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    for _ in range(2):
        with pytest.raises(Down):
            registry.call("dep", boom)
    ran = []
    with pytest.raises(CircuitOpenError) as info:
        registry.call("dep", lambda: ran.append(1))
    assert ran == []
    assert info.value.dependency == "dep"
    assert info.value.retry_after == pytest.approx(5.0)
    assert "dep" in str(info.value)


def test_optional_dependency_falls_back_on_failure_and_when_open(clock: FakeClock) -> None:
    """An optional dependency's fallback answers failed calls and rejected ones."""
    registry = registry_with(clock, fallback=lambda key: f"cached:{key}")
    assert registry.call("dep", boom, "a") == "cached:a"
    assert registry.call("dep", boom, "b") == "cached:b"
    assert registry.breaker("dep").state is State.OPEN
    assert registry.call("dep", boom, "c") == "cached:c"
    assert registry.fallback_counts() == {("dep", "error"): 2, ("dep", "open"): 1}


def test_per_call_fallback_overrides_and_none_disables(clock: FakeClock) -> None:
    """fallback= on the call wins over the dependency's; fallback=None turns it off."""
    registry = registry_with(clock, fallback=lambda: "dependency")
    assert registry.call("dep", boom, fallback=lambda: "call") == "call"
    with pytest.raises(Down):
        registry.call("dep", boom, fallback=None)


def test_business_errors_count_as_success(clock: FakeClock) -> None:
    """A business error re-raises but counts as a success: the dependency answered."""
    registry = registry_with(clock, business_errors=(NotFound,))

    def missing() -> None:
        raise NotFound("no such row")

    for _ in range(5):
        with pytest.raises(NotFound):
            registry.call("dep", missing)
    snap = registry.breaker("dep").snapshot()
    assert (snap.state, snap.total_successes, snap.total_failures) == (State.CLOSED, 5, 0)


def test_is_failure_predicate_decides(clock: FakeClock) -> None:
    """is_failure decides for exceptions that are not business errors."""
    registry = registry_with(clock, is_failure=lambda exc: not isinstance(exc, KeyError))

    def key_error() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        registry.call("dep", key_error)
    with pytest.raises(Down):
        registry.call("dep", boom)
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures) == (1, 1)


def test_nested_circuit_open_error_is_not_a_failure(clock: FakeClock) -> None:
    """Another breaker's rejection inside a call does not count against this dependency."""
    registry = Registry(
        [
            Dependency("outer", policy=QUICK),
            Dependency("inner", Criticality.CRITICAL, policy=QUICK),
        ],
        clock=clock,
    )
    registry.breaker("inner").force_open()
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            registry.call("outer", registry.call, "inner", lambda: None)
    assert registry.breaker("outer").state is State.CLOSED
    assert registry.breaker("outer").snapshot().total_failures == 0


def test_protect_decorates_sync_functions(clock: FakeClock) -> None:
    """protect() guards every call of a sync function and keeps its metadata."""
    registry = registry_with(clock, criticality="critical")

    @registry.protect("dep")
    def fetch(key: str) -> str:
        """Fetch a key."""
        if key == "bad":
            raise Down("refused")
        return key.upper()

    assert fetch("a") == "A"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a key."
    for _ in range(2):
        with pytest.raises(Down):
            fetch("bad")
    with pytest.raises(CircuitOpenError):
        fetch("a")


async def test_protect_decorates_async_functions(clock: FakeClock) -> None:
    """protect() on a coroutine function returns a coroutine function with a fallback."""
    registry = registry_with(clock)

    @registry.protect("dep", fallback=lambda key: f"fallback:{key}")
    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        raise Down("refused")

    assert asyncio.iscoroutinefunction(fetch)
    assert await fetch("k") == "fallback:k"
    assert await fetch("k") == "fallback:k"
    assert registry.breaker("dep").state is State.OPEN
    assert await fetch("k") == "fallback:k"


async def test_acall_awaits_async_fallbacks(clock: FakeClock) -> None:
    """An async fallback is awaited."""
    registry = registry_with(clock)

    async def fallback() -> str:
        return "async fallback"

    assert await registry.acall("dep", aboom, fallback=fallback) == "async fallback"


async def test_acall_timeout_cancels_and_counts(clock: FakeClock) -> None:
    """With call_timeout_seconds an async call is cancelled at the deadline and counted failed."""
    registry = registry_with(
        clock, policy=BreakerPolicy(call_timeout_seconds=0.05, consecutive_failures=1)
    )
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await registry.acall("dep", hang)
    assert time.monotonic() - started < 5
    assert cancelled.is_set()
    snap = registry.breaker("dep").snapshot()
    assert (snap.state, snap.last_error_type) == (State.OPEN, "TimeoutError")


async def test_acall_timeout_fallback_reason(clock: FakeClock) -> None:
    """A timed-out call of an optional dependency gets its fallback, counted as 'timeout'."""
    registry = registry_with(
        clock, policy=BreakerPolicy(call_timeout_seconds=0.05), fallback=lambda *_: "late"
    )
    assert await registry.acall("dep", asyncio.sleep, 30) == "late"
    assert registry.fallback_counts() == {("dep", "timeout"): 1}


def test_sync_timeout_stops_waiting(clock: FakeClock) -> None:
    """A sync call past call_timeout_seconds raises TimeoutError; the caller stops waiting."""
    registry = registry_with(clock, policy=BreakerPolicy(call_timeout_seconds=0.05))
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"longer than 0\.05s"):
        registry.call("dep", release.wait, 30)
    assert time.monotonic() - started < 5
    release.set()
    assert registry.call("dep", lambda: "quick") == "quick"
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_failures, snap.total_successes) == (1, 1)


async def test_cancelled_trial_reopens(clock: FakeClock) -> None:
    """A half-open trial cancelled by its caller is a failed probe: the breaker re-opens."""
    registry = registry_with(clock, policy=BreakerPolicy(consecutive_failures=1, open_seconds=1))
    with pytest.raises(Down):
        await registry.acall("dep", aboom)
    clock.advance(1)
    task = asyncio.ensure_future(registry.acall("dep", asyncio.sleep, 30))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    breaker = registry.breaker("dep")
    snap = breaker.snapshot()
    assert snap.state is State.OPEN
    assert (snap.total_failures, snap.last_error_type) == (2, "CancelledError")
    assert snap.open_seconds == 2  # a re-open doubles the open time


async def test_cancelled_call_in_closed_is_no_outcome(clock: FakeClock) -> None:
    """A call cancelled while the breaker is closed counts neither way."""
    registry = registry_with(clock)
    task = asyncio.ensure_future(registry.acall("dep", asyncio.sleep, 30))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = registry.breaker("dep").snapshot()
    assert (snap.state, snap.total_successes, snap.total_failures) == (State.CLOSED, 0, 0)


def test_guard_context_manager(clock: FakeClock) -> None:
    """with registry.guard(name) records the block's outcome and rejects when open."""
    registry = registry_with(clock)
    with registry.guard("dep"):
        pass
    for _ in range(2):
        with pytest.raises(Down), registry.guard("dep"):
            raise Down("refused")
    with pytest.raises(CircuitOpenError), registry.guard("dep"):
        pytest.fail("a rejected block must not run")
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures, snap.total_rejected) == (1, 2, 1)


async def test_async_guard(clock: FakeClock) -> None:
    """async with registry.guard(name) works the same way."""
    registry = registry_with(clock)
    async with registry.guard("dep"):
        await asyncio.sleep(0)
    with pytest.raises(Down):
        async with registry.guard("dep"):
            raise Down("refused")
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures) == (1, 1)


def test_slow_calls_are_timed(clock: FakeClock) -> None:
    """With slow_call_seconds the guard measures the call on the registry's clock (a fake
    clock moved inside the call) and records it as slow."""
    registry = registry_with(
        clock,
        policy=BreakerPolicy(slow_call_seconds=0.01, minimum_calls=2, slow_call_rate_threshold=1.0),
    )
    registry.call("dep", clock.advance, 0.02)
    registry.call("dep", clock.advance, 0.02)
    snap = registry.breaker("dep").snapshot()
    assert snap.total_slow == 2
    assert snap.state is State.OPEN


def test_unknown_dependency_names_the_known_ones(clock: FakeClock) -> None:
    """An unknown name is a KeyError naming it, a close match and the known names."""
    registry = Registry([Dependency("redis"), Dependency("postgres")], clock=clock)
    with pytest.raises(UnknownDependencyError) as info:
        registry.call("redsi", lambda: None)
    message = str(info.value)
    assert "'redsi'" in message
    assert "did you mean 'redis'" in message
    assert "postgres, redis" in message
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError):
        registry.guard("nope")


def test_duplicate_dependency_is_refused() -> None:
    """Declaring a name twice is an error."""
    with pytest.raises(ValueError, match="'redis' is declared twice"):
        Registry([Dependency("redis"), Dependency("redis")])


def test_critical_dependency_cannot_have_a_fallback() -> None:
    """A critical dependency fails fast, so a fallback on it is refused."""
    with pytest.raises(ValueError, match="critical"):
        Dependency("db", Criticality.CRITICAL, fallback=lambda: None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": " "}, "dependency name must be a non-empty string, got ' '"),
        (
            {"criticality": "vital"},
            "criticality must be one of critical, important, optional, monitoring, got 'vital'",
        ),
        ({"criticality": 3}, "criticality must be one of .*, got 3"),
        ({"match": "db.system=redis"}, "'d': match must be a mapping of attribute to value"),
        ({"match": {"": "redis"}}, "'d': match key must be a string, got ''"),
        ({"match": {"db.system": None}}, "'d': match.db.system must be a string or number"),
        ({"match": {"server.port": [6379]}}, "'d': match.server.port must be a string or number"),
        ({"policy": {"open_seconds": 3}}, "'d': policy must be a BreakerPolicy"),
        ({"fallback": "no.such.module:fn"}, "'d': cannot import module 'no.such.module'"),
        (
            {"fallback": "tests.fallbacks_for_tests:exploding"},
            "'d': reading 'exploding' of module 'tests.fallbacks_for_tests' raised RuntimeError",
        ),
        ({"fallback": "memoryy"}, "'d': unknown built-in fallback 'memoryy'; built-ins: memory,"),
        ({"fallback": 5}, "'d': fallback must be a callable, a built-in name \\(memory, none\\)"),
        ({"business_errors": ("NotFound",)}, "'d': business_errors must be exception types"),
        ({"is_failure": True}, "'d': is_failure must be callable, got True"),
        ({"limits": {"max_concurrent_calls": 4}}, "'d': limits must be a LimitPolicy"),
        ({"retry_budget": 0.2}, "'d': retry_budget must be a RetryBudgetPolicy, got 0.2"),
    ],
)
def test_dependency_refuses_bad_arguments_naming_them(
    arguments: dict[str, object], message: str
) -> None:
    """Dependency(...) built in code refuses each bad argument with a ValueError that names
    the dependency, the argument and the value given."""
    arguments.setdefault("name", "d")
    with pytest.raises(ValueError, match=message):
        Dependency(**arguments)  # type: ignore[arg-type]


async def test_registry_refuses_what_is_not_a_dependency_and_names_unknown_ones() -> None:
    """Registry() refuses anything but Dependency objects; acall() of an unknown name raises
    UnknownDependencyError (a KeyError) naming the known ones; the repr lists them."""
    with pytest.raises(TypeError, match="expected a Dependency, got 'redis'"):
        Registry(["redis"])  # type: ignore[list-item]
    registry = Registry([Dependency("redis")], service="svc")
    assert repr(registry) == "<Registry service='svc' dependencies=['redis']>"

    async def call() -> None:
        return None

    with pytest.raises(UnknownDependencyError, match="redis") as info:
        await registry.acall("redsi", call)
    assert isinstance(info.value, KeyError)


def test_memory_fallback_by_name_is_a_cache_of_its_own() -> None:
    """fallback="memory" in code gives each dependency a memory cache of its own."""
    from otel_resilience._memory_cache import MemoryCache

    first, second = Dependency("a", fallback="memory"), Dependency("b", fallback="memory")
    assert isinstance(first.fallback, MemoryCache)
    assert isinstance(second.fallback, MemoryCache)
    assert first.fallback is not second.fallback


def test_dependency_normalises_what_it_is_given() -> None:
    """A criticality by name in any case, a number matched as text, and one business error
    type given alone are accepted as their normal forms."""
    dependency = Dependency(
        "d", criticality=" Important ", match={"net.peer.port": 6379}, business_errors=NotFound
    )
    assert dependency.criticality is Criticality.IMPORTANT
    assert dependency.match == {"server.port": "6379"}
    assert dependency.business_errors == (NotFound,)


def test_classify_across_semconv_generations() -> None:
    """classify matches old and new attribute names and URL hosts; first match wins; a URL
    that does not parse matches nothing (and raises nothing)."""
    registry = Registry(
        [
            Dependency("cache", match={"db.system": "redis", "server.port": 6380}),
            Dependency("redis", match={"db.system": "redis"}),
            Dependency("pg", match={"db.system.name": "postgresql"}),
            Dependency("api", match={"server.address": "api.internal"}),
        ]
    )
    assert registry.classify({"db.system": "redis", "net.peer.port": 6380}) == "cache"
    assert registry.classify({"db.system.name": "redis", "server.port": "6379"}) == "redis"
    assert registry.classify({"db.system": "postgresql"}) == "pg"
    assert registry.classify({"http.url": "https://api.internal:8443/v1"}) == "api"
    assert registry.classify({"url.full": "http://api.internal/x"}) == "api"
    assert registry.classify({"net.peer.name": "api.internal"}) == "api"
    assert registry.classify({"db.system": "mysql"}) is None
    assert registry.classify({"http.url": "not a url ::"}) is None
    assert registry.classify({"url.full": "http://[api.internal/x"}) is None  # unparsable


_URL_PARTS = st.sampled_from(
    [
        "http:",
        "https:",
        "",
        "//",
        "/",
        "api.internal",
        "other.internal",
        ":8443",
        ":80",
        "?q=1",
        "#f",
        "@",
        "user@",
        "[::1]",
        "%2F",
        "x",
        "/v1",
        "//api.internal",
        "api.internal?x=/y",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_URL_PARTS, max_size=8).map("".join), min_size=1, max_size=12))
def test_memoised_url_classification_is_the_uncached_answer(urls: list[str]) -> None:
    """classify caches by a prefix of the URL: whatever URLs came before (sharing a prefix
    or not), each answer is what matching the URL afresh gives."""
    registry = Registry(
        [
            Dependency("api", match={"server.address": "api.internal", "server.port": 8443}),
            Dependency("plain", match={"server.address": "api.internal"}),
            Dependency("other", match={"server.address": "other.internal"}),
        ]
    )
    classifier = registry._classifier
    for url in urls:
        for key in ("url.full", "http.url"):
            attributes = {key: url}
            assert registry.classify(attributes) == classifier.match(attributes), url


def test_registry_iterates_in_declaration_order() -> None:
    """Iteration, len and membership follow the declarations."""
    registry = Registry([Dependency("b"), Dependency("a")])
    assert [d.name for d in registry] == ["b", "a"]
    assert len(registry) == 2
    assert "a" in registry
    assert registry["a"].criticality is Criticality.OPTIONAL


def test_circuit_open_error_pickles() -> None:
    """CircuitOpenError survives pickling (multiprocessing, task queues)."""
    error = pickle.loads(pickle.dumps(CircuitOpenError("redis", 2.5)))
    assert (error.dependency, error.retry_after) == ("redis", 2.5)


def test_protect_before_the_dependency_is_declared() -> None:
    """A function decorated before its dependency exists binds it on first call."""
    registry = Registry()

    @registry.protect("late")
    def work() -> str:
        return "done"

    with pytest.raises(UnknownDependencyError):
        work()
    registry.add(Dependency("late"))
    assert work() == "done"
    assert registry.breaker("late").snapshot().total_successes == 1
