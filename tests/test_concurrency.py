"""Many threads and many asyncio tasks on one breaker: counts stay consistent."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from otel_resilience import BreakerPolicy, CircuitBreaker, Criticality, Dependency, Registry, State

THREADS = 8
CALLS = 2_000


def test_threads_keep_counts_consistent() -> None:
    """Concurrent records from many threads add up exactly in the totals and the window."""
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(
            window_size=THREADS * CALLS,
            consecutive_failures=None,
            minimum_calls=1,
            failure_rate_threshold=1.0,
        ),
    )
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        barrier.wait()
        for call in range(CALLS):
            assert breaker.allow()
            if (index + call) % 4 == 0:
                breaker.record_failure()
            else:
                breaker.record_success()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    snap = breaker.snapshot()
    assert snap.total_successes + snap.total_failures == THREADS * CALLS
    assert snap.total_failures == THREADS * CALLS // 4
    assert (snap.calls, snap.failures) == (THREADS * CALLS, THREADS * CALLS // 4)
    assert snap.state is State.CLOSED


def test_half_open_admits_exactly_the_permits_across_threads() -> None:
    """With many threads racing for half-open permits, exactly half_open_calls win."""
    clock_value = [0.0]
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(consecutive_failures=1, open_seconds=1, half_open_calls=3),
        clock=lambda: clock_value[0],
    )
    breaker.record_failure()
    clock_value[0] = 1.0
    barrier = threading.Barrier(THREADS)
    admitted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        results = [breaker.allow() for _ in range(50)]
        with lock:
            admitted.extend(results)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(admitted) == 3
    assert breaker.snapshot().total_rejected == THREADS * 50 - 3


def test_lock_is_not_held_across_the_call() -> None:
    """A slow protected call in one thread does not stop another thread's call."""
    registry = Registry([Dependency("dep", Criticality.OPTIONAL)])
    inside = threading.Event()
    release = threading.Event()

    def slow() -> str:
        inside.set()
        assert release.wait(10)
        return "slow"

    thread = threading.Thread(target=registry.call, args=("dep", slow))
    thread.start()
    assert inside.wait(10)
    # the first call is still running: a second one goes through at once
    assert registry.call("dep", lambda: "fast") == "fast"
    release.set()
    thread.join(10)
    assert registry.breaker("dep").snapshot().total_successes == 2


async def test_asyncio_tasks_keep_counts_consistent() -> None:
    """Hundreds of tasks interleaving at awaits give exact counts."""
    registry = Registry(
        [
            Dependency(
                "dep",
                policy=BreakerPolicy(
                    consecutive_failures=None, window_size=1000, failure_rate_threshold=1.0
                ),
            )
        ]
    )

    async def work(index: int) -> int:
        await asyncio.sleep(0)
        if index % 5 == 0:
            raise ConnectionError("down")
        return index

    async def one(index: int) -> None:
        with contextlib.suppress(ConnectionError):
            await registry.acall("dep", work, index, fallback=None)

    await asyncio.gather(*(one(i) for i in range(500)))
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures) == (400, 100)
    assert snap.calls == 500


async def test_nested_guards_in_many_tasks_count_each_call_once() -> None:
    """Hundreds of interleaving tasks, each a protected call with a nested acall and a
    guard block of the same dependency: every task's call is one outcome, and the
    joined-call context of one task never leaks into another."""
    registry = Registry(
        [
            Dependency(
                "dep",
                policy=BreakerPolicy(
                    consecutive_failures=None, window_size=1000, failure_rate_threshold=1.0
                ),
            )
        ]
    )

    async def work(index: int) -> int:
        await asyncio.sleep(0)
        async with registry.guard("dep"):
            await asyncio.sleep(0)
        if index % 5 == 0:
            raise ConnectionError("down")
        return index

    @registry.protect("dep", fallback=None)
    async def outer(index: int) -> int:
        await asyncio.sleep(0)
        return await registry.acall("dep", work, index)

    async def one(index: int) -> None:
        with contextlib.suppress(ConnectionError):
            await outer(index)

    await asyncio.gather(*(one(i) for i in range(500)))
    snap = registry.breaker("dep").snapshot()
    assert (snap.total_successes, snap.total_failures) == (400, 100)


def test_nested_guards_in_many_threads_count_each_call_once() -> None:
    """The same across threads: each thread's nested guards join only its own call."""
    registry = Registry([Dependency("dep", Criticality.OPTIONAL)])
    barrier = threading.Barrier(THREADS)

    @registry.protect("dep")
    def outer() -> str:
        with registry.guard("dep"):
            return registry.call("dep", lambda: "ok")

    def worker() -> None:
        barrier.wait()
        for _ in range(200):
            assert outer() == "ok"

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert registry.breaker("dep").snapshot().total_successes == THREADS * 200
