"""What retry budgets, concurrency limits and chaos drills cost a guarded call.

The claim to check: with none of them configured, a call on a closed breaker costs what
it cost before they existed (the budget reads the breaker's counters only when a retry is
asked for; the limit and chaos steps are off the fast path). So the same trivial function
is called, in one process, through:

- ``registry.call`` of this tree with nothing configured, and of a baseline tree
  (``--baseline REV``, default ``main``: exported with ``git archive`` and imported under
  another name): the paired difference is what this tree adds when unconfigured;
- ``registry.call`` with a static limit, an adaptive (gradient2) limit, and an armed chaos
  drill that injects almost nothing (an error rate of 0.0001): what each costs when
  configured;
- ``registry.retry_allowed`` (per retry asked, not per call);
- pybreaker and circuitbreaker, the peers, on the same function.

Run through the shared harness (``_harness.py``): pinned to one CPU, each block timed in
this thread's CPU time, rounds interleaved in rotating order; differences are paired
round by round and their median printed.

    python benchmarks/beyond_overhead.py [--calls 200000] [--rounds 11] [--baseline main]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _harness as harness  # beside this script, so on sys.path when it runs
import circuitbreaker
import pybreaker

from otel_resilience import load_config

ROOT = Path(__file__).resolve().parent.parent


def trivial(value: int = 1) -> int:
    return value


async def atrivial(value: int = 1) -> int:
    return value


def load_baseline(rev: str, into: Path) -> Any:
    """``otel_resilience`` as of ``rev``, imported as ``otel_resilience_baseline``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "otel_resilience"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    (into / "otel_resilience").rename(into / "otel_resilience_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("otel_resilience_baseline")


def registries(baseline: Any) -> dict[str, Any]:
    plain = {"dependencies": {"dep": {}}}
    os.environ["OTEL_RESILIENCE_CHAOS"] = "1"
    try:
        drill = load_config(
            {
                "dependencies": {"dep": {}},
                "chaos": {
                    "enabled": True,
                    "dependencies": {"dep": {"error_rate": 0.0001, "latency_rate": 0.0}},
                },
            }
        )
    finally:
        del os.environ["OTEL_RESILIENCE_CHAOS"]
    return {
        "baseline": baseline.load_config(plain),
        "unconfigured": load_config(plain),
        "static": load_config(
            {"dependencies": {"dep": {"limits": {"max_concurrent_calls": 1000}}}}
        ),
        "adaptive": load_config(
            {"dependencies": {"dep": {"limits": {"adaptive": "gradient2", "max": 1000}}}}
        ),
        "chaos": drill,
    }


def sync_contenders(regs: dict[str, Any]) -> dict[str, Callable[[], object]]:
    drill_call = regs["chaos"].call

    def drilled() -> object:
        try:
            return drill_call("dep", trivial)
        except ConnectionError:  # the rare injected fault (1 in 10000)
            return None

    return {
        "bare call": trivial,
        "registry.call, baseline": functools.partial(regs["baseline"].call, "dep", trivial),
        "registry.call, nothing configured": functools.partial(
            regs["unconfigured"].call, "dep", trivial
        ),
        "registry.call, static limit": functools.partial(regs["static"].call, "dep", trivial),
        "registry.call, adaptive limit (gradient2)": functools.partial(
            regs["adaptive"].call, "dep", trivial
        ),
        "registry.call, chaos armed (rate 1e-4)": drilled,
        "registry.retry_allowed (per retry)": functools.partial(
            regs["unconfigured"].retry_allowed, "dep"
        ),
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial),
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(trivial),
    }


def async_contenders(regs: dict[str, Any]) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "bare await": atrivial,
        "registry.acall, baseline": functools.partial(regs["baseline"].acall, "dep", atrivial),
        "registry.acall, nothing configured": functools.partial(
            regs["unconfigured"].acall, "dep", atrivial
        ),
        "registry.acall, static limit": functools.partial(regs["static"].acall, "dep", atrivial),
        "registry.acall, adaptive limit (gradient2)": functools.partial(
            regs["adaptive"].acall, "dep", atrivial
        ),
    }


def measure_sync(contenders: dict[str, Callable[[], object]], calls: int, rounds: int) -> Any:
    samples = harness.Samples()
    for order in harness.orders(list(contenders), rounds):
        for name in order:
            fn = contenders[name]
            start = time.thread_time_ns()
            for _ in range(calls):
                fn()
            samples.add(name, (time.thread_time_ns() - start) / calls / 1000)
    return samples


def measure_async(
    contenders: dict[str, Callable[[], Awaitable[object]]], calls: int, rounds: int
) -> Any:
    async def run() -> Any:
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


def report(samples: Any, bare: str, baseline: str) -> str:
    rows: list[list[object]] = []
    for name in samples.values:
        overhead = None if name == bare else statistics.median(samples.difference(name, bare))
        versus = (
            None
            if name in (bare, baseline)
            else statistics.median(samples.difference(name, baseline))
        )
        rows.append([name, samples.best(name), samples.median(name), overhead, versus])
    return harness.table(
        [
            "contender",
            "best µs/call",
            "median µs/call",
            "median overhead µs",
            "median paired difference to the baseline µs",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    args = parser.parse_args()
    harness.pin_client()
    with tempfile.TemporaryDirectory() as tmp:
        regs = registries(load_baseline(args.baseline, Path(tmp)))
        sync = measure_sync(sync_contenders(regs), args.calls, args.rounds)
        asynchronous = measure_async(async_contenders(regs), args.calls, args.rounds)
    print(harness.machine_line(), end="\n\n")
    print(
        f"{args.calls} calls per block, {args.rounds} interleaved rounds, thread CPU time; "
        f"baseline: {args.baseline}.\n"
    )
    print("**sync**\n")
    print(report(sync, "bare call", "registry.call, baseline"))
    print("\n**async**\n")
    print(report(asynchronous, "bare await", "registry.acall, baseline"))


if __name__ == "__main__":
    main()
