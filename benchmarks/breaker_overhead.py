"""Per-call cost of a closed breaker: otel_resilience against pybreaker, circuitbreaker,
purgatory and aiobreaker, in one process, on the same trivial function.

Rounds are interleaved (every contender once per round) and the best round counts, so a
noisy neighbour hurts everyone alike. Printed: microseconds per call, the overhead over
the bare call, and each figure as a ratio to the fastest peer.

    python benchmarks/breaker_overhead.py [--calls 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import time
from collections.abc import Awaitable, Callable

import aiobreaker
import circuitbreaker
import pybreaker
from purgatory import AsyncCircuitBreakerFactory, SyncCircuitBreakerFactory

from otel_resilience import BreakerPolicy, Dependency, Registry


def trivial(value: int = 1) -> int:
    return value


async def atrivial(value: int = 1) -> int:
    return value


def sync_contenders() -> dict[str, Callable[[], object]]:
    registry = Registry([Dependency("dep", policy=BreakerPolicy())])
    call = registry.call
    protected = registry.protect("dep")(trivial)
    pybreaker_cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    purgatory_factory = SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    return {
        "bare call": trivial,
        "otel_resilience registry.call": lambda: call("dep", trivial),
        "otel_resilience protect": protected,
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial),
        "purgatory": purgatory_factory("dep")(trivial),
        "pybreaker": pybreaker_cb(trivial),
    }


def async_contenders() -> dict[str, Callable[[], Awaitable[object]]]:
    registry = Registry([Dependency("dep", policy=BreakerPolicy())])
    acall = registry.acall
    protected = registry.protect("dep")(atrivial)
    aiobreaker_cb = aiobreaker.CircuitBreaker(
        fail_max=5, timeout_duration=datetime.timedelta(seconds=30)
    )
    purgatory_factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    return {
        "bare await": atrivial,
        "otel_resilience registry.acall": lambda: acall("dep", atrivial),
        "otel_resilience protect (async)": protected,
        "aiobreaker": aiobreaker_cb(atrivial),
        "purgatory (async)": purgatory_factory("dep")(atrivial),
    }


def time_sync(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


async def time_async(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6


def best_of(rounds: int, measure: Callable[[str], float], names: list[str]) -> dict[str, float]:
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for name in names:
            best[name] = min(best[name], measure(name))
    return best


def report(title: str, best: dict[str, float], bare: str, ours: list[str]) -> list[str]:
    base = best[bare]
    peers = {name: us for name, us in best.items() if name != bare and name not in ours}
    fastest_peer = min(peers, key=peers.__getitem__)
    lines = [
        f"### {title}",
        "",
        f"| contender | µs per call | overhead µs | ratio to fastest peer ({fastest_peer}) |",
        "|---|---:|---:|---:|",
    ]
    for name, us in sorted(best.items(), key=lambda item: item[1]):
        overhead = us - base
        ratio = "" if name == bare else f"{overhead / (peers[fastest_peer] - base):.2f}"
        lines.append(f"| {name} | {us:.3f} | {overhead:.3f} | {ratio} |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    sync = sync_contenders()
    sync_best = best_of(args.rounds, lambda name: time_sync(sync[name], args.calls), list(sync))

    async_fns = async_contenders()

    async def measure_async() -> dict[str, float]:
        best = dict.fromkeys(async_fns, float("inf"))
        for _ in range(args.rounds):
            for name, fn in async_fns.items():
                best[name] = min(best[name], await time_async(fn, args.calls))
        return best

    async_best = asyncio.run(measure_async())

    lines = [
        f"Measured {datetime.date.today()} on {platform.python_implementation()} "
        f"{platform.python_version()}, {args.calls} calls x best of {args.rounds} interleaved "
        "rounds. Ratios compare overheads (per-call time minus the bare call).",
        "",
    ]
    lines += report(
        "sync", sync_best, "bare call", ["otel_resilience registry.call", "otel_resilience protect"]
    )
    lines += report(
        "async",
        async_best,
        "bare await",
        ["otel_resilience registry.acall", "otel_resilience protect (async)"],
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
