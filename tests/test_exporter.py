"""Resilient exporters against a real OTLP receiver that refuses, hangs, fails and returns."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HTTPSpanExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_resilience import BreakerPolicy, State
from otel_resilience._exporter import (
    ResilientLogExporter,
    ResilientMetricExporter,
    ResilientSpanExporter,
)
from tests.support.health_servers import free_port
from tests.support.otlp_receiver import OTLPReceiver

POLICY = BreakerPolicy(
    consecutive_failures=1, minimum_calls=1, open_seconds=0.3, max_open_seconds=0.3
)
DEADLINE = 0.5
SLACK = 2.0  # generous: only catches hangs


def drops(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    found: dict[str, float] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "resilience.telemetry.dropped":
                    for point in metric.data.data_points:
                        found[str((point.attributes or {})["signal"])] = point.value
    return found


def own_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The exporter module's records logged on this test's thread: its pipeline exports
    there (``SimpleSpanProcessor``), and the breaker's transition lines are logged where
    the export is recorded. Exporters that an earlier test left running in this process
    (the demo's telemetry is one per process, exporting on its own threads to a collector
    that is gone) log on their threads, whenever their outage begins."""
    here = threading.get_ident()
    return [r for r in caplog.records if r.name == "otel_resilience._exporter" and r.thread == here]


class Pipeline:
    """A tracer provider exporting each span at once through a resilient OTLP exporter."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = ResilientSpanExporter(
            OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True),
            export_timeout_seconds=DEADLINE,
            policy=POLICY,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def span(self, name: str) -> float:
        """End a span (exported synchronously); the seconds it took."""
        started = time.monotonic()
        self.tracer.start_span(name).end()
        return time.monotonic() - started

    def shutdown(self) -> float:
        started = time.monotonic()
        self.provider.shutdown()
        return time.monotonic() - started


def test_spans_flow_when_the_collector_is_up(receiver: OTLPReceiver) -> None:
    """With the receiver up, spans arrive and nothing is dropped."""
    pipeline = Pipeline(receiver)
    pipeline.span("one")
    pipeline.span("two")
    assert receiver.spans == ["one", "two"]
    assert drops(pipeline.reader) == {"traces": 0}
    assert pipeline.shutdown() < SLACK


@pytest.mark.parametrize("fault", ["refused", "blackhole", "unavailable"])
def test_collector_down_drops_quietly_and_counts(
    receiver: OTLPReceiver, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused, black-holed or UNAVAILABLE: exports return within the deadline, the breaker
    opens, batches are then dropped at once and counted, one line is logged, and shutdown
    stays within its deadline."""
    caplog.set_level(logging.DEBUG)
    pipeline = Pipeline(receiver)
    if fault == "refused":
        receiver.stop()
    elif fault == "blackhole":
        receiver.blackhole()
    else:
        receiver.mode = "unavailable"
    first = pipeline.span("first")
    assert first < DEADLINE + SLACK
    assert pipeline.exporter.breaker.state is State.OPEN
    fast = [pipeline.span(f"dropped-{i}") for i in range(50)]
    assert max(fast) < 0.05  # dropped at once, no network wait
    assert drops(pipeline.reader) == {"traces": 51}
    assert pipeline.shutdown() < DEADLINE + SLACK
    ours = [r for r in own_records(caplog) if r.levelno >= logging.INFO]
    assert len(ours) == 1
    assert "telemetry export is failing" in ours[0].getMessage()
    inner = [
        r
        for r in caplog.records
        if r.name.startswith("opentelemetry.exporter") and r.levelno >= logging.WARNING
    ]
    assert inner == []


def test_export_resumes_by_itself(receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture) -> None:
    """After the receiver comes back, a probe export after open_seconds closes the breaker and
    spans flow again; two lines were logged in all."""
    caplog.set_level(logging.INFO, logger="otel_resilience")
    pipeline = Pipeline(receiver)
    receiver.stop()
    for index in range(5):
        pipeline.span(f"lost-{index}")
    receiver.start()
    time.sleep(POLICY.open_seconds + 0.05)
    deadline = time.monotonic() + 10
    while pipeline.exporter.breaker.state is not State.CLOSED and time.monotonic() < deadline:
        pipeline.span("probe")
        time.sleep(0.1)
    pipeline.span("after")
    assert "after" in receiver.spans
    assert not any(name.startswith("lost") for name in receiver.spans)
    lines = [r.getMessage() for r in own_records(caplog)]
    assert len(lines) == 2
    assert "works again" in lines[1]
    pipeline.shutdown()


class _RaisingExporter(SpanExporter):
    """A span exporter of the application's that raises without logging anything."""

    def export(self, spans: Any) -> SpanExportResult:
        raise ConnectionResetError("the vendor's agent hung up")

    def shutdown(self) -> None:
        pass


def test_each_wrapper_names_its_own_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Four wrappers, each with its own breaker, failing one after the other: the line each
    logs when its export begins to fail carries its own exporter's error, never an earlier
    one's (the inner exporters' warnings are kept per worker); a failure that logs nothing
    is named by what it raised, and an export cut off at the deadline says so."""
    caplog.set_level(logging.INFO, logger="otel_resilience")
    refused = free_port()  # nothing listens there
    hole = OTLPReceiver()
    hole.blackhole()
    try:
        pipelines = {
            "refused": OTLPSpanExporter(endpoint=f"127.0.0.1:{refused}", insecure=True),
            "raises": _RaisingExporter(),
            "refused again": OTLPSpanExporter(endpoint=f"127.0.0.1:{refused}", insecure=True),
            "black-holed": OTLPSpanExporter(endpoint=hole.endpoint, insecure=True),
        }
        lines = {}
        for name, inner in pipelines.items():
            exporter = ResilientSpanExporter(inner, export_timeout_seconds=DEADLINE, policy=POLICY)
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            caplog.clear()
            provider.get_tracer("t").start_span(name).end()
            assert exporter.breaker.state is State.OPEN
            (lines[name],) = [r.getMessage() for r in own_records(caplog)]
            provider.shutdown()
    finally:
        hole.close()
    # The OTLP exporter does not log every failure: then the line says what it knows.
    assert (
        f"127.0.0.1:{refused}" in lines["refused"]
        or "the exporter reported a failure" in lines["refused"]
    )
    assert "ConnectionResetError: the vendor's agent hung up" in lines["raises"]
    assert f"127.0.0.1:{refused}" not in lines["raises"]
    assert "vendor" not in lines["refused again"]
    assert (
        f"127.0.0.1:{refused}" in lines["refused again"]
        or "the exporter reported a failure" in lines["refused again"]
    )
    assert f"127.0.0.1:{refused}" not in lines["black-holed"]
    assert "vendor" not in lines["black-holed"]
    assert "no answer within 0.5s" in lines["black-holed"] or hole.endpoint in lines["black-holed"]


def test_slow_collector_within_and_past_the_deadline(receiver: OTLPReceiver) -> None:
    """An answer slower than the deadline is given up on; a slow one within it is fine."""
    pipeline = Pipeline(receiver)
    receiver.mode, receiver.delay = "slow", 0.1
    pipeline.span("slow-but-ok")
    assert pipeline.exporter.breaker.state is State.CLOSED
    receiver.delay = DEADLINE * 3
    took = pipeline.span("too-slow")
    assert took < DEADLINE + SLACK
    assert pipeline.exporter.breaker.state is State.OPEN
    assert "slow-but-ok" in receiver.spans
    pipeline.shutdown()


def test_drop_count_is_exported_once_export_is_back(receiver: OTLPReceiver) -> None:
    """Metrics go through a resilient metric exporter; the drops counted while the collector
    was down reach it after it returns."""
    exporter = ResilientMetricExporter(
        OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True),
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    spans = ResilientSpanExporter(
        OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True),
        export_timeout_seconds=DEADLINE,
        breaker=exporter.breaker,
        meter_provider=meter_provider,
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    receiver.stop()
    for index in range(7):
        provider.get_tracer("t").start_span(f"s{index}").end()
    assert exporter.breaker.state is State.OPEN
    receiver.start()
    time.sleep(POLICY.open_seconds + 0.05)
    assert meter_provider.force_flush(5_000)
    dropped = [p for p in receiver.metric_points if p[0] == "resilience.telemetry.dropped"]
    assert dropped == [("resilience.telemetry.dropped", {"signal": "traces"}, 7)]
    started = time.monotonic()
    meter_provider.shutdown()
    provider.shutdown()
    assert time.monotonic() - started < SLACK


def test_metric_exporter_keeps_the_inner_preferences(receiver: OTLPReceiver) -> None:
    """The wrapper reports the wrapped exporter's temporality and aggregation."""
    inner = OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True)
    wrapped = ResilientMetricExporter(inner)
    assert wrapped._preferred_temporality == inner._preferred_temporality
    assert wrapped._preferred_aggregation == inner._preferred_aggregation
    wrapped.shutdown()


def test_log_exporter(receiver: OTLPReceiver) -> None:
    """Log records flow through the resilient log exporter, and are dropped when down."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    reader = InMemoryMetricReader()
    exporter = ResilientLogExporter(
        OTLPLogExporter(endpoint=receiver.endpoint, insecure=True),
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("t")
    logger.emit(body="hello")
    assert receiver.log_bodies == ["hello"]
    receiver.stop()
    logger.emit(body="lost")
    logger.emit(body="lost too")
    assert drops(reader) == {"logs": 2}
    started = time.monotonic()
    provider.shutdown()
    assert time.monotonic() - started < SLACK


class _OTLPHTTP(BaseHTTPRequestHandler):
    received: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _OTLPHTTP.received.append(len(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_http_exporter_up_and_refused() -> None:
    """The OTLP/HTTP span exporter is wrapped the same way: delivered when up, dropped fast
    and counted when the port refuses."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OTLPHTTP)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    port = server.server_address[1]
    exporter = ResilientSpanExporter(
        HTTPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"),
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
        meter_provider=meter_provider,
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("up").end()
    assert len(_OTLPHTTP.received) == 1
    server.shutdown()
    server.server_close()
    refused = ResilientSpanExporter(
        HTTPSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces"),
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
        meter_provider=meter_provider,
    )
    provider.shutdown()
    down = TracerProvider()
    down.add_span_processor(SimpleSpanProcessor(refused))
    for _ in range(3):
        down.get_tracer("t").start_span("down").end()
    assert refused.breaker.state is State.OPEN
    assert drops(reader)["traces"] == 3
    started = time.monotonic()
    down.shutdown()
    assert time.monotonic() - started < SLACK


def test_configure_wraps_the_exporters_of_an_existing_setup() -> None:
    """configure() wraps the exporters already in the app's providers: with the collector
    black-holed, both providers shut down within the deadline instead of the SDK's 30 s + 10 s."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_resilience import configure
    from otel_resilience._configure import reset_for_tests

    hole = OTLPReceiver()
    hole.blackhole()
    try:
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=hole.endpoint, insecure=True))
        )
        meter_provider = MeterProvider(
            metric_readers=[
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=hole.endpoint, insecure=True),
                    export_interval_millis=60_000,
                )
            ]
        )
        configure(
            {"telemetry": {"export_timeout_seconds": DEADLINE}},
            tracer_provider=provider,
            meter_provider=meter_provider,
            instrument=False,
        )
        for index in range(20):
            provider.get_tracer("t").start_span(f"s{index}").end()
        started = time.monotonic()
        provider.shutdown()
        meter_provider.shutdown()
        assert time.monotonic() - started < 2 * DEADLINE + SLACK
    finally:
        reset_for_tests()
        hole.close()


class _Forgetful(SpanExporter):
    """Exports nothing and keeps nothing; fails when told to."""

    fail = False

    def export(self, spans: Any) -> SpanExportResult:
        if self.fail:
            raise ConnectionError("refused")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class _Item:
    """A stand-in for an exported span that a weak reference can follow."""


def test_an_exported_batch_is_not_kept_after_its_export() -> None:
    """Once export() returned, nothing of the wrapper holds the batch: not the worker
    thread until the next export (which let its spans outlive garbage collections and move
    to the older generations, whose collections the application's threads paid), and not
    after an export that raised."""
    inner = _Forgetful()
    exporter = ResilientSpanExporter(inner, export_timeout_seconds=2.0)
    try:
        for fail in (False, True):
            inner.fail = fail
            batch = [_Item() for _ in range(3)]
            references = [weakref.ref(item) for item in batch]
            result = exporter.export(batch)  # type: ignore[arg-type]
            assert (result is SpanExportResult.SUCCESS) is not fail
            del batch
            deadline = time.monotonic() + 2
            while any(reference() is not None for reference in references):
                assert time.monotonic() < deadline, f"the batch is still held (fail={fail})"
                time.sleep(0.01)
    finally:
        exporter.shutdown()
