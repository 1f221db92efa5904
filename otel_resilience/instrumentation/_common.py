"""What every client guard shares: span marks (and ``Patcher``, the installer's old name).

Guards are installed by ``_install.Installer`` (as the innermost layer under the OTel
instrumentations); ``Patcher`` is kept as its name for the client modules that use it.

The guarded call itself runs on the one path of ``otel_resilience._guard`` (its module
docstring says how a client guard declares itself).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import get_current
from opentelemetry.sdk.trace import Span as SDKSpan
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY

from .._context import GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE
from ._install import Installer as Patcher

__all__ = ["Patcher", "mark_current_span"]


_CLIENT = SpanKind.CLIENT  # read once: an enum member read costs about 0.1 µs each time

# Span classes seen by mark_current_span, and whether they are the SDK's.
_SDK_SPAN_TYPES: dict[type, bool] = {}


def mark_current_span(rejected: bool = False) -> None:
    """Mark a current client span as guarded (and rejected), for the span processor."""
    # The context lookup get_current_span() does, without its layers: this runs per call.
    span: Any = get_current().get(_SPAN_KEY)
    if span is None:
        return
    cls = type(span)
    sdk = _SDK_SPAN_TYPES.get(cls)
    if sdk is None:  # isinstance() on the API's abstract Span class is slow: once a type
        sdk = _SDK_SPAN_TYPES[cls] = issubclass(cls, SDKSpan)
    if sdk:
        if span._kind is not _CLIENT:
            return  # usually the app's own span (a server span): nothing to mark
        attributes = span._attributes
        if (
            type(attributes) is BoundedAttributes
            and not attributes._immutable
            and (attributes.maxlen is None or len(attributes._dict) + 2 <= attributes.maxlen)
        ):
            # What set_attribute() does for a live span with room for the keys (boolean
            # values need no cleaning), without its four layers of calls: every guarded
            # client call runs this. Under the span's lock, as set_attribute() writes.
            with span._lock:
                if span._end_time is None:
                    attributes._dict[GUARDED_ATTRIBUTE] = True
                    if rejected:
                        attributes._dict[REJECTED_ATTRIBUTE] = True
            return
    # The kind first: usually the current span is the app's own (a server span).
    if getattr(span, "kind", None) is _CLIENT and span.is_recording():
        span.set_attribute(GUARDED_ATTRIBUTE, True)
        if rejected:
            span.set_attribute(REJECTED_ATTRIBUTE, True)
