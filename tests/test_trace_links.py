"""Trace links: the opening of a breaker names the trace of the call that tripped it, in
the log record and in the transitions counter's exemplar."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience import BreakerSpanProcessor, Registry, load_config
from otel_resilience._metrics import ResilienceMetrics

CONFIG = {
    "dependencies": {
        "cache": {
            "criticality": "optional",
            "match": {"db.system": "redis"},
            "breaker": {"consecutive_failures": 3, "open_seconds": 60},
        },
        "billing": {"criticality": "important", "breaker": {"consecutive_failures": 2}},
    }
}


def setup(registry: Registry) -> tuple[TracerProvider, InMemoryMetricReader, MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BreakerSpanProcessor(registry))
    reader = InMemoryMetricReader()
    # The filter OTEL_METRICS_EXEMPLAR_FILTER=trace_based selects (the SDK's default too).
    meter_provider = MeterProvider(
        metric_readers=[reader], exemplar_filter=TraceBasedExemplarFilter()
    )
    ResilienceMetrics(meter_provider).attach(registry)
    return tracer_provider, reader, meter_provider


def opened_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_resilience._trace_links"]


def open_exemplars(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "resilience.breaker.transitions":
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if (
                        attributes["dependency.name"] == name
                        and attributes["breaker.state"] == "open"
                        and point.value
                    ):
                        return list(point.exemplars)
    return []


def test_span_that_trips_the_breaker_is_in_the_log_and_the_exemplar(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failing redis client spans inside a request span open the breaker; the log record and
    the transitions exemplar carry the trace id and the span id of the span that tripped it."""
    registry = load_config(CONFIG)
    tracer_provider, reader, meter_provider = setup(registry)
    tracer = tracer_provider.get_tracer("test")
    caplog.set_level(logging.INFO, logger="otel_resilience")
    client_spans = []
    with tracer.start_as_current_span("GET /chat", kind=SpanKind.SERVER) as request:
        for _ in range(3):
            with tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
            ) as span:
                span.set_attribute("error.type", "ConnectionError")
                span.set_status(Status(StatusCode.ERROR))
                client_spans.append(span.get_span_context())
    assert registry.breaker("cache").state.value == "open"
    trace_id = trace.format_trace_id(request.get_span_context().trace_id)
    tripping_span_id = trace.format_span_id(client_spans[-1].span_id)

    records = opened_records(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "'cache'" in message
    assert "ConnectionError" in message
    assert "100%" in message
    assert f"trace_id={trace_id}" in message
    assert f"span_id={tripping_span_id}" in message
    details = records[0].otel_resilience  # type: ignore[attr-defined]
    assert details["trace_id"] == trace_id
    assert details["span_id"] == tripping_span_id
    assert details["dependency.name"] == "cache"
    assert details["breaker.failure_rate"] == 1.0
    assert details["error.type"] == "ConnectionError"

    exemplars = open_exemplars(reader, "cache")
    assert len(exemplars) == 1
    assert trace.format_trace_id(exemplars[0].trace_id) == trace_id
    assert trace.format_span_id(exemplars[0].span_id) == tripping_span_id
    meter_provider.shutdown()


def test_guarded_call_links_to_the_span_it_was_made_in(caplog: pytest.LogCaptureFixture) -> None:
    """A breaker fed by a guard (no client span) links to the span current at the call."""
    registry = load_config(CONFIG)
    tracer_provider, reader, meter_provider = setup(registry)
    tracer = tracer_provider.get_tracer("test")
    caplog.set_level(logging.INFO, logger="otel_resilience")

    def charge() -> None:
        raise TimeoutError("billing did not answer")

    with tracer.start_as_current_span("POST /checkout") as span:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                registry.call("billing", charge)
    ids = span.get_span_context()
    records = opened_records(caplog)
    assert len(records) == 1
    details = records[0].otel_resilience  # type: ignore[attr-defined]
    assert details["trace_id"] == trace.format_trace_id(ids.trace_id)
    assert details["span_id"] == trace.format_span_id(ids.span_id)
    assert details["error.type"] == "TimeoutError"
    exemplars = open_exemplars(reader, "billing")
    assert [trace.format_trace_id(e.trace_id) for e in exemplars] == [details["trace_id"]]
    meter_provider.shutdown()


def test_opening_outside_any_trace_still_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Without a span the record says so by having no ids; the counter still counts."""
    registry = load_config(CONFIG)
    _, reader, meter_provider = setup(registry)
    caplog.set_level(logging.INFO, logger="otel_resilience")
    for _ in range(2):
        registry.breaker("billing").record_failure(error_type="ConnectionError")
    records = opened_records(caplog)
    assert len(records) == 1
    assert "trace_id" not in records[0].otel_resilience  # type: ignore[attr-defined]
    assert open_exemplars(reader, "billing") == []
    meter_provider.shutdown()


def test_otel_logs_get_the_record_with_the_trace_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an OTel LoggerProvider set, the opening is also an OTel log record whose trace
    context is the tripping span's."""
    exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: logger_provider)
    monkeypatch.setattr(_logs, "get_logger", lambda name, *a, **k: logger_provider.get_logger(name))
    registry = load_config(CONFIG)
    tracer_provider, _, meter_provider = setup(registry)
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("job"):
        for _ in range(3):
            with tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
            ) as span:
                span.set_status(Status(StatusCode.ERROR))
    tripping = span.get_span_context()
    logs = exporter.get_finished_logs()
    assert len(logs) == 1
    record = logs[0].log_record
    assert record.trace_id == tripping.trace_id
    assert record.span_id == tripping.span_id
    assert "cache" in str(record.body)
    assert record.attributes is not None
    assert record.attributes["dependency.name"] == "cache"
    meter_provider.shutdown()


def otel_logs_of_an_opening(monkeypatch: pytest.MonkeyPatch) -> InMemoryLogRecordExporter:
    """Open a breaker with an OTel LoggerProvider set; the exporter of that provider."""
    exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: logger_provider)
    monkeypatch.setattr(_logs, "get_logger", lambda name, *a, **k: logger_provider.get_logger(name))
    return exporter


def trip_billing() -> None:
    registry = load_config(CONFIG)
    for _ in range(2):
        registry.breaker("billing").record_failure(error_type="ConnectionError")


# The SDK's LoggingHandler is deprecated for opentelemetry-instrumentation-logging's, which
# is not installed here; both live in "opentelemetry" modules, all the check looks at.
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_std_logging_already_forwarded_to_otel_is_not_sent_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When OTel's LoggingHandler already forwards std logging to OTel logs, the opening
    reaches OTel logs once, through that handler."""
    from opentelemetry.sdk._logs import LoggingHandler

    exporter = otel_logs_of_an_opening(monkeypatch)
    provider = _logs.get_logger_provider()
    handler = LoggingHandler(level=logging.WARNING, logger_provider=provider)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        trip_billing()
    finally:
        root.removeHandler(handler)
    bodies = [str(log.log_record.body) for log in exporter.get_finished_logs()]
    assert len(bodies) == 1
    assert "'billing' opened" in bodies[0]


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_not_propagated_logs_still_reach_otel_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the library's logger not propagating to a forwarding root handler, the opening
    is sent to OTel logs directly."""
    from opentelemetry.sdk._logs import LoggingHandler

    exporter = otel_logs_of_an_opening(monkeypatch)
    handler = LoggingHandler(level=logging.WARNING, logger_provider=_logs.get_logger_provider())
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(logging.getLogger("otel_resilience"), "propagate", False)
    try:
        trip_billing()
    finally:
        root.removeHandler(handler)
    assert len(exporter.get_finished_logs()) == 1


def test_a_silenced_logger_sends_no_otel_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Silencing the library's logger below WARNING keeps the opening out of OTel logs too."""
    exporter = otel_logs_of_an_opening(monkeypatch)
    logger = logging.getLogger("otel_resilience._trace_links")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        trip_billing()
    finally:
        logger.setLevel(level)
    assert exporter.get_finished_logs() == ()
