"""What a misbehaving inner exporter or absurd span attributes can do to the application:
nothing. BaseException stays inside the exporter wrapper; /health stays small."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from otel_resilience import BreakerSpanProcessor, Registry, ResilientSpanExporter
from otel_resilience._processor import MAX_DISCOVERED_NAME


class Raising(SpanExporter):
    """An inner exporter that raises ``error`` from every method."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise self.error("inner exporter gave up")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise self.error("inner flush gave up")

    def shutdown(self) -> None:
        raise self.error("inner shutdown gave up")


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, GeneratorExit, RuntimeError])
def test_base_exceptions_never_reach_the_application(error: type[BaseException]) -> None:
    """span.end() (a SimpleSpanProcessor exports there), force_flush() and shutdown() return
    normally whatever the inner exporter raises; the failure opens the telemetry breaker,
    named after what was raised."""
    inner = Raising(error)
    wrapper = ResilientSpanExporter(
        inner, export_timeout_seconds=1.0, meter_provider=MeterProvider()
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(wrapper))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("one"):
        pass
    span = tracer.start_span("two")
    span.end()
    assert inner.calls == 1  # the breaker opened on the first failure: the second is dropped
    assert wrapper.breaker.snapshot().last_error_type == error.__name__
    assert wrapper.force_flush(1000) is False
    assert provider.force_flush(1000) in (True, False)
    provider.shutdown()


def emit(provider: TracerProvider, attributes: dict[str, Any]) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("call", kind=SpanKind.CLIENT, attributes=attributes):
        pass


def test_discovered_names_are_bounded_in_length_and_count() -> None:
    """Fifty spans with million-character addresses discover nothing: /health stays small."""
    registry = Registry()
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    for index in range(50):
        emit(provider, {"server.address": f"{index}" + "h" * 1_000_000})
        emit(provider, {"db.system": f"{index}" + "d" * 1_000_000})
    emit(provider, {"server.address": "x" * MAX_DISCOVERED_NAME})
    assert [d.name for d in registry] == ["x" * MAX_DISCOVERED_NAME]
    for index in range(100):
        emit(provider, {"server.address": f"host{index}.example"})
    document = json.dumps(registry.health().to_dict())
    assert len(registry) == 50  # the count cap, as before
    assert len(document) < 50 * (MAX_DISCOVERED_NAME + 500)
