"""The one guarded-call path: nested guards join, generators, hooks, durations, retry_after."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from otel_resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    Criticality,
    Dependency,
    Registry,
    State,
)
from otel_resilience._context import GUARDED, is_guarded
from tests.conftest import FakeClock

QUICK = BreakerPolicy(consecutive_failures=2, open_seconds=5)


class Down(ConnectionError):
    pass


def boom() -> None:
    raise Down("refused")


def registry_with(clock: FakeClock, *names: str, **options: object) -> Registry:
    options.setdefault("policy", QUICK)
    return Registry(
        [Dependency(name, **options) for name in names or ("dep",)],  # type: ignore[arg-type]
        clock=clock,
    )


def totals(registry: Registry, name: str = "dep") -> tuple[int, int, int]:
    snap = registry.breaker(name).snapshot()
    return snap.total_successes, snap.total_failures, snap.total_rejected


def open_then_half_open(registry: Registry, clock: FakeClock, name: str = "dep") -> None:
    for _ in range(2):
        with contextlib.suppress(Down):
            registry.call(name, boom, fallback=None)
    assert registry.breaker(name).state is State.OPEN
    clock.advance(5)
    assert registry.breaker(name).state is State.HALF_OPEN


# -- nested guards join the outer call ------------------------------------------------


def test_nested_call_of_the_same_dependency_is_counted_once(clock: FakeClock) -> None:
    """protect around registry.call of the same dependency: one success, one failure."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    @registry.protect("dep")
    def outer(fail: bool) -> str:
        return registry.call("dep", boom if fail else (lambda: "ok"))  # type: ignore[return-value]

    assert outer(False) == "ok"
    with pytest.raises(Down):
        outer(True)
    assert totals(registry) == (1, 1, 0)


def test_half_open_trial_through_nested_guards_closes(clock: FakeClock) -> None:
    """Once half-open, the outer guard takes the one permit and the inner guard joins it,
    so the trial proceeds and closes the breaker (sync protect, call and guard)."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    @registry.protect("dep")
    def outer() -> str:
        with registry.guard("dep"):
            return registry.call("dep", lambda: "ok")

    open_then_half_open(registry, clock)
    assert outer() == "ok"
    assert registry.breaker("dep").state is State.CLOSED


async def test_async_half_open_trial_through_nested_guards_closes(clock: FakeClock) -> None:
    """The same with protect on a coroutine function, acall and async with guard."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    async def answer() -> str:
        await asyncio.sleep(0)
        return "ok"

    @registry.protect("dep")
    async def outer() -> str:
        async with registry.guard("dep"):
            return await registry.acall("dep", answer)

    open_then_half_open(registry, clock)
    assert await outer() == "ok"
    assert registry.breaker("dep").state is State.CLOSED
    assert totals(registry) == (1, 2, 0)


def test_guard_inside_call_joins(clock: FakeClock) -> None:
    """registry.guard inside registry.call of the same dependency records nothing itself."""
    registry = registry_with(clock)

    def work() -> None:
        with registry.guard("dep"):
            raise Down("refused")

    with pytest.raises(Down):
        registry.call("dep", work, fallback=None)
    assert totals(registry) == (0, 1, 0)


def test_a_failure_caught_inside_the_outer_call_still_counts(clock: FakeClock) -> None:
    """A joined call that failed makes the outer call a failure, even when the app caught
    the error and returned normally: the dependency failed in this call."""
    registry = registry_with(clock)

    @registry.protect("dep")
    def tolerant() -> str:
        try:
            registry.call("dep", boom)
        except Down:
            return "default"
        return "fresh"

    assert tolerant() == "default"
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures, snap.last_error_type) == (0, 1, "Down")


def test_an_answer_seen_by_the_inner_guard_counts_as_one(clock: FakeClock) -> None:
    """When the inner guard's rules say an exception is an answer (a business error of the
    dependency), the outer guard counts it as a success even with its own rules."""

    class NotFound(Exception):
        pass

    registry = Registry([Dependency("dep", policy=QUICK, business_errors=(NotFound,))], clock=clock)

    def missing() -> None:
        raise NotFound("no such row")

    @registry.protect("dep", fallback=None)
    def outer() -> None:
        registry.call("dep", missing)

    with pytest.raises(NotFound):
        outer()
    assert totals(registry) == (1, 0, 0)


def test_different_dependencies_nest_and_each_records(clock: FakeClock) -> None:
    """Guards of different dependencies nest: each records its own call, and GUARDED names
    both inside the inner one."""
    registry = registry_with(clock, "api", "cache")
    seen = []

    def inner() -> str:
        seen.append(GUARDED.get())
        # a guard of the outer dependency inside both joins the outer call
        return registry.call("api", lambda: "ok")

    assert registry.call("api", registry.call, "cache", inner) == "ok"
    assert seen == [("api", "cache")]
    assert is_guarded(seen[0], "api")
    assert is_guarded(seen[0], "cache")
    assert not is_guarded(seen[0], "ap")
    assert totals(registry, "api") == (1, 0, 0)
    assert totals(registry, "cache") == (1, 0, 0)
    assert GUARDED.get() is None


def test_joined_inner_call_serves_no_fallback(clock: FakeClock) -> None:
    """The inner guard leaves the fallback to the outer one: a failure is seen by the
    outermost guard, which serves its fallback and counts one failure."""
    registry = registry_with(clock, fallback=lambda *_: "fallback")

    @registry.protect("dep")
    def outer() -> str:
        return registry.call("dep", boom)  # type: ignore[return-value]

    assert outer() == "fallback"
    assert totals(registry) == (0, 1, 0)
    assert registry.fallback_counts() == {("dep", "error"): 1}


# -- generators ------------------------------------------------------------------------


def test_protect_on_a_generator_guards_the_iteration(clock: FakeClock) -> None:
    """Creating the generator records nothing; exhaustion is a success, an exception
    while iterating a failure; GUARDED is set only while the generator's code runs."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    marks = []

    @registry.protect("dep")
    def rows(fail_at: int | None) -> Iterator[int]:
        for index in range(3):
            marks.append(GUARDED.get())
            if index == fail_at:
                raise Down("reset")
            yield index

    iterator = rows(None)
    assert totals(registry) == (0, 0, 0)
    for _ in iterator:
        assert GUARDED.get() is None  # the consumer's code is outside the call
    assert totals(registry) == (1, 0, 0)
    assert marks == ["dep"] * 3
    with pytest.raises(Down):
        list(rows(1))
    assert totals(registry) == (1, 1, 0)


def test_generator_closed_early_is_a_success_and_rejected_one_raises(clock: FakeClock) -> None:
    """A consumer that stops early (break) counts as a success; while open, iteration
    raises CircuitOpenError at its first item."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    @registry.protect("dep")
    def numbers() -> Iterator[int]:
        yield from range(10)

    open_then_half_open(registry, clock)
    for number in numbers():
        if number == 2:
            break
    assert registry.breaker("dep").state is State.CLOSED
    registry.breaker("dep").force_open()
    with pytest.raises(CircuitOpenError):
        next(numbers())


async def test_protect_on_an_async_generator(clock: FakeClock) -> None:
    """Async generators: exhaustion succeeds, an error while iterating fails, and a
    rejected iteration gets the fallback's items."""
    registry = registry_with(clock, fallback=lambda fail: [-1])

    @registry.protect("dep")
    async def rows(fail: bool) -> AsyncIterator[int]:
        for index in range(3):
            await asyncio.sleep(0)
            if fail and index == 1:
                raise Down("reset")
            yield index

    assert [row async for row in rows(False)] == [0, 1, 2]
    with pytest.raises(Down):
        [row async for row in rows(True)]
    with pytest.raises(Down):
        [row async for row in rows(True)]
    assert registry.breaker("dep").state is State.OPEN
    assert [row async for row in rows(False)] == [-1]
    assert registry.fallback_counts() == {("dep", "open"): 1}


# -- hooks on the path -------------------------------------------------------------------


class Limit:
    """A minimal admission step: at most ``slots`` calls at a time."""

    reason = "limit"

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.released: list[tuple[float, bool]] = []

    def acquire(self) -> bool:
        if self.slots == 0:
            return False
        self.slots -= 1
        return True

    def release(self, duration: float, failed: bool) -> None:
        self.slots += 1
        self.released.append((duration, failed))


def test_admission_hook_rejects_with_its_reason(clock: FakeClock) -> None:
    """An admission step can reject a call the breaker admitted: its fallback reason is the
    step's, it is no failure, and every admitted call releases once with its duration."""
    registry = registry_with(
        clock, policy=BreakerPolicy(slow_call_seconds=10), fallback=lambda: "limited"
    )
    limit = Limit(1)
    entry = registry._entry("dep")
    entry.admission = limit
    assert not entry.fast

    def nested() -> str:
        clock.advance(0.5)
        return registry.call("dep", lambda: "second")

    # the first call holds the only slot; a call of another task would be limited
    assert registry.call("dep", nested) == "second"  # nested: joined, no second slot
    assert limit.released == [(0.5, False)]
    limit.slots = 0
    assert registry.call("dep", lambda: "never") == "limited"
    assert registry.fallback_counts() == {("dep", "limit"): 1}
    assert totals(registry) == (1, 0, 0)
    entry.admission = None
    assert entry.fast is False  # slow_call_seconds still needs durations


def test_chaos_hook_injects_the_client_fault_before_the_call(clock: FakeClock) -> None:
    """A chaos step's fault is raised before the call runs and counts as a failure."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)

    class Always:
        def draw(self) -> tuple[float, bool]:
            return 0.0, True

    registry._entry("dep").chaos = Always()
    ran = []
    with pytest.raises(ConnectionError, match="chaos"):
        registry.call("dep", ran.append, 1)
    assert ran == []
    assert totals(registry) == (0, 1, 0)
    registry._entry("dep").chaos = None
    assert registry._entry("dep").fast


# -- retry_after ---------------------------------------------------------------------------


def test_retry_after_is_positive_while_half_open_permits_are_taken(clock: FakeClock) -> None:
    """A call rejected because the half-open permit is taken gets a retry_after of a
    fraction of the open time, never 0."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    open_then_half_open(registry, clock)
    with registry.guard("dep"), pytest.raises(CircuitOpenError) as info:
        # a call of another task or thread (its own context) while this trial holds the permit
        contextvars.Context().run(registry.call, "dep", lambda: None)
    assert info.value.retry_after == pytest.approx(0.5)
    assert "retry after 0.5s" in str(info.value)


def test_breaker_retry_after_is_never_zero(clock: FakeClock) -> None:
    """OPEN: the time left (at least a millisecond); FORCED_OPEN: inf; otherwise a tenth
    of the current open time."""
    breaker = CircuitBreaker("dep", QUICK, clock=clock)
    assert breaker.retry_after() == pytest.approx(0.5)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(4.9999999)
    assert breaker.retry_after() == pytest.approx(0.001)
    breaker.force_open()
    assert breaker.retry_after() == float("inf")


# -- sync timeouts and interpreter exit ----------------------------------------------------

EXIT_SCRIPT = """
import threading
from otel_resilience import BreakerPolicy, Dependency, Registry

registry = Registry([Dependency("dep", policy=BreakerPolicy(call_timeout_seconds=0.1))])
try:
    registry.call("dep", threading.Event().wait)  # hangs forever
except TimeoutError:
    print("timed out", flush=True)
"""


def test_timed_out_sync_call_does_not_keep_the_interpreter_alive() -> None:
    """A sync call stuck past call_timeout_seconds runs on a daemon worker thread: the
    process still exits when its main thread is done."""
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], check=False, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.strip()) == (0, "timed out"), result.stderr


def test_timed_out_sync_call_keeps_the_callers_context(clock: FakeClock) -> None:
    """The worker runs the call in the caller's context (a nested guard joins the call),
    and a stuck worker does not stop the next call from running on another one."""
    registry = registry_with(clock, policy=BreakerPolicy(call_timeout_seconds=0.2))
    release = threading.Event()
    seen = []

    def stuck() -> None:
        seen.append(GUARDED.get())
        release.wait(10)

    with pytest.raises(TimeoutError, match=r"longer than 0\.2s"):
        registry.call("dep", stuck)
    assert registry.call("dep", GUARDED.get) == "dep"
    release.set()
    assert seen == ["dep"]
    assert totals(registry) == (1, 1, 0)


def test_protected_generators_stay_generator_functions(clock: FakeClock) -> None:
    """protect keeps what a function is (frameworks such as FastAPI look), and works on
    methods."""
    registry = registry_with(clock)

    class Repository:
        @registry.protect("dep")
        def rows(self) -> Iterator[int]:
            yield from (1, 2)

        @registry.protect("dep")
        async def arows(self) -> AsyncIterator[int]:
            yield 3

    assert inspect.isgeneratorfunction(Repository.rows)
    assert inspect.isasyncgenfunction(Repository.arows)
    assert list(Repository().rows()) == [1, 2]

    async def collect() -> list[int]:
        return [row async for row in Repository().arows()]

    assert asyncio.run(collect()) == [3]
    assert totals(registry) == (2, 0, 0)


def test_a_guard_object_used_twice_starts_afresh(clock: FakeClock) -> None:
    """A guard kept and entered again admits and records each block on its own."""
    registry = registry_with(clock, criticality=Criticality.CRITICAL)
    guard = registry.guard("dep")
    open_then_half_open(registry, clock)
    with guard:
        pass  # the trial: closes
    with guard:
        pass
    assert totals(registry) == (2, 2, 0)
    assert registry.breaker("dep").state is State.CLOSED


FORK_SCRIPT = """
import os
from otel_resilience import BreakerPolicy, Dependency, Registry

registry = Registry([Dependency("dep", policy=BreakerPolicy(call_timeout_seconds=5))])
assert registry.call("dep", os.getpid) == os.getpid()  # a worker thread, now idle
pid = os.fork()
if pid == 0:
    # the parent's idle worker does not exist here: the child must start its own
    os._exit(0 if registry.call("dep", os.getpid) == os.getpid() else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sync_timeouts_work_in_a_forked_child() -> None:
    """After os.fork, sync calls with call_timeout_seconds run on the child's own workers."""
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], check=False, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr


def test_rejection_of_another_reason_is_also_the_clients_error(clock: FakeClock) -> None:
    """A rejection for a reason registered in REJECTION_ERRORS (a concurrency limit) raises
    an error that is that reason's class and still the client's own connection error."""
    from otel_resilience._guard import REJECTION_ERRORS, Client

    class LimitError(CircuitOpenError):
        pass

    class ClientOpenError(CircuitOpenError, ConnectionResetError):
        pass

    registry = registry_with(clock)
    client = Client("test", open_error=ClientOpenError)
    REJECTION_ERRORS["test-limit"] = LimitError
    try:
        error = client.rejection(registry._entry("dep"), "test-limit", None)
    finally:
        del REJECTION_ERRORS["test-limit"]
    assert isinstance(error, LimitError)
    assert isinstance(error, ConnectionResetError)
    assert error.retry_after > 0
    assert isinstance(client.rejection(registry._entry("dep"), "open", None), ClientOpenError)


def test_a_failing_observer_never_reaches_the_app(clock: FakeClock) -> None:
    """A client's observe hook (the memory cache's write-through) that raises does not turn
    a successful call into an error."""
    from otel_resilience._guard import Client, guarded_call

    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    registry = registry_with(clock)
    client = Client("test", observe=broken)
    assert guarded_call(registry._entry("dep"), client, lambda: "ok", (), {}, None) == "ok"
    assert totals(registry) == (1, 0, 0)


def test_an_exception_the_consumer_throws_in_is_not_a_failure(clock: FakeClock) -> None:
    """gen.throw(exc) that the generator does not handle is the consumer's error, not the
    dependency's; an exception the generator raises itself is a failure."""
    registry = registry_with(clock)

    @registry.protect("dep")
    def numbers() -> Iterator[int]:
        yield 1
        yield 2

    iterator = numbers()
    assert next(iterator) == 1
    with pytest.raises(KeyError):
        iterator.throw(KeyError("consumer"))
    assert totals(registry) == (1, 0, 0)
