"""Context shared by guards and the span processor, so each call counts once.

A guard (``Registry.call``/``protect``/``guard`` and the client guards of
``instrumentation/``, all on the one path of ``_guard.py``) records the outcome of the
call it wraps itself, because it sees calls that have no span (asyncpg connects,
unsampled traces) and must decide on a fallback. Spans of guarded calls must then not be
counted again, and a guard inside another guard of the same dependency must join it:

- the guard sets ``GUARDED`` for the duration of the call to the dependencies guarded in
  this call (the name of one, or a tuple of several names when guards of different
  dependencies nest; ``is_guarded`` reads it), so a span that ends inside the guarded
  call (the client span of that very call: context variables are per thread and per
  asyncio task) is skipped by the processor, and a nested guard of a dependency already
  named takes no permit and records nothing; and
- when the client span is already current as the guard runs (the instrumentation wraps
  the guard), the guard sets ``GUARDED_ATTRIBUTE`` on it (``True``; and
  ``REJECTED_ATTRIBUTE`` when the guard rejected the call or served a fallback), which the
  processor also honours.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TypeAlias

__all__ = [
    "GUARDED",
    "GUARDED_ATTRIBUTE",
    "PROBING",
    "REJECTED_ATTRIBUTE",
    "http_status_is_failure",
    "is_guarded",
]

GuardedMark: TypeAlias = str | tuple[str, ...]
"""What ``GUARDED`` holds: the dependency guarded in this call, or several names."""

GUARDED: ContextVar[GuardedMark | None] = ContextVar("otel_resilience_guarded", default=None)

# Set by the health prober around an active check. The prober decides what the check means
# for the breaker (it may be the half-open trial call), so client guards let the check's
# own calls through unguarded; the prober also sets GUARDED, so their spans are not counted.
PROBING: ContextVar[bool] = ContextVar("otel_resilience_probing", default=False)

GUARDED_ATTRIBUTE = "otel_resilience.guarded"
REJECTED_ATTRIBUTE = "otel_resilience.rejected"


def is_guarded(mark: GuardedMark | None, name: str) -> bool:
    """Whether ``mark`` (a value of ``GUARDED``) names dependency ``name``."""
    if mark is None:
        return False
    return mark == name or (type(mark) is tuple and name in mark)


def http_status_is_failure(status: int) -> bool:
    """Whether an HTTP response status means the dependency failed (DESIGN.md 5).

    5xx and 429 are failures; other statuses, 4xx included, mean the server answered.
    """
    return status >= 500 or status == 429
