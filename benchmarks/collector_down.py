"""The collector is down: the stock SDK pipeline against the same with resilient exporters.

Each case runs in its own subprocess (a stock shutdown leaves threads behind), on the
same machine in one run:

1. shutdown time of a TracerProvider + MeterProvider (BatchSpanProcessor, periodic metric
   reader, OTLP gRPC exporters) with the collector refused and black-holed;
2. application-thread cost per span (start + end) while the collector is up and down;
3. resident memory growth over one million spans while it is down (ours).

    python benchmarks/collector_down.py [--spans 1000000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pipeline(endpoint: str, resilient: bool) -> tuple[Any, Any]:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_resilience import load_config
    from otel_resilience._exporter import wrap_exporter

    span_exporter: Any = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    metric_exporter: Any = OTLPMetricExporter(endpoint=endpoint, insecure=True)
    if resilient:
        # As configure() wraps them: one telemetry breaker shared by both signals.
        registry = load_config(None)
        span_exporter = wrap_exporter("span", span_exporter, registry)
        metric_exporter = wrap_exporter("metric", metric_exporter, registry)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metric_exporter, 5_000)]
    )
    return tracer_provider, meter_provider


def case(name: str, resilient: bool, spans: int) -> dict[str, float]:
    """One measurement, in this (child) process."""
    sys.path.insert(0, ROOT)
    from tests.support.otlp_receiver import OTLPReceiver

    receiver = OTLPReceiver()
    if name == "up":
        receiver.start()
    elif name == "blackhole":
        receiver.blackhole()
    tracer_provider, meter_provider = pipeline(receiver.endpoint, resilient)
    tracer = tracer_provider.get_tracer("bench")
    counter = meter_provider.get_meter("bench").create_counter("requests")
    for _ in range(200):  # warm up: first exports, breaker state
        tracer.start_span("warm").end()
        counter.add(1)
    # Past one export cycle (5 s for both processors), so the pipeline has met the outage,
    # as a service whose collector went away does before it is stopped.
    time.sleep(6)
    result: dict[str, float] = {}
    if name in ("up", "refused-cost"):
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(20_000):
                tracer.start_span("work").end()
            best = min(best, (time.perf_counter() - start) / 20_000 * 1e6)
            time.sleep(0.2)
        result["span_us"] = best
    if name == "memory":
        before = rss_kib()
        for index in range(spans):
            span = tracer.start_span("work", attributes={"i": index})
            span.end()
            counter.add(1)
        result["rss_growth_mib"] = (rss_kib() - before) / 1024
    counter.add(1)
    start = time.monotonic()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    result["shutdown_s"] = time.monotonic() - start
    return result


def run(name: str, resilient: bool, spans: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--case", name, "--spans", str(spans)]
        + (["--resilient"] if resilient else []),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, "OTEL_PYTHON_LOG_LEVEL": "error"},
    )
    result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case")
    parser.add_argument("--resilient", action="store_true")
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.resilient, args.spans)))
        return
    rows = {}
    for name in ("refused", "blackhole", "up", "refused-cost"):
        for resilient in (False, True):
            rows[(name, resilient)] = run(name, resilient, args.spans)
    memory = run("memory", True, args.spans)
    stock_memory = run("memory", False, args.spans)

    def ratio(stock: float, ours: float) -> str:
        return f"{stock / ours:.0f}x" if ours > 0 else "-"

    lines = [
        f"Measured {datetime.date.today()}, OTLP gRPC exporters, BatchSpanProcessor and a "
        "periodic metric reader; each case in its own process.",
        "",
        "| measure | stock SDK | otel_resilience | stock / ours |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (("refused", "refused"), ("blackhole", "black-holed")):
        stock, ours = rows[(name, False)]["shutdown_s"], rows[(name, True)]["shutdown_s"]
        lines.append(
            f"| shutdown, collector {label} | {stock:.2f} s | {ours:.3f} s | {ratio(stock, ours)} |"
        )
    for resilient, label in ((False, "stock SDK"), (True, "otel_resilience")):
        up = rows[("up", resilient)]["span_us"]
        down = rows[("refused-cost", resilient)]["span_us"]
        lines.append(
            f"| app-thread cost per span, {label}: up / down / down÷up | {up:.2f} µs | "
            f"{down:.2f} µs | {down / up:.3f} |"
        )
    lines.append(
        f"| RSS growth over {args.spans:,} spans while down | "
        f"{stock_memory['rss_growth_mib']:.1f} MiB | {memory['rss_growth_mib']:.1f} MiB | |"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
