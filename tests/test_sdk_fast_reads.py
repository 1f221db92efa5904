"""The SDK reads of the hot path (``_sdk.py``) agree with the public API they stand for."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience._context import GUARDED_SPANS
from otel_resilience._sdk import current_client_span_context, readable_fields
from otel_resilience.instrumentation._clientcall import guard_current_span


def test_current_client_span_context_follows_the_current_span() -> None:
    """The current span's context when it is a CLIENT span; None for another kind or none."""
    tracer = TracerProvider().get_tracer("t")
    assert current_client_span_context() is None
    with tracer.start_as_current_span("client", kind=SpanKind.CLIENT) as client:
        assert current_client_span_context() is client.get_span_context()
        with tracer.start_as_current_span("inner", kind=SpanKind.INTERNAL):
            assert current_client_span_context() is None
    assert current_client_span_context() is None


class _ApiOnlySpan(trace.NonRecordingSpan):
    """A span of another SDK: only the public API (``kind``, ``get_span_context``)."""

    def __init__(self, kind: SpanKind) -> None:
        super().__init__(trace.SpanContext(1, 2, is_remote=False, trace_flags=trace.TraceFlags(1)))
        self.kind = kind


def test_current_client_span_context_of_a_span_from_another_sdk() -> None:
    """A span without the SDK's fields is read through the public API."""
    for kind, found in ((SpanKind.CLIENT, True), (SpanKind.SERVER, False)):
        span = _ApiOnlySpan(kind)
        with trace.use_span(span):
            context = current_client_span_context()
        assert (context is span.get_span_context()) is found


def test_readable_fields_match_the_public_properties() -> None:
    """kind, attributes, status code, scope and context read in one call are what the
    ReadableSpan's properties answer."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("scope.name").start_span(
        "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "n": 1}
    )
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    (ended,) = exporter.get_finished_spans()
    assert type(ended) is ReadableSpan
    kind, attributes, code, scope, context = readable_fields(ended)
    expected: tuple[Any, ...] = (
        ended.kind,
        dict(ended.attributes or {}),
        ended.status.status_code,
        ended.instrumentation_scope,
        ended.get_span_context(),
    )
    assert (kind, dict(attributes), code, scope, context) == expected


def test_guard_current_span_enters_only_a_current_client_span() -> None:
    """A guard enters the current span for the processor when it is a CLIENT span (SDK or
    another SDK's), never an internal span or none."""
    tracer = TracerProvider().get_tracer("t")
    GUARDED_SPANS.clear()
    guard_current_span("dep")
    with tracer.start_as_current_span("inner", kind=SpanKind.INTERNAL):
        guard_current_span("dep")
    assert GUARDED_SPANS == {}
    with tracer.start_as_current_span("client", kind=SpanKind.CLIENT) as client:
        guard_current_span("dep")
    other = _ApiOnlySpan(SpanKind.CLIENT)
    with trace.use_span(other):
        guard_current_span("dep")
    entered = {
        id(c): (c, "dep", None) for c in (client.get_span_context(), other.get_span_context())
    }
    assert entered == GUARDED_SPANS
    GUARDED_SPANS.clear()
