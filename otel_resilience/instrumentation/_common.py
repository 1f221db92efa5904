"""What every client guard shares: span marks (and ``Patcher``, the installer's old name).

Guards are installed by ``_install.Installer`` (as the innermost layer under the OTel
instrumentations); ``Patcher`` is kept as its name for the client modules that use it.

The guarded call itself runs on the one path of ``otel_resilience._guard`` (its module
docstring says how a client guard declares itself).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import Span as SDKSpan
from opentelemetry.trace import SpanKind

from .._context import GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE
from .._sdk import context_span, mark_client_span
from ._install import Installer as Patcher

__all__ = ["Patcher", "mark_current_span"]


_CLIENT = SpanKind.CLIENT  # read once: an enum member read costs about 0.1 µs each time
_GUARDED_KEYS = (GUARDED_ATTRIBUTE,)
_REJECTED_KEYS = (GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE)

# Span classes seen by mark_current_span, and whether they are the SDK's.
_SDK_SPAN_TYPES: dict[type, bool] = {}


def mark_current_span(rejected: bool = False) -> None:
    """Mark a current client span as guarded (and rejected), for the span processor."""
    # The context lookup get_current_span() does, without its layers: this runs per call.
    span: Any = context_span()
    if span is None:
        return
    cls = type(span)
    sdk = _SDK_SPAN_TYPES.get(cls)
    if sdk is None:  # isinstance() on the API's abstract Span class is slow: once a type
        sdk = _SDK_SPAN_TYPES[cls] = issubclass(cls, SDKSpan)
    # An SDK span that is not a CLIENT span (usually the app's own server span): nothing to
    # mark; one with room for the keys: marked without set_attribute()'s layers of calls.
    if sdk and mark_client_span(span, _REJECTED_KEYS if rejected else _GUARDED_KEYS) is not False:
        return
    # The kind first: usually the current span is the app's own (a server span).
    if getattr(span, "kind", None) is _CLIENT and span.is_recording():
        span.set_attribute(GUARDED_ATTRIBUTE, True)
        if rejected:
            span.set_attribute(REJECTED_ATTRIBUTE, True)
