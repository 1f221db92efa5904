"""The resilient exporters' error paths, in real SDK pipelines: an inner exporter that raises,
hangs, refuses to flush or to shut down, and the application never notices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from otel_resilience import (
    BreakerPolicy,
    ResilientLogExporter,
    ResilientMetricExporter,
    ResilientSpanExporter,
    State,
)
from otel_resilience._exporter import _data_points, wrap_provider_exporters

DEADLINE = 0.3
POLICY = BreakerPolicy(consecutive_failures=2, minimum_calls=100, open_seconds=60)


class Backend(SpanExporter):
    """An in-process span backend that fails the way a test tells it to."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok, raise, hang, fail
        self.received = 0
        self.release = threading.Event()
        self.flush_mode = "ok"
        self.shutdown_mode = "ok"
        self._timeout = 30.0  # as the OTLP exporters have: the wrapper lowers it

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.mode == "raise":
            raise ConnectionResetError("the backend hung up")
        if self.mode == "hang":
            self.release.wait(10)
        if self.mode == "fail":
            return SpanExportResult.FAILURE
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self.flush_mode == "raise":
            raise RuntimeError("flush exploded")
        if self.flush_mode == "hang":
            self.release.wait(10)
        return True

    def shutdown(self) -> None:
        if self.shutdown_mode == "raise":
            raise RuntimeError("shutdown exploded")


@pytest.fixture
def backend() -> Iterator[Backend]:
    backend = Backend()
    yield backend
    backend.release.set()


def dropped(reader: InMemoryMetricReader, signal: str) -> int:
    data = reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "resilience.telemetry.dropped":
                    total += sum(
                        int(point.value)
                        for point in metric.data.data_points
                        if point.attributes.get("signal") == signal
                    )
    return total


def pipeline(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("app")
    for index in range(count):
        tracer.start_span(f"work {index}").end()


def test_an_inner_exporter_that_raises_costs_the_app_nothing(backend: Backend) -> None:
    """An exception from the inner export is a failed, counted, dropped export: the span's
    end returns normally, the breaker counts the error by type and opens."""
    reader = InMemoryMetricReader()
    wrapper = ResilientSpanExporter(
        backend,
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    provider = pipeline(wrapper)
    backend.mode = "raise"
    spans(provider, 3)  # never raises into the application
    assert wrapper.breaker.state is State.OPEN
    assert wrapper.breaker.snapshot().last_error_type == "ConnectionResetError"
    assert dropped(reader, "traces") == 3
    assert backend.received == 0
    backend.mode = "ok"
    spans(provider, 1)  # open: dropped at once, the backend is not called
    assert dropped(reader, "traces") == 4
    assert backend.received == 0


def test_a_failure_result_counts_as_a_failed_export(backend: Backend) -> None:
    wrapper = ResilientSpanExporter(backend, export_timeout_seconds=DEADLINE, policy=POLICY)
    backend.mode = "fail"
    assert wrapper.export([]) is SpanExportResult.FAILURE
    assert wrapper.breaker.snapshot().last_error_type == "ExportFailed"


def test_a_hung_export_is_cut_off_and_the_next_one_does_not_wait_behind_it(
    backend: Backend,
) -> None:
    """A hanging backend: the export returns at the deadline (ExportTimeout); while the
    stuck call still holds the worker the next export fails at once (ExportBusy)."""
    wrapper = ResilientSpanExporter(
        backend, export_timeout_seconds=DEADLINE, policy=BreakerPolicy(minimum_calls=100)
    )
    assert backend._timeout == DEADLINE  # the inner exporter's own timeout was lowered
    backend.mode = "hang"
    started = time.monotonic()
    assert wrapper.export([]) is SpanExportResult.FAILURE
    first = time.monotonic() - started
    assert wrapper.breaker.snapshot().last_error_type == "ExportTimeout"
    started = time.monotonic()
    assert wrapper.export([]) is SpanExportResult.FAILURE
    second = time.monotonic() - started
    assert wrapper.breaker.snapshot().last_error_type == "ExportBusy"
    assert first < DEADLINE + 2.0  # generous: cut off near the deadline, not after 10 s
    assert second < DEADLINE  # did not wait for the stuck one
    backend.release.set()


def test_flush_and_shutdown_are_bounded_even_behind_a_stuck_export(backend: Backend) -> None:
    """force_flush and shutdown while an export is stuck run beside it and return within
    the deadline; a flush or shutdown that raises is reported as False or swallowed."""
    wrapper = ResilientSpanExporter(backend, export_timeout_seconds=DEADLINE)
    backend.mode = "hang"
    backend.flush_mode = "hang"
    wrapper.export([])  # now stuck on the worker
    started = time.monotonic()
    assert wrapper.force_flush(10_000) is False  # ran on its own thread, hung, cut off
    assert time.monotonic() - started < DEADLINE + 2.0
    backend.flush_mode = "raise"
    assert wrapper.force_flush(10_000) is False
    backend.shutdown_mode = "raise"
    wrapper.shutdown()  # raises inside, never outside
    assert wrapper.export([]) is SpanExportResult.FAILURE  # after shutdown: dropped
    assert wrapper.force_flush() is False
    wrapper.shutdown()  # a second shutdown is a no-op
    backend.release.set()


def test_a_flush_that_works_is_passed_through(backend: Backend) -> None:
    wrapper = ResilientSpanExporter(backend, export_timeout_seconds=DEADLINE)
    assert wrapper.force_flush(5) is True
    wrapper.shutdown()


def test_the_deadline_must_be_positive(backend: Backend) -> None:
    with pytest.raises(ValueError, match="export_timeout_seconds must be > 0"):
        ResilientSpanExporter(backend, export_timeout_seconds=0)


class MetricBackend(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.error: BaseException | None = None
        self.exported = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.error is not None:
            raise self.error
        self.exported += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        raise RuntimeError("shutdown exploded")


def test_a_failing_metric_pipeline_drops_and_counts_its_points() -> None:
    """A periodic reader exporting through the wrapper to a backend that raises: collection
    goes on, the points are counted as dropped, shutdown stays quiet."""
    counting = InMemoryMetricReader()
    backend = MetricBackend()
    wrapper = ResilientMetricExporter(
        backend,
        export_timeout_seconds=DEADLINE,
        policy=POLICY,
        meter_provider=MeterProvider(metric_readers=[counting]),
    )
    app = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(wrapper, export_interval_millis=60_000)]
    )
    app.get_meter("app").create_counter("requests").add(1)
    assert app.force_flush() in (True, False)  # exports once; never raises
    assert backend.exported == 1
    backend.error = ConnectionRefusedError("collector down")
    app.get_meter("app").create_counter("requests").add(1)
    app.force_flush()
    assert dropped(counting, "metrics") >= 1
    assert wrapper.breaker.snapshot().last_error_type == "ConnectionRefusedError"
    app.shutdown()  # the inner shutdown raises: swallowed


def test_malformed_metrics_data_counts_no_points() -> None:
    assert _data_points(object()) == 0  # type: ignore[arg-type]


def test_the_log_exporter_wrapper_has_the_same_error_paths() -> None:
    """Logs: an inner exporter that raises gives FAILURE, flush and shutdown stay bounded."""
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    class LogBackend:
        def export(self, batch: Sequence[Any]) -> Any:
            raise BrokenPipeError("gone")

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

        def shutdown(self) -> None:
            return None

    wrapper = ResilientLogExporter(LogBackend(), export_timeout_seconds=DEADLINE, policy=POLICY)
    assert wrapper.export([object()]) is LogRecordExportResult.FAILURE
    assert wrapper.breaker.snapshot().last_error_type == "BrokenPipeError"
    assert wrapper.force_flush() is True
    wrapper.shutdown()


def test_wrapping_an_existing_setup_wraps_each_exporter_once(backend: Backend) -> None:
    """Batch and simple span processors and periodic readers get their exporters wrapped;
    a second pass finds nothing left to wrap."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(backend))
    provider.add_span_processor(SimpleSpanProcessor(Backend()))
    meter_provider = MeterProvider(
        metric_readers=[
            PeriodicExportingMetricReader(MetricBackend(), export_interval_millis=60_000)
        ]
    )
    try:
        assert wrap_provider_exporters(provider, meter_provider) == 3
        assert wrap_provider_exporters(provider, meter_provider) == 0
    finally:
        backend.release.set()
        provider.shutdown()
        meter_provider.shutdown()
