"""The span processor: every ended client span feeds its dependency's breaker.

``on_end`` runs on the application's thread and the SDK does not catch what it raises,
so the whole body is guarded: a malformed span is skipped, never an error in the app.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from ._context import GUARDED, GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE, http_status_is_failure
from ._dependency import Dependency
from ._registry import Registry
from ._semconv import lookup

__all__ = ["BreakerSpanProcessor", "span_outcome"]

_log = logging.getLogger("otel_resilience")

_STATUS_KEYS = ("http.response.status_code", "http.status_code")
_ERROR = StatusCode.ERROR
_CLIENT = SpanKind.CLIENT
_PRODUCER = SpanKind.PRODUCER


def _plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as the plain dict the SDK keeps them in, when it can be reached.

    ``ReadableSpan.attributes`` is a read-only proxy over ``BoundedAttributes`` whose
    ``get`` goes through the generic Mapping machinery: several times slower per lookup,
    and on_end makes a dozen. The public mapping is the fallback when the layout differs.
    """
    bounded = getattr(span, "_attributes", None)
    plain = getattr(bounded, "_dict", None)
    if type(plain) is dict:
        return plain
    public = span.attributes
    return public if public is not None else {}


def span_outcome(span: ReadableSpan, attributes: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``(failed, error_type)`` of a client span, by the rules of DESIGN.md 5.

    For HTTP the response status decides first (5xx and 429 fail, other statuses mean
    the server answered, although the instrumentations mark every status >= 400 ERROR).
    Otherwise an ERROR status or an ``error.type`` attribute is a failure.
    """
    for key in _STATUS_KEYS:
        raw = attributes.get(key)
        if raw is not None:
            try:
                code = int(raw)
            except (TypeError, ValueError):
                break
            if code > 0:
                if http_status_is_failure(code):
                    error_type = attributes.get("error.type")
                    return True, str(error_type) if error_type else str(code)
                return False, None
            break
    error_type = attributes.get("error.type")
    status = span.status
    if error_type or (status is not None and status.status_code is _ERROR):
        if not error_type:
            for event in span.events or ():
                if event.name == "exception" and event.attributes:
                    error_type = event.attributes.get("exception.type")
                    break
        return True, str(error_type) if error_type else "error"
    return False, None


class BreakerSpanProcessor(SpanProcessor):
    """Records every ended CLIENT span (and PRODUCER, when asked) on its dependency's breaker.

    Spans of calls that a client guard handled (``_context.GUARDED``, or the span's
    guarded/rejected marks) are skipped: the guard records them, so each call counts once.
    Client spans that match no declared dependency become observe-only dependencies named
    by their ``db.system`` or server address, up to ``max_discovered`` of them.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        auto_discover: bool = True,
        max_discovered: int = 50,
        include_producer: bool = False,
    ) -> None:
        if max_discovered < 0:
            raise ValueError(f"max_discovered must be >= 0, got {max_discovered!r}")
        self.registry = registry
        self.auto_discover = auto_discover
        self.max_discovered = max_discovered
        self.include_producer = include_producer
        self.enabled = True
        self._discovered: set[str] = set()
        self._discover_lock = threading.Lock()
        self._last_error_log = 0.0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Record the span's outcome on its dependency's breaker; never raises."""
        try:
            kind = getattr(span, "_kind", None) or span.kind
            if kind is not _CLIENT and not (self.include_producer and kind is _PRODUCER):
                return
            if not self.enabled or GUARDED.get() is not None:
                # Ended inside a client guard's call: the guard counted it.
                return
            attributes = _plain_attributes(span)
            if attributes.get(GUARDED_ATTRIBUTE) or attributes.get(REJECTED_ATTRIBUTE):
                return
            registry = self.registry
            name = registry.classify(attributes)
            if name is None:
                if not self.auto_discover:
                    return
                name = self._discover(attributes)
                if name is None:
                    return
            entry = registry._entries[name]
            failed, error_type = span_outcome(span, attributes)
            duration = 0.0
            if failed or entry.timed:
                # Only slow-call accounting needs the duration.
                start, end = span.start_time, span.end_time
                if start is not None and end is not None:
                    duration = (end - start) / 1e9
            if failed:
                entry.breaker.record_failure(duration, error_type)
            else:
                entry.breaker.record_success(duration)
        except Exception:
            self._log_error()

    def _discover(self, attributes: Mapping[str, Any]) -> str | None:
        """The observe-only dependency for an unmatched span, declared on first sight."""
        system = lookup(attributes, "db.system")
        if system:
            base, match = system, {"db.system": system}
        else:
            address = lookup(attributes, "server.address")
            if not address:
                return None
            base, match = address, {"server.address": address}
        registry = self.registry
        if base in self._discovered:
            return base
        auto_name = f"auto:{base}"
        if auto_name in self._discovered:
            return auto_name
        with self._discover_lock:
            if len(self._discovered) >= self.max_discovered:
                return None
            name = base if base not in registry else auto_name
            if name in registry:
                return name if name in self._discovered else None
            registry.add(Dependency(name, match=match, observe_only=True))
            self._discovered.add(name)
            return name

    def _log_error(self) -> None:
        # At most one line a minute: a bad span shape repeats on every call.
        now = time.monotonic()
        if now - self._last_error_log >= 60.0:
            self._last_error_log = now
            _log.warning("otel_resilience: could not record a span on its breaker", exc_info=True)

    def shutdown(self) -> None:
        """Stop recording spans."""
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True
