"""What otel_resilience adds to an instrumented service, and how fast it notices an outage.

1. ``on_end`` per span: BreakerSpanProcessor.on_end over ended redis client spans.
2. End to end: redis GETs on loopback (the shared 127.0.0.1:6379) with the OTel redis
   instrumentation, plain against the same with otel_resilience configured (processor,
   sampler wrapper, guard), interleaved rounds, best of several.
3. Outage to open breaker: calls at 100/s to an own redis-server, which is killed.

    python benchmarks/span_pipeline.py [--calls 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import threading
import time

import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import BreakerSpanProcessor, State, configure, load_config
from otel_resilience._configure import reset_for_tests

CONFIG = {
    "dependencies": {
        "redis": {"criticality": "optional", "match": {"db.system": "redis"}},
    }
}


def on_end_cost(spans: int) -> float:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    RedisInstrumentor().instrument(tracer_provider=provider)
    client = redis.Redis()
    for _ in range(spans):
        client.get("bench")
    RedisInstrumentor().uninstrument()
    ended: tuple[ReadableSpan, ...] = exported.get_finished_spans()
    processor = BreakerSpanProcessor(load_config(CONFIG))
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for span in ended:
            processor.on_end(span)
        best = min(best, (time.perf_counter() - start) / len(ended) * 1e6)
    return best


def end_to_end(calls: int, rounds: int) -> tuple[float, float]:
    """Best per-GET time, plain OTel against otel_resilience configured, interleaved."""
    plain_provider = TracerProvider()
    ours_provider = TracerProvider()
    client = redis.Redis()
    client.set("bench", "x")

    def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            client.get("bench")
        return (time.perf_counter() - start) / calls * 1e6

    plain = ours = float("inf")
    for _ in range(rounds):
        RedisInstrumentor().instrument(tracer_provider=plain_provider)
        plain = min(plain, loop())
        RedisInstrumentor().uninstrument()
        # configure() switches the redis instrumentation on (for its provider) and guards it
        configure(CONFIG, tracer_provider=ours_provider, meter_provider=MeterProvider())
        ours = min(ours, loop())
        reset_for_tests()
    return plain, ours


def outage_to_open(rate: float = 100.0) -> float:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed"
    port = 6479
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    config = {
        "dependencies": {
            "redis": {
                "criticality": "optional",
                "match": {"db.system": "redis", "server.port": port},
                "fallback": "memory",
            }
        }
    }
    registry = configure(config, tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    client = redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    stop = threading.Event()

    def traffic() -> None:
        interval = 1 / rate
        next_call = time.monotonic()
        while not stop.is_set():
            client.get("k")
            next_call += interval
            time.sleep(max(0.0, next_call - time.monotonic()))

    worker = threading.Thread(target=traffic)
    worker.start()
    time.sleep(0.5)
    killed = time.monotonic()
    server.kill()
    while registry.breaker("redis").state is not State.OPEN and time.monotonic() - killed < 10:
        time.sleep(0.001)
    opened = time.monotonic() - killed
    stop.set()
    worker.join()
    reset_for_tests()
    server.wait()
    return opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    cost = on_end_cost(2000)
    plain, ours = end_to_end(args.calls, args.rounds)
    opened = outage_to_open()
    print(
        f"Measured {datetime.date.today()}, {args.calls} redis GETs x best of {args.rounds} "
        "interleaved rounds on loopback.\n\n"
        "| measure | value | target |\n|---|---:|---:|\n"
        f"| BreakerSpanProcessor.on_end per span | {cost:.2f} µs | < 2 µs |\n"
        f"| GET, OTel redis instrumentation only | {plain:.1f} µs | |\n"
        f"| GET, with otel_resilience configured (processor + guard) | {ours:.1f} µs | |\n"
        f"| end-to-end ratio | {ours / plain:.3f} | <= 1.05 |\n"
        f"| Redis killed to breaker open, 100 calls/s | {opened * 1000:.0f} ms | < 1000 ms |"
    )


if __name__ == "__main__":
    main()
