"""Per-call cost of a closed breaker: otel_resilience against circuitbreaker, purgatory,
pybreaker (sync) and aiobreaker, purgatory (async), on the same trivial function.

Run through the shared harness (``_harness.py``): the process is pinned to one CPU, each
block of calls is timed in this thread's CPU time, rounds are interleaved in rotating
order, and each contender's overhead (its time minus the bare call's in the same round)
is divided by the fastest peer's overhead of that round; the best and the median of those
paired ratios are printed.

    python benchmarks/breaker_overhead.py [--calls 200000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness  # beside this script, so on sys.path when it runs


def trivial(value: int = 1) -> int:
    return value


async def atrivial(value: int = 1) -> int:
    return value


SYNC_PEER = "circuitbreaker"
ASYNC_PEER = "aiobreaker"


def breaker_decorator(breaker: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The breaker's own closed path as a decorator, the way circuitbreaker's works:
    ask, call, record. (``protect`` and ``registry.call`` add the guarded-call path on top:
    the joined-call mark that nested guards and the span processor need, fallbacks.)"""
    from otel_resilience import CircuitOpenError

    allow, success, failure = breaker.allow, breaker.record_success, breaker.record_failure

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not allow():
                raise CircuitOpenError(breaker.name, breaker.retry_after())
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                failure(0.0, type(exc).__name__)
                raise
            success()
            return result

        return wrapper

    return decorate


def sync_contenders() -> dict[str, Callable[[], object]]:
    import circuitbreaker
    import pybreaker
    from purgatory import SyncCircuitBreakerFactory

    from otel_resilience import BreakerPolicy, CircuitBreaker, Dependency, Registry

    registry = Registry([Dependency("dep", policy=BreakerPolicy())])
    call = registry.call
    return {
        "bare call": trivial,
        "otel_resilience CircuitBreaker (allow, call, record)": breaker_decorator(
            CircuitBreaker("dep")
        )(trivial),
        "otel_resilience protect": registry.protect("dep")(trivial),
        "otel_resilience registry.call": functools.partial(call, "dep", trivial),
        SYNC_PEER: circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial),
        "purgatory": SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)("dep")(trivial),
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(trivial),
    }


def async_contenders() -> dict[str, Callable[[], Awaitable[object]]]:
    import aiobreaker
    from purgatory import AsyncCircuitBreakerFactory

    from otel_resilience import (
        BreakerPolicy,
        CircuitBreaker,
        CircuitOpenError,
        Dependency,
        Registry,
    )

    registry = Registry([Dependency("dep", policy=BreakerPolicy())])
    acall = registry.acall
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=datetime.timedelta(seconds=30))
    breaker = CircuitBreaker("dep")

    def async_breaker(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        allow, success, failure = breaker.allow, breaker.record_success, breaker.record_failure

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not allow():
                raise CircuitOpenError(breaker.name, breaker.retry_after())
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                failure(0.0, type(exc).__name__)
                raise
            success()
            return result

        return wrapper

    return {
        "bare await": atrivial,
        "otel_resilience CircuitBreaker (allow, await, record)": async_breaker(atrivial),
        "otel_resilience protect (async)": registry.protect("dep")(atrivial),
        "otel_resilience registry.acall": functools.partial(acall, "dep", atrivial),
        ASYNC_PEER: aio(atrivial),
        "purgatory (async)": AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)("dep")(
            atrivial
        ),
    }


def time_sync(fn: Callable[[], object], calls: int) -> float:
    """Wall µs per call of ``fn`` over ``calls`` calls (used by beyond_overhead.py)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


async def time_async(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Wall µs per awaited call of ``fn`` (used by beyond_overhead.py)."""
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6


def measure_sync(calls: int, rounds: int) -> harness.Samples:
    contenders = sync_contenders()
    samples = harness.Samples()
    for order in harness.orders(list(contenders), rounds):
        for name in order:
            fn = contenders[name]
            start = time.thread_time_ns()
            for _ in range(calls):
                fn()
            samples.add(name, (time.thread_time_ns() - start) / calls / 1000)
    return samples


def measure_async(calls: int, rounds: int) -> harness.Samples:
    contenders = async_contenders()

    async def run() -> harness.Samples:
        samples = harness.Samples()
        for order in harness.orders(list(contenders), rounds):
            for name in order:
                fn = contenders[name]
                start = time.thread_time_ns()
                for _ in range(calls):
                    await fn()
                samples.add(name, (time.thread_time_ns() - start) / calls / 1000)
        return samples

    return asyncio.run(run())


def report(samples: harness.Samples, bare: str, peer: str, target: float) -> str:
    overhead = {name: samples.difference(name, bare) for name in samples.values if name != bare}
    rows: list[list[object]] = [[bare, samples.best(bare), samples.median(bare), 0.0, "", "", ""]]
    for name in sorted(overhead, key=lambda name: statistics.median(overhead[name])):
        ratios = [
            ours / theirs for ours, theirs in zip(overhead[name], overhead[peer], strict=True)
        ]
        ours = name.startswith("otel_resilience")
        rows.append(
            [
                name,
                samples.best(name),
                samples.median(name),
                statistics.median(overhead[name]),
                "1" if name == peer else min(ratios),
                "1" if name == peer else statistics.median(ratios),
                f"<= {target}" if ours else "",
            ]
        )
    return harness.table(
        [
            "contender",
            "best µs/call",
            "median µs/call",
            "median overhead µs",
            f"best paired overhead ratio to {peer}",
            f"median paired overhead ratio to {peer}",
            "target",
        ],
        rows,
    )


def section(calls: int, rounds: int) -> str:
    """Both tables, with a line saying how they were measured."""
    sync = measure_sync(calls, rounds)
    asynchronous = measure_async(calls, rounds)
    return "\n".join(
        [
            f"{calls} calls per block, {rounds} interleaved rounds, thread CPU time; overhead "
            "is a contender's time minus the bare call's in the same round.",
            "",
            "**sync**",
            "",
            report(sync, "bare call", SYNC_PEER, 0.5),
            "",
            "**async**",
            "",
            report(asynchronous, "bare await", ASYNC_PEER, 0.4),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    harness.pin_client()
    print(harness.machine_line(), end="\n\n")
    print(section(args.calls, args.rounds))


if __name__ == "__main__":
    main()
