"""Instructions per call, counted by valgrind's callgrind: the noise-free cross-check.

Timings on a shared 2-core machine move with the neighbours (see ``_harness.py``);
instruction counts do not: callgrind counts the instructions the process executes, the
same for the same binary and inputs whatever else the machine is doing. They are not
time (a cache miss costs no instruction), so they complement the timed figures of
``hot_path.py``; for the pure Python paths measured here (no I/O) they track CPU time.

Each contender runs in its own process under callgrind twice, with ``n`` and ``n + N``
calls, and the difference divided by ``N`` is its count per call: start-up, imports and
set-up cancel out. ``PYTHONHASHSEED`` is fixed so that both runs hash alike.

Sections (all by default):

- ``breaker``: the contenders of ``breaker_overhead.py`` (sync and async), overhead per
  call (a contender's count minus the bare call's) and its ratio to the fastest peer's.
- ``spans``: a CLIENT span with the redis instrumentation's attributes through the SDK
  pipeline (exported as it ends, to an exporter that drops it): plain, with the sampler
  wrapper, with the span processor, with both.

    python benchmarks/instructions.py [--calls 20000] [section ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import _harness as harness  # beside this script, so on sys.path when it runs

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_CALLS = 2000

SYNC = (
    "bare call",
    "otel_resilience CircuitBreaker (allow, call, record)",
    "otel_resilience protect",
    "otel_resilience registry.call",
    "circuitbreaker",
    "purgatory",
    "pybreaker",
)
ASYNC = (
    "bare await",
    "otel_resilience CircuitBreaker (allow, await, record)",
    "otel_resilience protect (async)",
    "otel_resilience registry.acall",
    "aiobreaker",
    "purgatory (async)",
)
SPAN_SETUPS = ("plain", "sampler", "processor", "both")


# -- what runs under callgrind ---------------------------------------------------------


def run_breaker(name: str, calls: int) -> None:
    import asyncio

    import breaker_overhead  # beside this script

    if name in ASYNC:
        contender = breaker_overhead.async_contenders()[name]

        async def loop() -> None:
            for _ in range(calls):
                await contender()

        asyncio.run(loop())
    else:
        fn = breaker_overhead.sync_contenders()[name]
        for _ in range(calls):
            fn()


def run_spans(setup: str, calls: int) -> None:
    import hot_path  # beside this script
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
    )
    from opentelemetry.trace import SpanKind

    from otel_resilience import load_config
    from otel_resilience._configure import _wire_tracing

    provider = TracerProvider()
    # Each span is handed to the exporter as it ends (and dropped there): no queue grows
    # during the count, so no garbage collection over it is counted, and no thread runs.
    provider.add_span_processor(SimpleSpanProcessor(hot_path.null_exporter()))
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    active = provider._active_span_processor
    plain_processors, plain_sampler = active._span_processors, provider.sampler
    _wire_tracing(load_config(hot_path.SPANS_CONFIG), provider)
    ours_processors, ours_sampler = active._span_processors, provider.sampler
    processors = ours_processors if setup in ("processor", "both") else plain_processors
    sampler = ours_sampler if setup in ("sampler", "both") else plain_sampler
    active._span_processors = processors
    provider.sampler = sampler
    for each in provider._tracers.values():
        each.sampler = sampler
    for _ in range(calls):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as span:
            for key, value in hot_path.REDIS_SPAN_ATTRIBUTES.items():
                span.set_attribute(key, value)


# -- counting --------------------------------------------------------------------------


def _collected(section: str, name: str, calls: int) -> int:
    """Instructions callgrind counted for one run of ``calls`` calls."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--run",
        section,
        name,
        str(calls),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run of {name!r} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def count(section: str, names: Sequence[str], calls: int) -> dict[str, float]:
    """Instructions per call of each of ``names``, two valgrind processes at a time."""
    jobs = [(name, n) for name in names for n in (BASE_CALLS, BASE_CALLS + calls)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        totals = list(pool.map(lambda job: _collected(section, *job), jobs))
    found = dict(zip(jobs, totals, strict=True))
    return {
        name: (found[(name, BASE_CALLS + calls)] - found[(name, BASE_CALLS)]) / calls
        for name in names
    }


def breaker_section(calls: int) -> str:
    parts = []
    for title, names, bare, peer, target in (
        ("sync", SYNC, "bare call", "circuitbreaker", "<= 0.5"),
        ("async", ASYNC, "bare await", "aiobreaker", "<= 0.4"),
    ):
        per_call = count("breaker", names, calls)
        peer_overhead = per_call[peer] - per_call[bare]
        rows: list[list[Any]] = []
        for name in names:
            overhead = per_call[name] - per_call[bare]
            ours = name.startswith("otel_resilience")
            rows.append(
                [
                    name,
                    round(per_call[name]),
                    round(overhead) if name != bare else "",
                    round(overhead / peer_overhead, 3) if name != bare else "",
                    target if ours else "",
                ]
            )
        parts += [
            f"**{title}**",
            "",
            harness.table(
                [
                    "contender",
                    "instructions/call",
                    "overhead instructions",
                    f"overhead ratio to {peer}",
                    "target",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(
        [
            f"Instructions per call (callgrind; {calls} calls counted, start-up cancelled); "
            "overhead is a contender's count minus the bare call's.",
            "",
            *parts,
        ]
    )


def spans_section(calls: int) -> str:
    per_span = count("spans", SPAN_SETUPS, calls)
    names = {
        "plain": "a CLIENT span with the redis attributes, exported as it ends",
        "sampler": "+ sampler wrapper",
        "processor": "+ span processor",
        "both": "+ span processor and sampler wrapper",
    }
    plain = per_span["plain"]
    rows = [
        [
            names[setup],
            round(per_span[setup]),
            round(per_span[setup] - plain) if setup != "plain" else "",
            round(per_span[setup] / plain, 4) if setup != "plain" else "",
        ]
        for setup in SPAN_SETUPS
    ]
    return "\n".join(
        [
            f"Instructions per span through the SDK pipeline (callgrind; {calls} spans "
            "counted; each span exported as it ends, to an exporter that drops it).",
            "",
            harness.table(["span pipeline", "instructions/span", "added", "ratio to plain"], rows),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--run", nargs=3, metavar=("SECTION", "NAME", "CALLS"))
    parser.add_argument("sections", nargs="*", default=["breaker", "spans"])
    args = parser.parse_args(argv)
    if args.run:
        section, name, calls = args.run
        (run_breaker if section == "breaker" else run_spans)(name, int(calls))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    print(harness.machine_line())
    for section in args.sections:
        print(f"\n### {section} (instructions)\n")
        if section == "breaker":
            print(breaker_section(args.calls))
        elif section == "spans":
            print(spans_section(args.calls // 4))
        else:
            sys.exit(f"unknown section {section!r}: breaker, spans")


if __name__ == "__main__":
    main()
