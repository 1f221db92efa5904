"""A client guard's span mark: what set_attribute() would write, on the right spans only."""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import SpanKind, use_span

from otel_resilience._context import GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE
from otel_resilience.instrumentation._common import mark_current_span


def test_a_current_client_span_is_marked_guarded_and_rejected() -> None:
    """Inside a live SDK client span the marks land on the span's attributes."""
    tracer = TracerProvider().get_tracer("test")
    span = tracer.start_span("GET", kind=SpanKind.CLIENT)
    with use_span(span, end_on_exit=True):
        mark_current_span()
        assert dict(span.attributes or {}) == {GUARDED_ATTRIBUTE: True}
        mark_current_span(rejected=True)
    assert dict(span.attributes or {}) == {GUARDED_ATTRIBUTE: True, REJECTED_ATTRIBUTE: True}


def test_other_kinds_and_ended_spans_are_left_alone() -> None:
    """A server span (the app's own) and a client span that has ended get no mark."""
    tracer = TracerProvider().get_tracer("test")
    server = tracer.start_span("handler", kind=SpanKind.SERVER)
    with use_span(server, end_on_exit=True):
        mark_current_span()
    client = tracer.start_span("GET", kind=SpanKind.CLIENT)
    with use_span(client, end_on_exit=False):
        client.end()
        mark_current_span()
    assert not server.attributes
    assert not client.attributes


def test_a_span_at_its_attribute_limit_is_marked_as_set_attribute_does() -> None:
    """With no room left the mark goes through set_attribute(): the oldest attribute makes
    way and the count stays within the limit."""
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
    span = provider.get_tracer("test").start_span(
        "GET", kind=SpanKind.CLIENT, attributes={"a": 1, "b": 2}
    )
    with use_span(span, end_on_exit=True):
        mark_current_span()
    assert dict(span.attributes or {}) == {"b": 2, GUARDED_ATTRIBUTE: True}
    assert span.dropped_attributes == 1
