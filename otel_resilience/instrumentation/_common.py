"""What every client guard shares: span marks (and ``Patcher``, the installer's old name).

Guards are installed by ``_install.Installer`` (as the innermost layer under the OTel
instrumentations); ``Patcher`` is kept as its name for the client modules that use it.

The guarded call itself runs on the one path of ``otel_resilience._guard`` (its module
docstring says how a client guard declares itself).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY

from .._context import GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE
from ._install import Installer as Patcher

__all__ = ["Patcher", "mark_current_span"]


_CLIENT = SpanKind.CLIENT  # read once: an enum member read costs about 0.1 µs each time


def mark_current_span(rejected: bool = False) -> None:
    """Mark a current client span as guarded (and rejected), for the span processor."""
    # The context lookup get_current_span() does, without its layers: this runs per call.
    span: Any = get_current().get(_SPAN_KEY)
    if span is None:
        return
    # The kind first: usually the current span is the app's own (a server span).
    if getattr(span, "kind", None) is _CLIENT and span.is_recording():
        span.set_attribute(GUARDED_ATTRIBUTE, True)
        if rejected:
            span.set_attribute(REJECTED_ATTRIBUTE, True)
