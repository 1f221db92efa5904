"""The hot path, measured with the shared harness: breaker, span processor, guard, scaling.

Sections (all by default; name some to run only those):

- ``breaker``: a closed breaker's overhead per call against circuitbreaker (sync) and
  aiobreaker (async), in one pinned process, interleaved rounds, paired ratios.
- ``on_end``: ``BreakerSpanProcessor.on_end`` per span (thread CPU time), the SDK's
  ``BatchSpanProcessor.on_end`` alongside; flat from 1 to 50 declared dependencies and
  with the observe-only cap reached.
- ``spans``: the span processor and the sampler wrapper in the SDK's span pipeline (spans
  with the redis instrumentation's attributes, no network), toggled in one process.
- ``e2e``: redis GETs on loopback against an own redis-server (client and server pinned to
  separate CPUs): plain OTel instrumentation, + ``configure()`` without guards (span
  processor and sampler wrapper), + full ``configure()`` (processor, redis guard, memory
  fallback); each set-up in its own processes (six of each, taking rounds in turn),
  the order rotated round by round, paired ratios.
- ``layers``: the same GETs in one process, each layer toggled round by round (A/B), in
  thread CPU time: what the processor and the guard each cost per call (the guard
  installed once and switched on and off, as a disabled guard passes calls straight on).
- ``cold``: each step alone (the SDK's and our ``on_end``, circuitbreaker and ``protect``
  around a no-op, the redis guard with its memory fallback), timed right after a real
  redis GET and in a tight loop: what a step costs between real calls, where the caches
  hold what the call left in them.
- ``scaling``: guarded calls from 1 to 32 threads and 1 to 1000 asyncio tasks, calls per
  CPU-second against the single-thread (single-task) figure.

    python benchmarks/hot_path.py [--quick] [section ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _harness as harness  # beside this script, so on sys.path when it runs

CACHE_KEY = "otel_resilience:bench:hot_path"

SPANS_CONFIG: dict[str, Any] = {
    "dependencies": {
        "cache": {"criticality": "optional", "match": {"db.system": "redis"}},
        "db": {"criticality": "critical", "match": {"db.system": "postgresql"}},
        "payments": {"criticality": "important", "match": {"server.address": "pay.example"}},
    }
}
FULL_CONFIG: dict[str, Any] = {
    "dependencies": {
        **SPANS_CONFIG["dependencies"],
        "cache": {**SPANS_CONFIG["dependencies"]["cache"], "fallback": "memory"},
    }
}


# The attributes the OTel redis instrumentation sets on a GET's span (old conventions).
REDIS_SPAN_ATTRIBUTES: dict[str, Any] = {
    "db.statement": "GET ?",
    "db.redis.args_length": 2,
    "db.system": "redis",
    "db.redis.database_index": 0,
    "net.peer.name": "localhost",
    "net.peer.port": 6379,
    "net.transport": "ip_tcp",
}


def null_exporter() -> Any:
    """A span exporter that drops every batch at once."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return NullExporter()


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


# -- breaker ---------------------------------------------------------------------------


def breaker_section(calls: int, rounds: int) -> str:
    import breaker_overhead  # beside this script

    return breaker_overhead.section(calls, rounds)


# -- on_end ----------------------------------------------------------------------------


def _spans(port: int, count: int) -> tuple[Any, Any]:
    import redis
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    RedisInstrumentor().instrument(tracer_provider=provider)
    try:
        client = redis.Redis(port=port)
        for _ in range(count):
            client.get(CACHE_KEY)
    finally:
        RedisInstrumentor().uninstrument()
    redis_spans = exported.get_finished_spans()
    exported.clear()
    tracer = provider.get_tracer("bench")
    for index in range(count):
        attributes = {
            "http.method": "GET",
            "http.url": f"https://pay.example/v1/charges/{index}?expand=customer",
            "http.status_code": 200,
        }
        tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=attributes).end()
    return redis_spans, exported.get_finished_spans()


def on_end_section(port: int, rounds: int) -> str:
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
    )

    from otel_resilience import BreakerSpanProcessor, load_config

    redis_spans, http_spans = _spans(port, 2000)

    def declared(count: int) -> BreakerSpanProcessor:
        """``count`` declared dependencies; the redis spans match the last one."""
        dependencies: dict[str, Any] = {
            f"service{index}": {"match": {"server.address": f"service{index}.internal"}}
            for index in range(count - 1)
        }
        dependencies.update(SPANS_CONFIG["dependencies"])
        return BreakerSpanProcessor(load_config({"dependencies": dependencies}))

    def capped(others: int) -> BreakerSpanProcessor:
        """A processor with ``others`` observe-only dependencies discovered (cap 50)."""
        processor = BreakerSpanProcessor(load_config({"dependencies": {}}), max_discovered=50)
        for index in range(others):
            processor._discover(processor.registry, {"server.address": f"other{index}.internal"})
        return processor

    batch = BatchSpanProcessor(null_exporter(), max_queue_size=1 << 22)
    cases: dict[str, tuple[Any, Any, str]] = {
        "reference: SDK BatchSpanProcessor.on_end (redis spans)": (batch, redis_spans, ""),
        "redis span, declared (3 dependencies)": (declared(3), redis_spans, "<= 1.0"),
        "HTTP span, host from http.url": (declared(3), http_spans, "<= 1.5"),
        "redis span, 1 declared dependency": (declared(1), redis_spans, "flat"),
        "redis span, 10 declared dependencies": (declared(10), redis_spans, "flat"),
        "redis span, 50 declared dependencies": (declared(50), redis_spans, "flat"),
        "redis span, auto-discovered (observe-only)": (
            BreakerSpanProcessor(load_config({"dependencies": {}})),
            redis_spans,
            "",
        ),
        "redis span, the 50th observe-only dependency (cap reached)": (
            capped(49),
            redis_spans,
            "flat",
        ),
        "redis span, cap of 50 observe-only reached by others (dropped)": (
            capped(50),
            redis_spans,
            "flat",
        ),
    }

    def work_of(processor: Any, spans: Any) -> Callable[[], int]:
        def work() -> int:
            on_end = processor.on_end
            for span in spans:
                on_end(span)
            return len(spans)

        return work

    samples = harness.Samples()
    for order in harness.orders(list(cases), rounds):
        for name in order:
            processor, spans, _ = cases[name]
            one = harness.ab(work_of(processor, spans), {name: nothing}, rounds=1)
            samples.add(name, one.values[name][0])
    batch.shutdown()
    reference = next(iter(cases))
    rows = []
    for name, (_, _, target) in cases.items():
        summary = samples.summary(name, reference)
        rows.append(
            [
                name,
                summary.best,
                summary.median,
                None if name == reference else summary.median_ratio,
                target,
            ]
        )
    return "\n".join(
        [
            f"`on_end` over 2000 ended spans per block, {rounds} interleaved rounds, thread "
            "CPU time.",
            "",
            harness.table(
                [
                    "on_end",
                    "best µs/span",
                    "median µs/span",
                    "median paired ratio to reference",
                    "target",
                ],
                rows,
            ),
        ]
    )


# -- the span side in the span pipeline (no network) -----------------------------------


def _skipping_hooks(active: Any) -> Callable[[bool], None]:
    """A switch for the hooks configure() gave the provider's multi-processor (they skip
    the breaker processor's empty ``on_start`` and ``_on_ending``): on with our processor,
    off (the SDK's own methods, as plain OpenTelemetry has them) without it."""
    ours = {name: vars(active)[name] for name in ("on_start", "_on_ending") if name in vars(active)}

    def switch(on: bool) -> None:
        for name, hook in ours.items():
            if on:
                setattr(active, name, hook)
            else:
                vars(active).pop(name, None)

    return switch


def spans_section(rounds: int) -> str:
    """Span processor and sampler wrapper in the SDK's pipeline, toggled in one process."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
    )
    from opentelemetry.trace import SpanKind

    from otel_resilience import load_config
    from otel_resilience._configure import _wire_tracing

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(null_exporter(), max_queue_size=1 << 16))
    # The redis instrumentation's tracer name, attributes set after start as it does.
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    active = provider._active_span_processor
    plain_processors, plain_sampler = active._span_processors, provider.sampler
    _wire_tracing(load_config(SPANS_CONFIG), provider)
    ours_processors, ours_sampler = active._span_processors, provider.sampler
    hooks = _skipping_hooks(active)
    attributes = REDIS_SPAN_ATTRIBUTES

    def work() -> int:
        for _ in range(500):
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as span:
                for key, value in attributes.items():
                    span.set_attribute(key, value)
        return 500

    def setup(
        processors: Any, sampler: Any
    ) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        @contextlib.contextmanager
        def switch() -> Iterator[None]:
            active._span_processors = processors
            hooks(processors is ours_processors)
            provider.sampler = sampler
            for each in provider._tracers.values():
                each.sampler = sampler
            yield

        return switch

    variants = {
        "plain": setup(plain_processors, plain_sampler),
        "sampler": setup(plain_processors, ours_sampler),
        "processor": setup(ours_processors, plain_sampler),
        "both": setup(ours_processors, ours_sampler),
    }
    work()
    samples = harness.ab(work, variants, rounds=rounds)
    names = {
        "plain": "a CLIENT span with the redis attributes, batch export processor",
        "sampler": "+ sampler wrapper",
        "processor": "+ span processor",
        "both": "+ span processor and sampler wrapper",
    }
    rows = []
    for name in variants:
        summary = samples.summary(name, "plain")
        rows.append(
            [
                names[name],
                summary.best,
                summary.median,
                summary.median_difference,
                summary.median_ratio,
            ]
        )
    return "\n".join(
        [
            f"Spans started and ended through the SDK (no network), 500 per block, {rounds} "
            "rounds, the processor and the sampler wrapper switched on and off round by "
            "round; thread CPU time.",
            "",
            harness.table(
                [
                    "span pipeline",
                    "best µs/span",
                    "median µs/span",
                    "median added µs/span",
                    "median paired ratio",
                ],
                rows,
            ),
        ]
    )


# -- end to end (worker processes) -----------------------------------------------------


E2E_SETUPS = ("plain", "plain again", "processor", "configured", "full")
E2E_REPLICAS = 6  # processes per set-up (_harness.processes)
WARM_GETS = 5  # untimed GETs after each switch of the layers section


def _tracing(port: int) -> tuple[Any, Any, Any]:
    """A provider with a batch processor to a dropping exporter, the redis instrumentation,
    and a client (connection warmed)."""
    import redis
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
    )

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(null_exporter()))
    RedisInstrumentor().instrument(tracer_provider=provider)
    client = redis.Redis(port=port)
    client.set(CACHE_KEY, "x" * 64)
    return provider, client, RedisInstrumentor


def e2e_worker(setup: str, port: int, calls: int) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from otel_resilience import configure, load_config
    from otel_resilience._configure import _wire_tracing

    provider, client, _ = _tracing(port)
    if setup == "processor":  # "plain again" is the A/A control: the noise floor
        # What configure() adds to the tracer provider, and nothing else.
        _wire_tracing(load_config(SPANS_CONFIG), provider)
    elif setup == "configured":
        configure(
            SPANS_CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
        )
    elif setup == "full":
        configure(FULL_CONFIG, tracer_provider=provider, meter_provider=MeterProvider())
    get = client.get
    for _ in range(1000):
        get(CACHE_KEY)

    def block() -> dict[str, float]:
        start_wall, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(calls):
            get(CACHE_KEY)
        cpu = (time.thread_time_ns() - start_cpu) / calls / 1000
        return {"wall": (time.perf_counter_ns() - start_wall) / calls / 1000, "cpu": cpu}

    harness.serve_blocks(block)


def e2e_section(port: int, calls: int, rounds: int) -> str:
    def command(setup: str) -> list[str]:
        return [
            sys.executable,
            __file__,
            "--worker",
            setup.split(maxsplit=1)[0],  # "plain again" runs the plain worker
            "--port",
            str(port),
            "--calls",
            str(calls),
        ]

    collected = harness.processes(command, E2E_SETUPS, rounds=rounds, replicas=E2E_REPLICAS)
    names = {
        "plain": "OTel redis instrumentation + batch export (plain)",
        "plain again": "the same plain set-up in another process (A/A: the noise floor)",
        "processor": "+ span processor and sampler wrapper only",
        "configured": "+ configure() without guards (+ metrics, resilient exporter)",
        "full": "+ full configure(): processor, redis guard, memory fallback",
    }
    targets = {"processor": "<= 1.02", "full": "<= 1.05"}
    rows = []
    for setup in E2E_SETUPS:
        wall = collected["wall"].summary(setup, "plain")
        cpu = collected["cpu"].summary(setup, "plain")
        rows.append(
            [
                names[setup],
                wall.best,
                wall.median,
                wall.median_ratio,
                cpu.best,
                cpu.median_ratio,
                cpu.median_difference,
                targets.get(setup, ""),
            ]
        )
    return "\n".join(
        [
            f"Redis GET on loopback against an own redis-server; each set-up in "
            f"{E2E_REPLICAS} processes of its own, the set-ups taking turns block by block "
            f"({rounds} rounds of {calls} GETs each, the order rotated round by round; each "
            "round the next process of each set-up); ratios paired within a round. CPU is "
            "the calling thread's CPU time.",
            "",
            harness.table(
                [
                    "set-up",
                    "best wall µs/GET",
                    "median wall µs/GET",
                    "median paired wall ratio",
                    "best CPU µs/GET",
                    "median paired CPU ratio",
                    "median added CPU µs/GET",
                    "target (wall ratio)",
                ],
                rows,
            ),
        ]
    )


# -- layers (one process, A/B) ---------------------------------------------------------


def layers_section(port: int, calls: int, rounds: int) -> str:
    from opentelemetry.sdk.metrics import MeterProvider

    from otel_resilience import configure
    from otel_resilience._context import count_handed_successes
    from otel_resilience.instrumentation import install

    provider, client, _ = _tracing(port)
    active = provider._active_span_processor
    plain_processors, plain_sampler = active._span_processors, provider.sampler
    registry = configure(
        FULL_CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    ours_processors, ours_sampler = active._span_processors, provider.sampler
    ours = ours_processors[-1]
    hooks = _skipping_hooks(active)
    # The guards are installed once and switched with their installer's own flag (a
    # disabled layer passes the call straight on: one frame and one test). Installed and
    # uninstalled round by round, as until 2026-11-30 20:30, each round's new layers and
    # spliced chains made the guard-only row 7.5 to 9 µs per GET; switched by the flag,
    # 6.9 µs (same machine, same hour).
    installer = install(registry).__self__  # type: ignore[attr-defined]

    def setup(spans: bool, guard: bool) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        """Our processor and sampler wrapper in the pipeline or not; the guard or not."""

        @contextlib.contextmanager
        def switch() -> Iterator[None]:
            sampler = ours_sampler if spans else plain_sampler
            active._span_processors = ours_processors if spans else plain_processors
            # Without the processor the guard counts its calls itself, as it does on a
            # pipeline that holds none (_context.SPAN_COUNTERS).
            count_handed_successes(active, ours, counting=spans)
            hooks(spans)
            provider.sampler = sampler
            for tracer in provider._tracers.values():
                tracer.sampler = sampler
            installer.enabled = guard
            for _ in range(WARM_GETS):  # untimed: the first calls after a switch
                client.get(CACHE_KEY)
            yield

        return switch

    plain, spans_only = setup(False, False), setup(True, False)
    guard_only, guarded = setup(False, True), setup(True, True)

    get = client.get

    def work() -> int:
        for _ in range(calls):
            get(CACHE_KEY)
        return calls

    for _ in range(2):
        work()
    variants = {
        "plain": plain,
        "plain again": plain,
        "processor": spans_only,
        "guard": guard_only,
        "full": guarded,
    }
    samples = harness.ab(work, variants, rounds=rounds)
    names = {
        "plain": "OTel redis instrumentation + batch export",
        "plain again": "the same, another block (A/A: the noise floor)",
        "processor": "+ processor and sampler wrapper",
        "guard": "+ redis guard and memory fallback only",
        "full": "+ processor, sampler wrapper, redis guard, memory fallback",
    }
    rows = []
    for name in variants:
        summary = samples.summary(name, "plain")
        rows.append(
            [
                names[name],
                summary.best,
                summary.median,
                summary.median_difference,
                summary.median_ratio,
            ]
        )
    return "\n".join(
        [
            f"One process, {calls} GETs per block, {rounds} rounds, the layers switched on and "
            "off round by round; thread CPU time of the calling thread.",
            "",
            harness.table(
                [
                    "layers on",
                    "best CPU µs/GET",
                    "median CPU µs/GET",
                    "median added CPU µs/GET",
                    "median paired CPU ratio",
                ],
                rows,
            ),
        ]
    )


# -- between real calls ----------------------------------------------------------------


def cold_section(port: int, rounds: int) -> str:
    """``cold_table`` in a worker process of its own (it installs the guards), pinned."""
    command = [
        *harness.taskset(harness.client_cpu()),
        sys.executable,
        __file__,
        "--worker",
        "cold",
        "--port",
        str(port),
        "--calls",
        str(rounds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    return done.stdout.strip()


def cold_table(port: int, rounds: int) -> str:
    """Each step timed alone right after a real redis GET, in the state the call left the
    CPU's caches in: what the step costs between real calls (the e2e regime), against the
    same step's cost in a tight loop."""
    import circuitbreaker
    import redis
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    from otel_resilience import BreakerSpanProcessor, configure, load_config
    from otel_resilience._context import GUARDED_SPANS
    from otel_resilience._guard import guarded_call
    from otel_resilience.instrumentation._redis import _CACHE_ATTRIBUTE, COMMAND

    provider, _, _ = _tracing(port)

    class Last(SpanProcessor):
        """Keeps the last ended span (the GET's), touching nothing of it."""

        span: Any = None

        def on_end(self, span: Any) -> None:
            Last.span = span

    provider.add_span_processor(Last())
    ours = BreakerSpanProcessor(load_config(SPANS_CONFIG))
    # No export while measuring: the batch processor's thread would take the CPU.
    batch = BatchSpanProcessor(
        null_exporter(),
        max_queue_size=1 << 22,
        max_export_batch_size=1 << 22,
        schedule_delay_millis=3_600_000,
    )
    # The redis guard with its memory fallback, as configure() installs it; the measuring
    # GETs go through a pool tagged as no dependency, so only the timed step is guarded.
    registry = configure(FULL_CONFIG, tracer_provider=provider, meter_provider=MeterProvider())
    guarded = redis.Redis(port=port)
    guarded.get(CACHE_KEY)
    installer, entry, decode = getattr(guarded.connection_pool, _CACHE_ATTRIBUTE)
    pool = redis.ConnectionPool(port=port)
    setattr(pool, _CACHE_ATTRIBUTE, (installer, None, False))  # a pool of no dependency
    get = redis.Redis(connection_pool=pool).get
    value = get(CACHE_KEY)
    command = ("GET", CACHE_KEY)

    def redis_get(*args: Any) -> Any:
        return value  # the command's answer, without the network

    @circuitbreaker.circuit(failure_threshold=10**9)
    def peer(value: int = 1) -> int:
        return value

    @registry.protect("cache")
    def protected(value: int = 1) -> int:
        return value

    def nothing(span: Any) -> None:
        return None

    for _ in range(3):  # the processor compiles its fast path on its first spans
        get(CACHE_KEY)
        ours.on_end(Last.span)
    steps: dict[str, Callable[[Any], Any]] = {
        "the timer alone": nothing,
        "SDK BatchSpanProcessor.on_end (reference)": batch.on_end,
        "BreakerSpanProcessor.on_end, declared redis span": ours.on_end,
        "circuitbreaker, closed, around a no-op (peer)": lambda span: peer(),
        "protect, closed, around a no-op": lambda span: protected(),
        "redis guard + memory fallback around a GET's answer (guarded_call)": (
            lambda span: guarded_call(entry, COMMAND, redis_get, command, {}, decode)
        ),
    }
    clock = time.perf_counter_ns
    cold = harness.Samples()
    # As in a real call, the guard runs while a CLIENT span is current and enters it in
    # GUARDED_SPANS; that span never ends here, so its entry is dropped after each step.
    outer = provider.get_tracer("bench").start_span("outer", kind=SpanKind.CLIENT)
    with trace.use_span(outer, end_on_exit=True):
        for order in harness.orders(list(steps), rounds):
            for name in order:
                step = steps[name]
                total = 0
                for _ in range(200):
                    get(CACHE_KEY)
                    span = Last.span
                    start = clock()
                    step(span)
                    total += clock() - start
                    GUARDED_SPANS.clear()
                cold.add(name, total / 200 / 1000)
        tight: dict[str, float] = {}
        get(CACHE_KEY)
        span = Last.span  # a GET's span, as above
        for name, step in steps.items():
            best = float("inf")
            for _ in range(5):
                start = clock()
                for _ in range(20_000):
                    step(span)
                best = min(best, (clock() - start) / 20_000 / 1000)
                GUARDED_SPANS.clear()
            tight[name] = best
    batch.shutdown()
    timer = cold.median("the timer alone")
    rows = [
        [
            name,
            tight[name],
            cold.median(name),
            cold.median(name) - timer if name != "the timer alone" else None,
        ]
        for name in steps
    ]
    return "\n".join(
        [
            f"Each step timed with `perf_counter_ns` right after a real GET on loopback (200 "
            f"GETs per block, {rounds} rounds, the steps interleaved), and in a tight loop "
            "(best of 5 blocks of 20000). The guard row guards a function returning the "
            "GET's value, so the network is not in it.",
            "",
            harness.table(
                [
                    "step",
                    "tight loop µs",
                    "after a real call, median µs",
                    "after a real call, minus the timer, µs",
                ],
                rows,
            ),
        ]
    )


# -- scaling ---------------------------------------------------------------------------


def scaling_section(calls: int, rounds: int) -> str:
    from otel_resilience import BreakerPolicy, Dependency, Registry

    class Flaky(Exception):
        pass

    sequence = itertools.count(1)

    def sync_fn(index: int, flaky: bool) -> int:
        # 2% failures, spread over the threads: the window always holds one, so every
        # success takes the breaker's lock.
        if flaky and next(sequence) % 50 == 0:
            raise Flaky
        return index

    async def async_fn(index: int, flaky: bool) -> int:
        await asyncio.sleep(0)  # yield, so the tasks interleave
        return sync_fn(index, flaky)

    def registry_of(slow: bool) -> Registry:
        """A registry of one dependency; ``slow``: with a slow-call bound (every success
        then takes the breaker's lock)."""
        bound = {"slow_call_seconds": 1.0} if slow else {}
        return Registry(
            [Dependency("dep", policy=BreakerPolicy(consecutive_failures=None, **bound))]
        )

    def threaded(threads: int, flaky: bool, slow: bool, guarded: bool) -> tuple[float, float]:
        """(calls per CPU-second, per wall-second) with ``threads`` threads."""
        call = registry_of(slow).call
        per_thread = max(1, calls // threads)
        barrier = threading.Barrier(threads + 1)

        def worker() -> None:
            barrier.wait()
            for index in range(per_thread):
                try:
                    if guarded:
                        call("dep", sync_fn, index, flaky)
                    else:
                        sync_fn(index, flaky)
                except Flaky:
                    pass

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        start_wall, start_cpu = time.perf_counter_ns(), time.process_time_ns()
        barrier.wait()
        for thread in pool:
            thread.join()
        cpu = (time.process_time_ns() - start_cpu) / 1e9
        wall = (time.perf_counter_ns() - start_wall) / 1e9
        return per_thread * threads / cpu, per_thread * threads / wall

    def tasks(count: int, flaky: bool, slow: bool, guarded: bool) -> tuple[float, float]:
        acall = registry_of(slow).acall
        per_task = max(1, calls // count)

        async def one_task() -> None:
            for index in range(per_task):
                try:
                    if guarded:
                        await acall("dep", async_fn, index, flaky)
                    else:
                        await async_fn(index, flaky)
                except Flaky:
                    pass

        async def main() -> tuple[float, float]:
            start_wall, start_cpu = time.perf_counter_ns(), time.process_time_ns()
            await asyncio.gather(*(one_task() for _ in range(count)))
            cpu = (time.process_time_ns() - start_cpu) / 1e9
            wall = (time.perf_counter_ns() - start_wall) / 1e9
            return per_task * count / cpu, per_task * count / wall

        return asyncio.run(main())

    out = [
        f"{calls} calls in all per measure, split evenly; {rounds} rounds, the levels and "
        "the guarded and unguarded runs interleaved. Calls per CPU-second is the throughput "
        "per core (CPython runs one thread at a time; a lock convoy burns CPU in hand-offs "
        "and shows as a drop); wall-clock throughput on a CPU shared with other work says "
        "nothing here. The unguarded control runs the same function without the "
        "breaker: what the threads or the event loop cost by themselves. Ratios to 1 are "
        "medians of ratios paired within a round (one thread's throughput and the level's, "
        "measured seconds apart), so the machine's drift between rounds cancels. Guard µs "
        "is the median of paired differences (guarded - unguarded CPU per call).",
        "",
    ]
    for title, levels, measure in (
        ("threads, `registry.call`", (1, 2, 4, 8, 16, 32), threaded),
        ("asyncio tasks, `registry.acall`", (1, 10, 100, 1000), tasks),
    ):
        rows = []
        for flaky, slow, label in (
            (False, False, "all successes"),
            (True, False, "2% failures"),
            (False, True, "all successes, slow-call bound"),
        ):
            guarded = harness.Samples()  # µs of CPU per call, by level
            control = harness.Samples()
            for order in harness.orders(list(levels), rounds):
                for level in order:
                    per_cpu, _ = measure(level, flaky, slow, True)
                    guarded.add(str(level), 1e6 / per_cpu)
                    control.add(str(level), 1e6 / measure(level, flaky, slow, False)[0])
            base = str(levels[0])
            for level in map(str, levels):
                guard_cost = statistics.median(
                    g - c for g, c in zip(guarded.values[level], control.values[level], strict=True)
                )
                # Throughput ratios paired within a round (the level's CPU per call over
                # one thread's, measured minutes apart at most): the machine's own drift
                # between rounds cancels, as in the other sections.
                rows.append(
                    [
                        f"{label}, {level}",
                        f"{1e3 / guarded.median(level):.0f}k",
                        1 / statistics.median(guarded.paired(level, base)),
                        f"{1e3 / control.median(level):.0f}k",
                        1 / statistics.median(control.paired(level, base)),
                        guard_cost,
                    ]
                )
        out += [
            f"**{title}**",
            "",
            harness.table(
                [
                    "calls, concurrency",
                    "guarded calls per CPU-second",
                    "ratio to 1",
                    "unguarded control per CPU-second",
                    "control ratio to 1",
                    "guard CPU µs per call",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------

SECTIONS = ("breaker", "on_end", "spans", "e2e", "layers", "cold", "scaling")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="section", help=", ".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--worker",
        choices=("plain", "processor", "configured", "full", "cold"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=2000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "cold":
        print(cold_table(args.port, args.calls))
        return
    if args.worker:
        e2e_worker(args.worker, args.port, args.calls)
        return
    sections = args.sections or list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    quick = args.quick
    rounds = args.rounds or (5 if quick else 11)
    harness.pin_client()
    print(harness.machine_line())
    with harness.own_redis() as port:
        for section in sections:
            print(f"\n### {section}\n")
            if section == "breaker":
                print(breaker_section(50_000 if quick else 200_000, rounds))
            elif section == "on_end":
                print(on_end_section(port, rounds if quick else max(rounds, 21)))
            elif section == "spans":
                print(spans_section(40 if quick else 200))
            elif section == "e2e":
                print(e2e_section(port, 250, 48 if quick else 240))
            elif section == "layers":
                print(layers_section(port, 100, 40 if quick else 300))
            elif section == "cold":
                print(cold_section(port, 10 if quick else 60))
            elif section == "scaling":
                print(scaling_section(64_000 if quick else 128_000, 3 if quick else 9))
    print(f"\n{harness.machine_line()}")


if __name__ == "__main__":
    main()
