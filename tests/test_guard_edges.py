"""The guarded-call path (``_guard.py``) at its edges, through the public API: predicates
that raise, guards of several dependencies nested, permits given back (half-open trials,
concurrency slots), chaos on every kind of call, generators joined, closed early and
served by fallbacks, guard blocks that are timed, and the worker threads of calls with a
timeout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from otel_resilience import (
    BreakerPolicy,
    CircuitOpenError,
    ConcurrencyLimitError,
    Criticality,
    Dependency,
    Registry,
    State,
)
from otel_resilience._guard import MISSING, NOT_SERVED, PLAIN, _Workers
from tests.conftest import FakeClock

QUICK = BreakerPolicy(consecutive_failures=2, open_seconds=5)


class Down(ConnectionError):
    pass


def boom(*args: Any) -> None:
    raise Down("refused")


def registry_with(clock: FakeClock, *names: str, **options: Any) -> Registry:
    options.setdefault("policy", QUICK)
    return Registry([Dependency(name, **options) for name in names or ("dep",)], clock=clock)


def configured(clock: FakeClock, **dependency: Any) -> Registry:
    dependency.setdefault("breaker", {"consecutive_failures": 2, "open_seconds": 5})
    return Registry.from_config({"dependencies": {"dep": dependency}}, clock=clock)


def totals(registry: Registry, name: str = "dep") -> tuple[int, int, int]:
    snap = registry.breaker(name).snapshot()
    return snap.total_successes, snap.total_failures, snap.total_rejected


def open_then_half_open(registry: Registry, clock: FakeClock) -> None:
    for _ in range(2):
        with contextlib.suppress(Down):
            registry.call("dep", boom, fallback=None)
    assert registry.breaker("dep").state is State.OPEN
    clock.advance(5)
    assert registry.breaker("dep").state is State.HALF_OPEN


# -- what an exception means ---------------------------------------------------------------


def test_an_is_failure_predicate_that_raises_counts_a_failure(clock: FakeClock) -> None:
    """A dependency's ``is_failure`` predicate that itself raises: the call counts as a
    failure, and the application gets the call's own exception, not the predicate's."""

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in the predicate")

    registry = registry_with(clock, criticality=Criticality.CRITICAL, is_failure=broken)
    with pytest.raises(KeyError):
        registry.call("dep", {}.__getitem__, "missing")
    assert totals(registry) == (0, 1, 0)


def test_another_breakers_rejection_in_a_half_open_trial_gives_the_permit_back(
    clock: FakeClock,
) -> None:
    """A half-open trial that ends in another dependency's CircuitOpenError has no outcome
    here: its permit is given back, so the next call is the trial that closes the breaker."""
    registry = registry_with(clock, "dep", "other", criticality=Criticality.CRITICAL)
    open_then_half_open(registry, clock)
    registry.breaker("other").force_open()
    with pytest.raises(CircuitOpenError) as error:
        registry.call("dep", registry.call, "other", lambda: None)
    assert error.value.dependency == "other"
    assert registry.breaker("dep").state is State.HALF_OPEN
    assert registry.call("dep", lambda: "ok") == "ok"
    assert registry.breaker("dep").state is State.CLOSED


# -- guards of several dependencies nest ---------------------------------------------------


def test_three_dependencies_nest_and_each_records_once(clock: FakeClock) -> None:
    """A call of ``c`` inside ``guard("b")`` inside ``guard("a")``, and ``a`` again
    inside: each of the three records its own call once; the inner ``a`` joins."""
    registry = registry_with(clock, "a", "b", "c", criticality=Criticality.CRITICAL)
    with registry.guard("a"), registry.guard("b"):
        assert registry.call("c", registry.call, "a", lambda: "deep") == "deep"
    assert [totals(registry, name) for name in "abc"] == [(1, 0, 0)] * 3


async def test_async_calls_nest_across_dependencies(clock: FakeClock) -> None:
    """``await acall("b")`` inside ``async with guard("a")``: both record one call; a
    failure of ``b`` is ``b``'s and, raised through the block, ``a``'s too."""
    registry = registry_with(clock, "a", "b", criticality=Criticality.CRITICAL)

    async def ok() -> str:
        return "ok"

    async def down() -> None:
        raise Down("reset")

    async with registry.guard("a"):
        assert await registry.acall("b", ok) == "ok"
    with pytest.raises(Down):
        async with registry.guard("a"):
            await registry.acall("b", down)
    assert (totals(registry, "a"), totals(registry, "b")) == ((1, 1, 0), (1, 1, 0))


# -- permits and slots come back -----------------------------------------------------------


async def test_a_limit_rejecting_a_half_open_trial_gives_the_trial_permit_back(
    clock: FakeClock,
) -> None:
    """Half-open with two trial permits and a concurrency limit of one, the first trial
    holding the slot: a trial the limit rejects gives its breaker permit back, so the next
    one is again the limit's to reject (not the breaker's), and once the first trial
    succeeds a further call is the trial that closes the breaker."""
    registry = configured(
        clock,
        criticality="critical",
        breaker={"consecutive_failures": 2, "open_seconds": 5, "half_open_calls": 2},
        limits={"max_concurrent_calls": 1},
    )
    open_then_half_open(registry, clock)
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "first"

    first = asyncio.ensure_future(registry.acall("dep", held))
    await asyncio.sleep(0)  # the first trial holds the only slot
    for _ in range(2):
        with pytest.raises(ConcurrencyLimitError):
            await registry.acall("dep", asyncio.sleep, 0)
    release.set()
    assert await first == "first"
    assert registry.breaker("dep").state is State.HALF_OPEN
    assert await registry.acall("dep", asyncio.sleep, 0, "third") == "third"
    assert registry.breaker("dep").state is State.CLOSED


def test_a_failed_call_gives_its_concurrency_slot_back(clock: FakeClock) -> None:
    """A call that fails under a concurrency limit of one releases its slot: the next
    call is admitted (and its failure counted) instead of being rejected by the limit."""
    registry = configured(clock, criticality="critical", limits={"max_concurrent_calls": 1})
    for _ in range(2):
        with pytest.raises(Down):
            registry.call("dep", boom)
    assert totals(registry) == (0, 2, 0)
    assert registry.limiters()["dep"].inflight == 0


# -- chaos on every kind of call -----------------------------------------------------------


def test_chaos_with_nothing_drawn_leaves_the_call_alone(clock: FakeClock) -> None:
    """Chaos armed with no fault to inject this time: the call runs as usual and counts
    as a success; nothing is counted as injected."""
    registry = registry_with(clock)
    with registry.chaos("dep", error_rate=0.0, latency_seconds=0.0):
        assert registry.call("dep", lambda: "ok") == "ok"
    assert totals(registry) == (1, 0, 0)
    assert registry.chaos_counts().get(("dep", "error"), 0) == 0


async def test_chaos_fault_on_an_async_call_comes_before_the_call(clock: FakeClock) -> None:
    """An injected fault on ``acall``: ConnectionError before the function runs, counted
    as a failure."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    ran: list[int] = []

    async def record() -> None:
        ran.append(1)

    with registry.chaos("dep", error_rate=1.0), pytest.raises(ConnectionError, match="chaos"):
        await registry.acall("dep", record)
    assert ran == []
    assert totals(registry) == (0, 1, 0)


def test_chaos_on_a_protected_generator_delays_then_faults_before_it_starts(
    clock: FakeClock,
) -> None:
    """Chaos on a protected generator: the latency is spent before the generator's code
    runs, and an injected fault is raised at the first ``next`` without running it."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    started: list[int] = []

    @registry.protect("dep")
    def numbers() -> Iterator[int]:
        started.append(1)
        yield 1

    with registry.chaos("dep", latency_seconds=0.01):
        begun = time.monotonic()
        assert list(numbers()) == [1]
        assert time.monotonic() - begun >= 0.01
    with registry.chaos("dep", error_rate=1.0), pytest.raises(ConnectionError):
        next(numbers())
    assert started == [1]
    assert totals(registry) == (1, 1, 0)


async def test_chaos_on_a_protected_async_generator_delays_then_faults_before_it_starts(
    clock: FakeClock,
) -> None:
    """As for generators, on an async generator."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    started: list[int] = []

    @registry.protect("dep")
    async def numbers() -> AsyncIterator[int]:
        started.append(1)
        yield 1

    with registry.chaos("dep", latency_seconds=0.01):
        begun = time.monotonic()
        assert [item async for item in numbers()] == [1]
        assert time.monotonic() - begun >= 0.01
    with registry.chaos("dep", error_rate=1.0), pytest.raises(ConnectionError):
        await numbers().__anext__()
    assert started == [1]
    assert totals(registry) == (1, 1, 0)


def test_chaos_on_a_guard_block_delays_then_faults_before_it_runs(clock: FakeClock) -> None:
    """Chaos on ``with registry.guard``: the latency is spent on entry, an injected fault
    raised on entry (the block never runs) and counted as a failure."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    ran: list[int] = []
    with registry.chaos("dep", latency_seconds=0.01):
        begun = time.monotonic()
        with registry.guard("dep"):
            ran.append(1)
        assert time.monotonic() - begun >= 0.01
    with (
        registry.chaos("dep", error_rate=1.0),
        pytest.raises(ConnectionError),
        registry.guard("dep"),
    ):
        ran.append(2)
    assert ran == [1]
    assert totals(registry) == (1, 1, 0)


async def test_chaos_on_an_async_guard_block_delays_then_faults_before_it_runs(
    clock: FakeClock,
) -> None:
    """As for ``with``, on ``async with registry.guard``."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    ran: list[int] = []
    with registry.chaos("dep", latency_seconds=0.01):
        begun = time.monotonic()
        async with registry.guard("dep"):
            ran.append(1)
        assert time.monotonic() - begun >= 0.01
    with registry.chaos("dep", error_rate=1.0), pytest.raises(ConnectionError):
        async with registry.guard("dep"):
            ran.append(2)
    assert ran == [1]
    assert totals(registry) == (1, 1, 0)


# -- generators ----------------------------------------------------------------------------


def test_a_generator_inside_a_guard_of_its_dependency_joins_it(clock: FakeClock) -> None:
    """A protected generator iterated inside ``guard`` of its own dependency joins the
    block: one call for both; its failure, caught inside the block, still fails it."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    @registry.protect("dep")
    def numbers(fail: bool) -> Iterator[int]:
        yield 1
        if fail:
            raise Down("reset")

    with registry.guard("dep"):
        assert list(numbers(False)) == [1]
    with registry.guard("dep"), contextlib.suppress(Down):
        list(numbers(True))
    assert totals(registry) == (1, 1, 0)


async def test_an_async_generator_inside_a_guard_of_its_dependency_joins_it(
    clock: FakeClock,
) -> None:
    """As for generators, on an async generator inside ``async with guard``."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    @registry.protect("dep")
    async def numbers(fail: bool) -> AsyncIterator[int]:
        yield 1
        if fail:
            raise Down("reset")

    async with registry.guard("dep"):
        assert [item async for item in numbers(False)] == [1]
    async with registry.guard("dep"):
        with contextlib.suppress(Down):
            [item async for item in numbers(True)]
    assert totals(registry) == (1, 1, 0)


def test_generator_failing_before_its_first_item_is_served_by_the_fallback(
    clock: FakeClock,
) -> None:
    """A protected generator that fails before yielding anything gets the fallback's
    items (reason ``error``); the failure counts."""
    registry = registry_with(clock, fallback=lambda: iter([-1, -2]))

    @registry.protect("dep")
    def numbers() -> Iterator[int]:
        raise Down("refused")
        yield 0  # pragma: no cover - a generator function

    assert list(numbers()) == [-1, -2]
    assert registry.fallback_counts() == {("dep", "error"): 1}
    assert totals(registry) == (0, 1, 0)


async def test_async_generator_failing_before_its_first_item_is_served_by_the_fallback(
    clock: FakeClock,
) -> None:
    """As for generators, on an async generator; the fallback may return an async
    iterable."""

    async def stand_in() -> AsyncIterator[int]:
        yield -1

    registry = registry_with(clock, fallback=stand_in)

    @registry.protect("dep")
    async def numbers() -> AsyncIterator[int]:
        raise Down("refused")
        yield 0  # pragma: no cover - an async generator function

    assert [item async for item in numbers()] == [-1]
    assert registry.fallback_counts() == {("dep", "error"): 1}
    assert totals(registry) == (0, 1, 0)


async def test_async_generator_closed_early_is_a_success_and_closes_the_inner_one(
    clock: FakeClock,
) -> None:
    """Breaking out of a protected async generator (``aclose``) closes the inner
    generator (its ``finally`` runs) and counts a success."""
    registry = registry_with(clock)
    closed: list[bool] = []

    @registry.protect("dep")
    async def numbers() -> AsyncIterator[int]:
        try:
            for number in range(10):
                yield number
        finally:
            closed.append(True)

    iterator: Any = numbers()
    assert await iterator.__anext__() == 0
    await iterator.aclose()
    assert closed == [True]
    assert totals(registry) == (1, 0, 0)


# -- timed blocks --------------------------------------------------------------------------


def test_a_slow_guard_block_is_timed_by_the_registry_clock(clock: FakeClock) -> None:
    """A ``guard`` block of a dependency with ``slow_call_seconds`` is timed by the
    registry's clock: a block longer than that is a slow call."""
    registry = registry_with(clock, policy=BreakerPolicy(slow_call_seconds=1.0))
    with registry.guard("dep"):
        clock.advance(0.5)
    with registry.guard("dep"):
        clock.advance(2.0)
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_slow) == (1, 1)


# -- worker threads of calls with a timeout ------------------------------------------------


def test_timed_calls_run_in_a_worker_and_raise_its_exception(clock: FakeClock) -> None:
    """A sync call with ``call_timeout_seconds`` runs in a worker thread: its exception
    reaches the caller and counts as a failure; the next call reuses the idle worker."""
    registry = registry_with(
        clock,
        criticality=Criticality.CRITICAL,
        policy=BreakerPolicy(call_timeout_seconds=5.0, consecutive_failures=5),
    )
    with pytest.raises(Down):
        registry.call("dep", boom)
    # Workers left idle by earlier tests may take a call too: what counts is that the
    # calls run off the caller's thread and that no call starts a thread while one idles.
    threads = threading.active_count()
    idents = {registry.call("dep", threading.get_ident) for _ in range(20)}
    assert threading.get_ident() not in idents
    assert threading.active_count() <= threads  # an idle worker may leave meanwhile
    assert totals(registry) == (20, 1, 0)


def test_an_idle_worker_leaves_after_its_idle_time() -> None:
    """A worker thread with no job for ``IDLE_SECONDS`` leaves, so a process that stops
    making timed calls keeps no threads for them."""
    workers = _Workers()
    workers.IDLE_SECONDS = 0.05
    assert workers.submit(lambda: "done").result(timeout=5) == "done"
    deadline = time.monotonic() + 5
    while workers._threads:
        assert time.monotonic() < deadline, "the idle worker did not leave"
        time.sleep(0.01)
    assert workers.submit(lambda: "again").result(timeout=5) == "again"


def test_path_values_read_well_in_logs_and_debuggers() -> None:
    """The sentinels and client declarations have readable reprs."""
    assert (repr(MISSING), repr(NOT_SERVED)) == ("MISSING", "NOT_SERVED")
    assert repr(PLAIN) == "<Client plain>"


async def test_values_and_exceptions_reach_a_protected_async_generator(
    clock: FakeClock,
) -> None:
    """``asend`` and ``athrow`` reach a protected async generator's own code, as ``send``
    and ``throw`` do for generators: an exception it handles goes on, one it does not
    handle reaches the consumer and is no failure of the dependency."""
    registry = registry_with(clock)
    seen: list[Any] = []

    @registry.protect("dep")
    async def numbers() -> AsyncIterator[int]:
        try:
            seen.append((yield 1))
        except KeyError:
            yield 2
        yield 3

    iterator: Any = numbers()
    assert await iterator.__anext__() == 1
    assert await iterator.asend("sent") == 3
    assert seen == ["sent"]
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
    iterator = numbers()
    assert await iterator.__anext__() == 1
    assert await iterator.athrow(KeyError("handled")) == 2
    with pytest.raises(ValueError, match="consumer"):
        await iterator.athrow(ValueError("consumer"))
    assert totals(registry) == (2, 0, 0)
