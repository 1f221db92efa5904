"""Trace links: from "the breaker opened" to the trace of the call that tripped it.

Every transition to OPEN is a log record naming the dependency, the failure rate, the
last error type and the trace and span ids of the tripping call; it goes to std logging
(logger ``otel_resilience._trace_links``) and, when an OTel LoggerProvider is set and no
OTel logging handler already forwards std logging, to OTel logs as well. The transitions
counter is recorded in the same call's context (``call_context``), so trace-based
exemplars link the metric to that trace.

Which span is "the call": when a client span fed the breaker (the span processor), that
span; when a guard recorded the outcome, the span current where the guarded call was made.
Listeners run synchronously on the thread that recorded the outcome, so both are at hand.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from ._breaker import CircuitBreaker, State

__all__ = ["TRIPPING_SPAN", "call_context", "log_open_transition", "span_ids"]

_log = logging.getLogger(__name__)

TRIPPING_SPAN: ContextVar[SpanContext | None] = ContextVar(
    "otel_resilience_tripping_span", default=None
)
"""Set by the span processor while it records a failed span's outcome."""

# The telemetry dependency logs its own transitions (_exporter), and a log record about
# failing export must not be sent through that export.
_SKIPPED = frozenset({"telemetry"})


def _call_span_context() -> SpanContext | None:
    tripping = TRIPPING_SPAN.get()
    if tripping is not None and tripping.is_valid:
        return tripping
    current = trace.get_current_span().get_span_context()
    return current if current.is_valid else None


def call_context() -> Context | None:
    """The context of the call being recorded now (for exemplars), or None for the current."""
    tripping = TRIPPING_SPAN.get()
    if tripping is None or not tripping.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(tripping))


def span_ids(span_context: SpanContext | None) -> tuple[str | None, str | None]:
    """The hex trace and span ids of ``span_context`` (None, None when there is none)."""
    if span_context is None:
        return None, None
    return (
        trace.format_trace_id(span_context.trace_id),
        trace.format_span_id(span_context.span_id),
    )


def log_open_transition(breaker: CircuitBreaker, old: State, new: State) -> None:
    """A breaker listener: one log record per transition to OPEN, with the trace link."""
    if new is not State.OPEN or breaker.name in _SKIPPED:
        return
    try:
        snapshot = breaker.snapshot()
        span_context = _call_span_context()
        trace_id, span_id = span_ids(span_context)
        attributes: dict[str, Any] = {
            "dependency.name": breaker.name,
            "breaker.from_state": old.value,
            "breaker.state": new.value,
            "breaker.failure_rate": round(snapshot.failure_rate, 4),
            "error.type": snapshot.last_error_type or "unknown",
        }
        if trace_id is not None:
            attributes["trace_id"] = trace_id
            attributes["span_id"] = span_id
        message = (
            f"circuit breaker for {breaker.name!r} opened ({old.value} -> open): failure rate "
            f"{snapshot.failure_rate:.0%}, last error {snapshot.last_error_type or 'unknown'}, "
            f"retry in {snapshot.open_seconds:.3g}s"
            + (f"; tripped by trace_id={trace_id} span_id={span_id}" if trace_id else "")
        )
        # The tripping call's span is made current while logging, so handlers that read
        # the current span (OTel's LoggingHandler, log correlation) see the same ids.
        token = None
        if span_context is not None and TRIPPING_SPAN.get() is not None:
            token = context_api.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
        try:
            _log.warning(message, extra={"otel_resilience": attributes})
            _emit_otel_log(message, attributes, span_context)
        finally:
            if token is not None:
                context_api.detach(token)
    except Exception:
        _log.debug("could not log the opening of %r", breaker.name, exc_info=True)


def _forwarded_by_otel_handler() -> bool:
    logger: logging.Logger | None = _log
    while logger is not None:
        for handler in logger.handlers:
            if type(handler).__module__.startswith("opentelemetry"):
                return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _emit_otel_log(
    message: str, attributes: dict[str, Any], span_context: SpanContext | None
) -> None:
    """Send the record to OTel logs when a LoggerProvider is set and std logging is not
    already forwarded there (which would send it twice)."""
    from opentelemetry import _logs

    provider = _logs.get_logger_provider()
    # The API's stand-ins until an SDK LoggerProvider is set (the proxy class is internal).
    if type(provider).__name__ in ("ProxyLoggerProvider", "NoOpLoggerProvider"):
        return
    if not _log.isEnabledFor(logging.WARNING) or _forwarded_by_otel_handler():
        return
    context = (
        trace.set_span_in_context(NonRecordingSpan(span_context))
        if span_context is not None
        else None
    )
    _logs.get_logger("otel_resilience").emit(
        context=context,
        severity_number=_logs.SeverityNumber.WARN,
        severity_text="WARNING",
        body=message,
        attributes=attributes,
        event_name="otel_resilience.breaker.opened",
    )
