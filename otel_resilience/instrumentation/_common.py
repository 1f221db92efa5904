"""What every client guard shares: the guarded-call bookkeeping and span marks.

Installing guards is ``_install.Installer``'s (``Patcher`` is its former name).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from time import perf_counter
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY

from .._context import GUARDED, GUARDED_ATTRIBUTE, REJECTED_ATTRIBUTE
from .._guard import Entry
from ._install import Installer as Patcher

__all__ = ["Call", "Patcher", "mark_current_span"]


def mark_current_span(rejected: bool = False) -> None:
    """Mark a current client span as guarded (and rejected), for the span processor."""
    # The context lookup get_current_span() does, without its layers: this runs per call.
    span: Any = get_current().get(_SPAN_KEY)
    if span is None:
        return
    if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
        span.set_attribute(GUARDED_ATTRIBUTE, True)
        if rejected:
            span.set_attribute(REJECTED_ATTRIBUTE, True)


class Call:
    """One guarded client call: admission, the GUARDED context, timing, and the outcome.

    ``is_failure`` decides for exceptions the client raises (a server error reply means
    the dependency answered); the entry's business errors and predicate still apply.
    """

    __slots__ = ("entry", "is_failure", "start", "token")

    def __init__(self, entry: Entry, is_failure: Callable[[BaseException], bool]) -> None:
        self.entry = entry
        self.is_failure = is_failure
        self.start = 0.0
        self.token: contextvars.Token[str | None] | None = None

    def admit(self) -> bool:
        """Ask the breaker; on yes, enter the GUARDED context and start the clock."""
        if not self.entry.breaker.allow():
            mark_current_span(rejected=True)
            return False
        mark_current_span()
        self.token = GUARDED.set(self.entry.name)
        if self.entry.timed:  # only slow-call accounting needs the duration
            self.start = perf_counter()
        return True

    def _leave(self) -> float:
        if self.token is not None:
            GUARDED.reset(self.token)
            self.token = None
        return perf_counter() - self.start if self.start else 0.0

    def succeeded(self, failed: bool = False, error_type: str | None = None) -> None:
        """The call returned (``failed``: it returned an answer that counts as a failure)."""
        duration = self._leave()
        if failed:
            self.entry.breaker.record_failure(duration, error_type)
        else:
            self.entry.breaker.record_success(duration)

    def raised(self, exc: BaseException) -> bool:
        """The call raised ``exc``; True when it counts as a dependency failure."""
        duration = self._leave()
        if isinstance(exc, Exception) and not self.is_failure(exc):
            self.entry.breaker.record_success(duration)
            return False
        return self.entry.record_exception(exc, duration)
