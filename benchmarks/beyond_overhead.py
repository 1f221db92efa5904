"""What retry budgets, concurrency limits and chaos drills cost a guarded call.

The claim to check: with none of them configured, a call on a closed breaker costs what
it cost before they existed (the budget reads the breaker's counters only when a retry is
asked for; the limit and chaos steps are off the fast path). So the same trivial function
is called, in one process, through:

- ``registry.call`` of this tree with nothing configured, and of a baseline tree
  (``--baseline REV``, default ``main``: exported with ``git archive`` and imported under
  another name) — the difference is what this tree adds when unconfigured;
- ``registry.call`` with a static limit, an adaptive (gradient2) limit, and an armed chaos
  drill that injects nothing (rates of 0.0001): what each costs when configured;
- ``registry.retry_allowed`` (per retry asked, not per call);
- pybreaker and circuitbreaker, the peers, on the same function.

Rounds are interleaved and the best round counts. Printed: µs per call, the overhead over
the bare call, and the difference to the baseline.

    python benchmarks/beyond_overhead.py [--calls 200000] [--rounds 7] [--baseline main] [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import circuitbreaker
import pybreaker
from breaker_overhead import time_async, time_sync  # this folder is on sys.path

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
    def through(registry: Any) -> Callable[[], object]:
        call = registry.call
        return lambda: call("dep", trivial)

    def drilled() -> object:
        try:
            return drill_call("dep", trivial)
        except ConnectionError:  # the rare injected fault (1 in 10000)
            return None

    drill_call = regs["chaos"].call
    retry_allowed = regs["unconfigured"].retry_allowed
    return {
        "bare call": trivial,
        "registry.call, baseline": through(regs["baseline"]),
        "registry.call, nothing configured": through(regs["unconfigured"]),
        "registry.call, static limit": through(regs["static"]),
        "registry.call, adaptive limit (gradient2)": through(regs["adaptive"]),
        "registry.call, chaos armed (rate 1e-4)": drilled,
        "registry.retry_allowed (per retry)": lambda: retry_allowed("dep"),
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial),
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(trivial),
    }


def async_contenders(regs: dict[str, Any]) -> dict[str, Callable[[], Awaitable[object]]]:
    def through(registry: Any) -> Callable[[], Awaitable[object]]:
        acall = registry.acall
        return lambda: acall("dep", atrivial)

    return {
        "bare await": atrivial,
        "registry.acall, baseline": through(regs["baseline"]),
        "registry.acall, nothing configured": through(regs["unconfigured"]),
        "registry.acall, static limit": through(regs["static"]),
        "registry.acall, adaptive limit (gradient2)": through(regs["adaptive"]),
    }


def table(title: str, best: dict[str, float], bare: str, baseline: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| contender | µs per call | overhead µs | vs baseline µs |",
        "|---|---:|---:|---:|",
    ]
    for name, us in best.items():
        overhead = "" if name == bare else f"{us - best[bare]:.3f}"
        versus = "" if name in (bare, baseline) else f"{us - best[baseline]:+.3f}"
        lines.append(f"| {name} | {us:.3f} | {overhead} | {versus} |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    with tempfile.TemporaryDirectory() as tmp:
        regs = registries(load_baseline(args.baseline, Path(tmp)))
        sync = sync_contenders(regs)
        best = dict.fromkeys(sync, float("inf"))
        for _ in range(args.rounds):
            for name, fn in sync.items():
                best[name] = min(best[name], time_sync(fn, args.calls))

        async_fns = async_contenders(regs)

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
        f"rounds; baseline: {args.baseline}.",
        "",
    ]
    lines += table("sync", best, "bare call", "registry.call, baseline")
    lines += table("async", async_best, "bare await", "registry.acall, baseline")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
