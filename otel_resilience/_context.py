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
  the guard, so the span ends after the guard returned), the guard enters the span's
  context in ``GUARDED_SPANS`` with the dependency's name; the processor takes it out
  when the span ends and skips the span if it belongs to that dependency. Nothing is
  added to the span: what the application traces is unchanged.

A guard of a call that runs no other guarded call inside (a Redis command: a *leaf*
client) may skip ``GUARDED`` on a closed breaker's success path, and hand the success to
the span (``hand_success_to_span``): when the current client span will reach a breaker
span processor that is switched on (``SPAN_COUNTERS``), its entry in
``GUARDED_SPANS`` carries the guard's breaker, and the processor counts the success on it
when the span ends, in place of the guard. A call that fails takes its success back
(``take_back``) and records its outcome itself, as any guard does.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar
from typing import Any, TypeAlias

from opentelemetry.trace import SpanKind

from ._sdk import SPAN_KEY, current_client_span_context, get_current_context

__all__ = [
    "GUARDED",
    "GUARDED_SPANS",
    "PROBING",
    "SPAN_COUNTERS",
    "count_handed_successes",
    "count_success",
    "hand_success_to_span",
    "http_status_is_failure",
    "is_guarded",
    "mark_current_client_span",
    "mark_guarded_span",
    "take_back",
]

GuardedMark: TypeAlias = str | tuple[str, ...]
"""What ``GUARDED`` holds: the dependency guarded in this call, or several names."""

GUARDED: ContextVar[GuardedMark | None] = ContextVar("otel_resilience_guarded", default=None)

# Set by the health prober around an active check. The prober decides what the check means
# for the breaker (it may be the half-open trial call), so client guards let the check's
# own calls through unguarded; the prober also sets GUARDED, so their spans are not counted
# (and a guard's fast lane, which runs only while GUARDED is unset, need not read PROBING).
PROBING: ContextVar[bool] = ContextVar("otel_resilience_probing", default=False)

GuardedSpan: TypeAlias = tuple[object, str, Any]
"""An entry of ``GUARDED_SPANS``: ``(span context, dependency name, breaker or None)``."""

GUARDED_SPANS: dict[int, GuardedSpan] = {}
"""``id(span context) -> (span context, dependency name, breaker)`` of client spans whose
call a guard recorded (breaker None), or whose call's success a guard handed to the span
(``hand_success_to_span``: the processor counts it on that breaker), taken out by the span
processor when they end. The context is held, so its id cannot be reused while it is here.
Bounded: at ``MAX_GUARDED_SPANS`` the oldest half of the entries goes (spans that never
reached a processor, such as when none is installed), so only more guarded calls than half
that in flight at once could see one of theirs counted twice (or a handed success lost)."""

SPAN_COUNTERS: dict[object, list[object]] = {}
"""The span pipelines (a provider's ``_active_span_processor``, which its spans end
through) on which a switched-on ``BreakerSpanProcessor`` counts handed successes, each
with those processors (``count_handed_successes``; ``configure()`` enters its own)."""


def count_handed_successes(pipeline: object, processor: object, *, counting: bool) -> None:
    """Enter ``processor`` in ``SPAN_COUNTERS`` as counting the handed successes of the
    spans of ``pipeline`` (``counting``), or take it out; a pipeline with none left goes."""
    holders = [known for known in SPAN_COUNTERS.get(pipeline, ()) if known is not processor]
    if counting:
        holders.append(processor)
    if holders:
        SPAN_COUNTERS[pipeline] = holders
    else:
        SPAN_COUNTERS.pop(pipeline, None)


MAX_GUARDED_SPANS = 4096
_CLIENT = SpanKind.CLIENT


def count_success(breaker: Any) -> None:
    """Count a success on ``breaker`` as a guard does after a call on a CLOSED breaker:
    ``CircuitBreaker.record_success``'s steady case inline, else the record."""
    if breaker._steady_ring.steady:
        next(breaker._fast_successes)
    else:
        breaker.record_success()


def _forget_oldest(spans: dict[int, GuardedSpan]) -> None:
    """Drop the oldest half of the entries (the table is full).

    Half at once, not one per new entry: a dict keeps the slots of removed keys until it
    is resized, so finding the oldest entry again and again would scan ever more of them
    (several µs per guarded call once the table stays full). The keys are listed in one
    C call, which no other thread interleaves with.
    """
    try:
        oldest = list(itertools.islice(spans, MAX_GUARDED_SPANS // 2))
    except RuntimeError:  # pragma: no cover - changed size meanwhile: the next call drops
        return
    for key in oldest:
        spans.pop(key, None)


def mark_guarded_span(span_context: object, name: str) -> None:
    """Enter a client span's context in ``GUARDED_SPANS`` for dependency ``name`` (the
    guard records the call). A success handed to the same span by an earlier call within it
    is counted now: taken out at once, so it is counted once."""
    spans = GUARDED_SPANS
    if len(spans) >= MAX_GUARDED_SPANS:
        _forget_oldest(spans)
    key = id(span_context)
    earlier = spans.pop(key, None)
    spans[key] = (span_context, name, None)
    if earlier is not None and earlier[2] is not None:
        count_success(earlier[2])


def mark_current_client_span(name: str) -> None:
    """Enter the current span in ``GUARDED_SPANS`` for dependency ``name`` when it is a
    CLIENT span: the instrumentation's span of the call a client guard is in, which ends
    after the guard returned. Every client guard does this for every call: one frame."""
    span: Any = get_current_context().get(SPAN_KEY)
    if span is None:
        return
    try:
        # ``_sdk.kind_and_context``'s fields one at a time: between two real calls, two
        # specialised loads touch less memory than the ``attrgetter``.
        kind = span._kind
        span_context = span._context
    except AttributeError:  # not the SDK's span: the public API
        span_context = current_client_span_context()
        if span_context is None:
            return
    else:
        if kind is not _CLIENT:
            return
    mark_guarded_span(span_context, name)


def hand_success_to_span(name: str, breaker: Any) -> GuardedSpan | None:
    """Leave the success of a leaf client's call on a CLOSED breaker to its span: when
    the current span is a recording CLIENT span of a pipeline in ``SPAN_COUNTERS`` that
    no other guarded call marked yet, enter it in ``GUARDED_SPANS`` with ``breaker`` and
    answer the entry (the guard then neither sets ``GUARDED`` nor counts; if the call
    fails, ``take_back(entry)``). Otherwise mark the span as ``mark_current_client_span``
    does and answer None: the guard counts the call itself."""
    span: Any = get_current_context().get(SPAN_KEY)
    if span is None:
        return None
    try:
        kind = span._kind
        span_context = span._context
        pipeline = span._span_processor
        ended = span._end_time
    except AttributeError:  # not the SDK's recording span: the public API
        span_context = current_client_span_context()
        if span_context is not None:
            mark_guarded_span(span_context, name)
        return None
    if kind is not _CLIENT:
        return None
    if ended is None and pipeline in SPAN_COUNTERS:
        spans = GUARDED_SPANS
        if len(spans) >= MAX_GUARDED_SPANS:
            _forget_oldest(spans)
        entry = (span_context, name, breaker)
        if spans.setdefault(id(span_context), entry) is entry:
            return entry
    mark_guarded_span(span_context, name)
    return None


def take_back(entry: GuardedSpan) -> None:
    """The call whose success was handed to its span (``entry``) did not succeed: its
    guard records the outcome, and the span is skipped as for any guarded call."""
    GUARDED_SPANS[id(entry[0])] = (entry[0], entry[1], None)


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
