"""The one guarded-call path: admission, the joined-call context, the outcome, the fallback.

Every guard runs on the functions here: ``Registry.call``/``acall``/``protect``/``guard``
and every client guard of ``instrumentation/``. What differs between them is declared,
not written again.

The API (for client guards and for features that hook into the path):

``Entry``
    One per declared dependency (``registry._entry(name)``): its breaker and the flags the
    hot path reads, computed once. ``entry.fast`` is true when a call on a CLOSED breaker
    needs nothing but the call and a success record. Two hooks, None by default and read
    only off the fast path (assigning one recomputes ``fast``; so does ``refresh()`` after
    ``entry.dependency`` was replaced):

    - ``entry.admission``: an ``Admission``, asked after the breaker admitted a call. It may
      reject with its own ``reason`` (a concurrency limit: ``"limit"``); the rejection is
      then served or raised exactly like an open breaker's, with that reason (fallback
      reason, and the error class of ``REJECTION_ERRORS[reason]`` mixed with the client's).
      ``release(duration, failed)`` is called once for every call it admitted.
    - ``entry.chaos``: a ``Chaos``; its ``draw()`` may ask, before any I/O, for a sleep
      (``asyncio.sleep`` on the async path) and/or a fault: ``client.fault(message)`` is
      raised and goes through the breaker and the fallback like a real failure.

``Client``
    What a client library declares: ``is_failure(exc)`` (False: the dependency answered,
    such as a Redis error reply), ``answer(result)`` (an error type when a returned result
    is a failure, such as an HTTP 503; the result is still returned), ``open_error`` (the
    rejection error: ``CircuitOpenError`` and the client's own connection error),
    ``fault`` (the client's connection error, for chaos), ``serve(entry, reason, subject,
    args, kwargs)`` (answer from the fallback and count it, or return ``NOT_SERVED``),
    ``observe(entry, result, subject, args)`` (see a successful result, e.g. to feed a
    cache), ``on_reject(error, subject)`` (decorate the rejection error), ``timeout_errors`` (which
    failures are fallback reason ``"timeout"``), ``thread_timeout`` (run a sync call with
    ``call_timeout_seconds`` in a worker thread; only for ``Registry.call``/``protect``),
    ``marks_span`` (``guarded_call``/``guarded_acall`` enter the current client span, the
    instrumentation's span of this call, in ``_context.GUARDED_SPANS`` first), ``leaf``
    (no guarded call runs inside this client's call, a Redis command: the success path
    may hand the success to the call's span, below).

``guarded_call(entry, client, fn, args, kwargs, subject)`` / ``await guarded_acall(...)``
    Run ``fn(*args, **kwargs)`` through the breaker. ``subject`` is handed to the client's
    hooks as is (the request, the command list; for ``PLAIN``, the per-call fallback or
    ``MISSING``): nothing is allocated per call. A client guard is then a wrapper that
    looks the entry up (cached per client object) and calls one of these, e.g.
    ``return guarded_call(entry, HTTPX, wrapped, args, kwargs, request)``;
    ``instrumentation/_httpx.py`` is the smallest complete example.

``KeptDependency(client, holder)`` / ``guarded_method``
    For a method guard whose wrapper keeps the dependency it looked up on an attribute of
    the instance (``(installer, entry, subject)`` under ``DEPENDENCY_ATTRIBUTE`` on
    ``instance.<holder>``: the redis-py pool), ``Installer.wrap(..., kept=...)`` makes the
    layer itself run ``guarded_call``'s success path of a closed breaker, and hand
    everything else to the wrapper.

``guarded_iter`` / ``guarded_aiter`` (same arguments), ``Guard``
    A whole iteration as one call (``protect`` on generator functions; a streaming client
    call): no fallback once an item was yielded, and ``answer``/``observe`` are not
    asked. ``Guard`` is ``registry.guard(name)``.

The rules the path keeps (the breaker's own rules are in ``_breaker.py``):

- One call, one admission, one record. ``_context.GUARDED`` names the dependencies
  guarded in the current call; a guard of a dependency already named *joins* the outer
  call: it takes no permit, records nothing, serves no fallback, and only passes on what
  it knows (``_NOTE``): a failure it saw (an exception the app then caught, an HTTP 503
  returned as a response) makes the outer call a failure; an exception its client says
  is an answer (a Redis error reply) counts as one if it reaches the outer guard. Notes
  travel in the context, so a joined call in a task or thread started inside the outer
  call reports only through the exceptions it raises.
- Spans that end while ``GUARDED`` names their dependency are skipped by the span
  processor; a client guard also enters the current client span, which ends after it,
  in ``_context.GUARDED_SPANS``.
- Cancellation (``asyncio.CancelledError``) is no outcome for a call admitted while
  CLOSED; a cancelled half-open trial is a failed probe and re-opens the breaker
  (``CircuitBreaker.admit()`` tells the two apart).
  ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and another breaker's
  ``CircuitOpenError`` are no outcome.
- Durations (slow calls, timeouts) are read from the registry's injected clock, and only
  when a policy needs them.
- The success path on a CLOSED breaker: one ``GUARDED`` set and reset, a note read only
  once a joined call ever left one, the success counted as ``CircuitBreaker``'s steady
  case (one atomic count) or its record; nothing of ours is allocated for it
  (``ContextVar.set`` makes its token; a client guard enters its span with one tuple).
  ``protect`` runs that path in its own wrapper (``protected``/``aprotected``), and a
  method guard that keeps its dependency on the instance in its layer
  (``guarded_method``), without the call into ``guarded_call``.
- A leaf client's outermost call (sync or async) on a fast, CLOSED breaker whose span
  will reach a switched-on span processor does less: it hands its success to that span
  (``_context.hand_success_to_span``: one tuple in ``GUARDED_SPANS``), sets no
  ``GUARDED`` (nothing inside could join it) and counts nothing; the processor counts
  the success on the guard's breaker as the span ends. A call that raises takes the
  success back (``take_back``) and goes through ``_raised`` as any other, so the outcome
  is still the guard's: an error reply is a success, a fallback answer none.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ._breaker import TRIAL, CircuitBreaker, State
from ._context import (
    GUARDED,
    GuardedMark,
    GuardedSpan,
    hand_success_to_span,
    mark_current_client_span,
    take_back,
)
from ._dependency import Criticality, Dependency
from ._errors import CircuitOpenError

__all__ = [
    "DEPENDENCY_ATTRIBUTE",
    "MISSING",
    "NOT_SERVED",
    "PLAIN",
    "REJECTION_ERRORS",
    "Admission",
    "Chaos",
    "Client",
    "Entry",
    "FallbackCounter",
    "Guard",
    "KeptDependency",
    "Verdict",
    "aprotected",
    "guarded_acall",
    "guarded_aiter",
    "guarded_call",
    "guarded_iter",
    "guarded_method",
    "protected",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MISSING: Any = _Sentinel("MISSING")
"""No per-call fallback given, so the dependency's own applies."""

NOT_SERVED: Any = _Sentinel("NOT_SERVED")
"""What ``Client.serve`` returns when it has no answer: the error is raised instead. As
the ``subject`` of a call: serve no fallback at all (a ``guard`` block, a stream that has
already yielded)."""

_NO_RESULT: Any = _Sentinel("NO_RESULT")
"""A call that ended without one result to show ``answer``/``observe`` (a block, a stream)."""

FallbackCounter = Callable[[str, str], None]
"""Called as ``fn(dependency_name, reason)`` each time a fallback is served."""

REJECTION_ERRORS: dict[str, type[CircuitOpenError]] = {"open": CircuitOpenError}
"""The error class of a rejection, by reason (``"open"``; an admission step adds its own)."""


class Verdict(enum.Enum):
    """What an exception means for the breaker (not an int: it never compares equal to the
    count window's outcome bits, ``_window.SUCCESS``/``FAILURE``/``SLOW``)."""

    FAILURE = "failure"
    ANSWERED = "answered"  # the dependency answered (a business error): a success
    NEUTRAL = "neutral"  # no outcome; a half-open permit is given back
    CANCELLED = "cancelled"  # no outcome in CLOSED, a failed probe for a half-open trial


# Read once: an enum member read costs about 0.1 µs each time, and these are per call.
_FAILURE = Verdict.FAILURE
_ANSWERED = Verdict.ANSWERED
_NEUTRAL = Verdict.NEUTRAL
_CANCELLED = Verdict.CANCELLED

_NEUTRAL_TYPES: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)

_CLOSED = State.CLOSED

# What a joined (inner) guard passes on to the outer one of the same dependency:
# (dependency name, the exception or None, whether it is a failure, error type).
_Note = tuple[str, BaseException | None, bool, str | None]
_NOTE: contextvars.ContextVar[_Note | None] = contextvars.ContextVar(
    "otel_resilience_note", default=None
)

_get_mark = GUARDED.get
_set_mark = GUARDED.set
_reset_mark = GUARDED.reset
_get_note = _NOTE.get

# Whether any joined call ever left a note (set before the note, never unset): until then
# the success path of an outer call need not look for one.
_notes_used = False


def _leave_note(note: _Note) -> None:
    """Leave ``note`` for the outer guard (see ``_NOTE``)."""
    global _notes_used  # noqa: PLW0603 - a one-way flag read on the hot path
    _notes_used = True
    _NOTE.set(note)


class Admission(Protocol):
    """A second admission step after the breaker's (for example a concurrency limit)."""

    reason: str
    """The rejection reason: the fallback reason and ``REJECTION_ERRORS`` key."""

    def acquire(self) -> bool:
        """Admit one call now (True), or reject it."""

    def release(self, duration: float, failed: bool) -> None:
        """An admitted call ended (``failed``: counted as a dependency failure)."""


class Chaos(Protocol):
    """Fault injection before a call's I/O."""

    def draw(self) -> tuple[float, bool] | None:
        """``(seconds to sleep first, whether to raise the client's fault)``, or None."""


class Entry:
    """A dependency with its breaker and the flags the hot path needs, computed once."""

    __slots__ = (
        "_admission",
        "_chaos",
        "breaker",
        "business_errors",
        "dependency",
        "fallback",
        "fast",
        "is_failure",
        "measured",
        "name",
        "observer",
        "on_fallback",
        "timed",
        "timeout",
    )

    def __init__(
        self, dependency: Dependency, breaker: CircuitBreaker, on_fallback: FallbackCounter
    ) -> None:
        self.name = dependency.name
        self.dependency = dependency
        self.breaker = breaker
        self.on_fallback = on_fallback
        self._admission: Admission | None = None
        self._chaos: Chaos | None = None
        self.refresh()

    def refresh(self) -> None:
        """Recompute the flags from ``self.dependency`` and the hooks."""
        dependency = self.dependency
        policy = dependency.policy
        self.timed = policy.slow_call_seconds is not None
        self.timeout = policy.call_timeout_seconds
        # Durations are read (from the registry's clock) only when something uses them.
        self.measured = self.timed or self.timeout is not None or self._admission is not None
        # A call on a CLOSED breaker can skip straight to it.
        self.fast = not self.measured and self._chaos is None
        self.fallback = (
            dependency.fallback if dependency.criticality is not Criticality.CRITICAL else None
        )
        # A fallback that learns from the commands that worked (a memory cache): what a
        # ``Client(observes_fallback=True)`` hands each successful call's args and result.
        fallback = self.fallback
        self.observer: Callable[[Any, Any], None] | None = (
            fallback.observe if getattr(fallback, "observes_commands", False) else None  # type: ignore[union-attr]
        )
        self.business_errors = dependency.business_errors
        self.is_failure = dependency.is_failure

    @property
    def admission(self) -> Admission | None:
        """The admission step after the breaker's, or None."""
        return self._admission

    @admission.setter
    def admission(self, admission: Admission | None) -> None:
        self._admission = admission
        self.refresh()

    @property
    def chaos(self) -> Chaos | None:
        """The fault injection step, or None."""
        return self._chaos

    @chaos.setter
    def chaos(self, chaos: Chaos | None) -> None:
        self._chaos = chaos
        self.refresh()

    def verdict(self, exc: BaseException) -> Verdict:
        """What ``exc`` means by the dependency's own rules (business errors, is_failure)."""
        if self.business_errors and isinstance(exc, self.business_errors):
            return _ANSWERED
        if self.is_failure is not None:
            try:
                return _FAILURE if self.is_failure(exc) else _ANSWERED
            except Exception:
                return _FAILURE
        return _FAILURE


def serve_fallback(entry: Entry, reason: str, subject: Any, args: Any, kwargs: Any) -> Any:
    """``PLAIN``'s serve: ``subject`` is the per-call fallback (or ``MISSING``)."""
    fallback = entry.fallback if subject is MISSING else subject
    if fallback is None:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason)
    return fallback(*args, **kwargs)


class Client:
    """How one client library's calls go through the path (see the module docstring)."""

    __slots__ = (
        "answer",
        "errors",
        "fault",
        "hands_success",
        "is_failure",
        "marks_span",
        "name",
        "observe",
        "observes_fallback",
        "on_reject",
        "open_error",
        "serve",
        "thread_timeout",
        "timeout_errors",
    )

    def __init__(
        self,
        name: str,
        *,
        open_error: type[CircuitOpenError] = CircuitOpenError,
        fault: Callable[[str], BaseException] = ConnectionError,
        is_failure: Callable[[BaseException], bool] | None = None,
        answer: Callable[[Any], str | None] | None = None,
        serve: Callable[[Entry, str, Any, Any, Any], Any] = serve_fallback,
        observe: Callable[[Entry, Any, Any, Any], None] | None = None,
        on_reject: Callable[[BaseException, Any], None] | None = None,
        timeout_errors: tuple[type[BaseException], ...] = (),
        thread_timeout: bool = False,
        marks_span: bool = False,
        observes_fallback: bool = False,
        leaf: bool = False,
    ) -> None:
        self.name = name
        self.open_error = open_error
        self.errors: dict[str, type[CircuitOpenError]] = {"open": open_error}
        self.fault = fault
        self.is_failure = is_failure
        self.answer = answer
        self.serve = serve
        self.observe = observe
        self.on_reject = on_reject
        self.timeout_errors: tuple[type[BaseException], ...] = (
            TimeoutError,
            asyncio.TimeoutError,
            *timeout_errors,
        )
        self.thread_timeout = thread_timeout
        self.marks_span = marks_span
        self.observes_fallback = observes_fallback
        # A leaf call (no guarded call runs inside it) on a CLOSED breaker may hand its
        # success to its span (_context.hand_success_to_span); not when a returned result
        # can be a failure (answer), which only the guard sees.
        self.hands_success = leaf and marks_span and answer is None

    def __repr__(self) -> str:
        return f"<Client {self.name}>"

    def rejection(self, entry: Entry, reason: str, subject: Any) -> BaseException:
        """The error a call rejected for ``reason`` raises."""
        error_class = self.errors.get(reason)
        if error_class is None:
            error_class = self._error_class(reason)
        error = error_class(entry.name, entry.breaker.retry_after())
        if self.on_reject is not None:
            self.on_reject(error, subject)
        return error

    def _error_class(self, reason: str) -> type[CircuitOpenError]:
        base = REJECTION_ERRORS.get(reason, CircuitOpenError)
        if self.open_error is CircuitOpenError or issubclass(self.open_error, base):
            error_class = base
        else:
            # Both the reason's error and the client's own (through its open error).
            error_class = type(
                base.__name__.replace("Error", "") + self.open_error.__name__,
                (base, self.open_error),
                {"__module__": self.open_error.__module__},
            )
        self.errors[reason] = error_class
        return error_class

    def verdict(self, entry: Entry, exc: BaseException) -> Verdict:
        """What ``exc`` raised by a call means for the breaker."""
        if isinstance(exc, asyncio.CancelledError):
            return _CANCELLED
        if isinstance(exc, _NEUTRAL_TYPES):
            return _NEUTRAL
        if self.is_failure is not None and isinstance(exc, Exception):
            try:
                if not self.is_failure(exc):
                    return _ANSWERED
            except Exception:
                return _FAILURE
        return entry.verdict(exc)


PLAIN = Client("plain", thread_timeout=True)
"""``Registry.call``/``acall``/``protect``: ``subject`` is the per-call fallback."""


# -- the parts of the path -----------------------------------------------------------


def _joined(mark: GuardedMark, name: str) -> GuardedMark:
    """``mark`` with ``name`` added (guards of different dependencies nest)."""
    if type(mark) is tuple:
        return (*mark, name)
    return (mark, name)  # type: ignore[return-value]  # mark is a str here


def _note_exception(entry: Entry, client: Client, exc: BaseException) -> None:
    """A joined call raised ``exc``: tell the outer guard what it means."""
    verdict = client.verdict(entry, exc)
    if verdict is _FAILURE:
        _leave_note((entry.name, exc, True, type(exc).__name__))
    elif verdict is _ANSWERED:
        note = _get_note()
        if note is None or note[0] != entry.name or not note[2]:  # a failure note stays
            _leave_note((entry.name, exc, False, None))


def _note_result(entry: Entry, client: Client, result: Any) -> None:
    """A joined call returned ``result``: tell the outer guard if it is a failure."""
    if client.answer is not None:
        error_type = client.answer(result)
        if error_type is not None:
            _leave_note((entry.name, None, True, error_type))


def _take_note(name: str) -> _Note | None:
    """The note joined calls left for the outer call of ``name``, consumed."""
    note = _get_note()
    if note is None or note[0] != name:
        return None
    _NOTE.set(None)
    return note


def _admit(entry: Entry) -> tuple[bool, Admission | None, str | None]:
    """Ask the breaker and the admission step: ``(trial, admission, rejection reason)``."""
    breaker = entry.breaker
    admitted = breaker.admit()
    if not admitted:
        return False, None, "open"
    trial = admitted == TRIAL
    admission = entry._admission
    if admission is not None and not admission.acquire():
        if trial:
            breaker.release()
        return False, None, admission.reason
    return trial, admission, None


def _rejected(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry, client: Client, reason: str, subject: Any, args: Any, kwargs: Any
) -> Any:
    """A rejected call: the fallback's answer, or the rejection error raised."""
    served = client.serve(entry, reason, subject, args, kwargs)
    if served is NOT_SERVED:
        raise client.rejection(entry, reason, subject)
    return served


def _chaos_plan(entry: Entry, client: Client) -> tuple[float, BaseException | None] | None:
    """What the chaos hook asks of this call: a delay and a fault to raise."""
    chaos = entry._chaos
    if chaos is None:
        return None
    plan = chaos.draw()
    if plan is None:
        return None
    delay, fail = plan
    fault = client.fault(f"fault injected by chaos for dependency {entry.name!r}") if fail else None
    return delay, fault


def _observe(entry: Entry, client: Client, result: Any, subject: Any, args: Any) -> None:
    """Show a successful result to the client's observer, or to the fallback that learns
    from commands (``observes_fallback``); their errors never reach the app."""
    try:
        observe = client.observe
        if observe is not None:
            observe(entry, result, subject, args)
        elif client.observes_fallback:
            observer = entry.observer
            if observer is not None:
                observer(args, result)
    except Exception:
        _log.debug("observing a result of %s failed", entry.name, exc_info=True)


def _succeeded(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    result: Any,
    duration: float,
    admission: Admission | None,
    subject: Any,
    args: Any,
) -> None:
    """Record a call that returned ``result`` (a failure if its client or a note says so)."""
    answer = client.answer if result is not _NO_RESULT else None
    error_type = answer(result) if answer is not None else None
    note = _take_note(entry.name)
    if error_type is None and note is not None and note[2]:
        error_type = note[3]
    if error_type is None:
        entry.breaker.record_success(duration)
    else:
        entry.breaker.record_failure(duration, error_type)
    if admission is not None:
        admission.release(duration, error_type is not None)
    if (client.observe is not None or client.observes_fallback) and result is not _NO_RESULT:
        _observe(entry, client, result, subject, args)


def _raised(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    exc: BaseException,
    duration: float,
    trial: bool,
    admission: Admission | None,
    subject: Any,
    args: Any,
    kwargs: Any,
) -> Any:
    """Record a call that raised ``exc``; the fallback's answer, or ``NOT_SERVED``."""
    verdict = client.verdict(entry, exc)
    error_type = type(exc).__name__
    note = _take_note(entry.name)
    if note is not None:
        if note[2]:
            verdict, error_type = _FAILURE, note[3] or error_type
        elif note[1] is exc:
            verdict = _ANSWERED
    breaker = entry.breaker
    if verdict is _FAILURE:
        breaker.record_failure(duration, error_type)
    elif verdict is _ANSWERED:
        breaker.record_success(duration)
    elif verdict is _CANCELLED:
        breaker.record_cancelled(duration, trial)
    elif trial:
        breaker.release()
    if admission is not None:
        admission.release(duration, verdict is _FAILURE)
    if verdict is not _FAILURE or subject is NOT_SERVED:
        return NOT_SERVED
    reason = "timeout" if isinstance(exc, client.timeout_errors) else "error"
    return client.serve(entry, reason, subject, args, kwargs)


# -- sync ------------------------------------------------------------------------------


def guarded_call(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry, client: Client, fn: Callable[..., T], args: Any, kwargs: Any, subject: Any
) -> T:
    """``fn(*args, **kwargs)`` through ``entry``'s breaker (see the module docstring)."""
    name = entry.name
    if client.marks_span:
        if client.hands_success:
            handed = _hand_or_mark(entry, name)
            if handed is not None:
                return _handed_call(entry, client, fn, args, kwargs, subject, handed)  # type: ignore[no-any-return]
        else:
            mark_current_client_span(name)
    mark = _get_mark()
    if mark is None:
        mark = name
    elif mark == name or (type(mark) is tuple and name in mark):
        return _joined_call(entry, client, fn, args, kwargs)
    else:
        mark = _joined(mark, name)
    if not entry.fast or entry.breaker._state is not _CLOSED:
        return _admitted_call(entry, client, fn, args, kwargs, subject, mark)  # type: ignore[no-any-return]
    token = _set_mark(mark)
    try:
        result = fn(*args, **kwargs) if kwargs else fn(*args)
    except BaseException as exc:
        _reset_mark(token)
        served = _raised(entry, client, exc, 0.0, False, None, subject, args, kwargs)
        if served is NOT_SERVED:
            raise
        return served  # type: ignore[no-any-return]
    _reset_mark(token)
    if client.answer is None and not (_notes_used and _get_note() is not None):
        breaker = entry.breaker
        if breaker._steady_ring.steady:  # CircuitBreaker.record_success's steady case
            next(breaker._fast_successes)
        else:
            breaker.record_success()
        observe = client.observe
        if observe is not None:
            try:  # _observe, inlined: per call
                observe(entry, result, subject, args)
            except Exception:
                _log.debug("observing a result of %s failed", entry.name, exc_info=True)
        elif client.observes_fallback:
            observer = entry.observer
            if observer is not None:
                try:  # _observe, inlined: per call (a memory cache keeps what was read)
                    observer(args, result)
                except Exception:
                    _log.debug("observing a result of %s failed", entry.name, exc_info=True)
    else:
        _succeeded(entry, client, result, 0.0, None, subject, args)
    return result


def _hand_or_mark(entry: Entry, name: str) -> GuardedSpan | None:
    """A leaf client's call and its span (``guarded_call``, ``guarded_acall``): the
    outermost call on a fast, CLOSED breaker hands its success to the span and answers
    the entry (``_context.hand_success_to_span``, which marks the span instead when it
    cannot take the success); any other call marks the span, and None is answered."""
    if entry.fast and entry.breaker._state is _CLOSED and _get_mark() is None:
        return hand_success_to_span(name, entry.breaker)
    mark_current_client_span(name)
    return None


def _handed_call(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
    subject: Any,
    handed: GuardedSpan,
) -> Any:
    """A leaf call on a CLOSED breaker whose success was handed to its span (``handed``):
    the call, and the observer; a failure is taken back and goes the usual way."""
    try:
        result = fn(*args, **kwargs) if kwargs else fn(*args)
    except BaseException as exc:
        take_back(handed)
        served = _raised(entry, client, exc, 0.0, False, None, subject, args, kwargs)
        if served is NOT_SERVED:
            raise
        return served
    if client.observe is not None or client.observes_fallback:
        _observe(entry, client, result, subject, args)
    return result


DEPENDENCY_ATTRIBUTE = "_otel_resilience_dependency"
"""Where a client guard keeps the dependency it looked up on a client object (a connection
pool, a connection): ``(installer, entry or None, subject)``."""


class KeptDependency:
    """A method guard's declaration that its dependency is kept on the instance's
    ``holder`` attribute under ``DEPENDENCY_ATTRIBUTE`` by the guard's wrapper, so its
    layer can take the success path of a closed breaker itself (``guarded_method``)."""

    __slots__ = ("client", "holder")

    def __init__(self, client: Client, holder: str) -> None:
        self.client = client
        self.holder = holder


def guarded_method(
    kept: KeptDependency,
    wrapper: Callable[[Any, Any, Any, Any], Any],
    installer: Any,
    probing: Callable[[], bool],
) -> Callable[..., Any]:
    """The guard layer of a method whose dependency is kept on its instance (``kept``).

    Called as the method (``layer(instance, *args, **kwargs)``), it reads its original from
    its own ``__wrapped__``, as the installer's plain layers do. The outermost call on a
    fast, CLOSED breaker runs ``guarded_call``'s success path here, with the original
    unbound: one frame instead of the layer, the wrapper and ``guarded_call``, and no bound
    method or argument tuple made for them. Everything else (the guards off or probing, no
    dependency kept yet or none at all, a joined or nested call, a breaker not CLOSED,
    hooks, a failure) goes to ``wrapper(bound original, instance, args, kwargs)`` or the
    same ``_raised``, so the two paths cannot disagree.
    """
    client = kept.client
    holder = kept.holder
    # The client's flags, fixed when it is made: read from the closure per call.
    hands_success = client.hands_success
    observes_fallback = client.observes_fallback

    def layer(*args: Any, **kwargs: Any) -> Any:
        wrapped = layer.__wrapped__  # type: ignore[attr-defined]
        if not args or not installer.enabled:
            return wrapped(*args, **kwargs)  # (no instance: fails as the method would)
        instance = args[0]
        kept_here = getattr(getattr(instance, holder, None), DEPENDENCY_ATTRIBUTE, None)
        entry = kept_here[1] if kept_here is not None and kept_here[0] is installer else None
        if (
            entry is None
            or not entry.fast
            or entry.breaker._state is not _CLOSED
            or _get_mark() is not None  # (a health check's own call too: PROBING)
        ):
            if probing():
                return wrapped(*args, **kwargs)
            return wrapper(wrapped.__get__(instance, type(instance)), instance, args[1:], kwargs)
        # guarded_call's fast lane, written out (as protect's wrapper does): per call.
        name = entry.name
        if hands_success:
            handed = hand_success_to_span(name, entry.breaker)
            if handed is not None:  # _handed_call, written out
                try:
                    result = wrapped(*args, **kwargs) if kwargs else wrapped(*args)
                except BaseException as exc:
                    take_back(handed)
                    subject = kept_here[2]  # type: ignore[index]
                    served = _raised(
                        entry, client, exc, 0.0, False, None, subject, args[1:], kwargs
                    )
                    if served is NOT_SERVED:
                        raise
                    return served
                if observes_fallback:
                    observer = entry.observer
                    if observer is not None:
                        try:
                            observer(args[1:], result)
                        except Exception:
                            _log.debug("observing a result of %s failed", name, exc_info=True)
                elif client.observe is not None:
                    _observe(entry, client, result, kept_here[2], args[1:])  # type: ignore[index]
                return result
        elif client.marks_span:
            mark_current_client_span(name)
        token = _set_mark(name)
        try:
            result = wrapped(*args, **kwargs) if kwargs else wrapped(*args)
        except BaseException as exc:
            _reset_mark(token)
            served = _raised(entry, client, exc, 0.0, False, None, kept_here[2], args[1:], kwargs)  # type: ignore[index]
            if served is NOT_SERVED:
                raise
            return served
        _reset_mark(token)
        if client.answer is None and not (_notes_used and _get_note() is not None):
            breaker = entry.breaker
            if breaker._steady_ring.steady:
                next(breaker._fast_successes)
            else:
                breaker.record_success()
            observe = client.observe
            if observe is not None:
                try:
                    observe(entry, result, kept_here[2], args[1:])  # type: ignore[index]
                except Exception:
                    _log.debug("observing a result of %s failed", name, exc_info=True)
            elif client.observes_fallback:
                observer = entry.observer
                if observer is not None:
                    try:
                        observer(args[1:], result)
                    except Exception:
                        _log.debug("observing a result of %s failed", name, exc_info=True)
        else:
            _succeeded(entry, client, result, 0.0, None, kept_here[2], args[1:])  # type: ignore[index]
        return result

    return layer


def _joined_call(entry: Entry, client: Client, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _note_exception(entry, client, exc)
        raise
    _note_result(entry, client, result)
    return result


def _admitted_call(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
    subject: Any,
    mark: GuardedMark,
) -> Any:
    """The path off the fast lane: admission, hooks, durations, timeouts."""
    trial, admission, reason = _admit(entry)
    if reason is not None:
        return _rejected(entry, client, reason, subject, args, kwargs)
    clock = entry.breaker._clock
    measured = entry.measured
    start = clock() if measured else 0.0
    token = _set_mark(mark)
    try:
        plan = _chaos_plan(entry, client)
        if plan is not None:
            if plan[0] > 0:
                time.sleep(plan[0])
            if plan[1] is not None:
                raise plan[1]
        if entry.timeout is not None and client.thread_timeout:
            result = _call_in_worker(entry, fn, args, kwargs)
        else:
            result = fn(*args, **kwargs)
    except BaseException as exc:
        _reset_mark(token)
        duration = clock() - start if measured else 0.0
        served = _raised(entry, client, exc, duration, trial, admission, subject, args, kwargs)
        if served is NOT_SERVED:
            raise
        return served
    _reset_mark(token)
    _succeeded(
        entry,
        client,
        result,
        clock() - start if measured else 0.0,
        admission,
        subject,
        args,
    )
    return result


def _call_in_worker(entry: Entry, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
    """Run a sync call in a daemon worker thread and stop waiting at the deadline.

    A thread cannot be interrupted: the call goes on in the background (with the caller's
    context variables, so its nested guards join this call), and the caller gets
    ``TimeoutError``. The workers are daemon threads, so a stuck call never keeps the
    interpreter from exiting.
    """
    timeout = entry.timeout
    future = _WORKERS.submit(contextvars.copy_context().run, fn, *args, **kwargs)
    try:
        return future.result(timeout=timeout)  # type: ignore[no-any-return]
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(
            f"call to dependency {entry.name!r} took longer than {timeout}s"
        ) from None


# -- async -----------------------------------------------------------------------------


async def guarded_acall(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    fn: Callable[..., Awaitable[T]],
    args: Any,
    kwargs: Any,
    subject: Any,
) -> T:
    """``await fn(*args, **kwargs)`` through ``entry``'s breaker; a timeout cancels it."""
    name = entry.name
    if client.marks_span:
        if client.hands_success:
            handed = _hand_or_mark(entry, name)
            if handed is not None:  # guarded_call's _handed_call, written out: per call
                try:
                    result = await (fn(*args, **kwargs) if kwargs else fn(*args))
                except BaseException as exc:  # a cancellation too: no outcome, as below
                    take_back(handed)
                    served = _raised(entry, client, exc, 0.0, False, None, subject, args, kwargs)
                    if served is NOT_SERVED:
                        raise
                    return await _maybe_await(served)  # type: ignore[no-any-return]
                if client.observe is not None or client.observes_fallback:
                    _observe(entry, client, result, subject, args)
                return result
        else:
            mark_current_client_span(name)
    mark = _get_mark()
    if mark is None:
        mark = name
    elif mark == name or (type(mark) is tuple and name in mark):
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _note_exception(entry, client, exc)
            raise
        _note_result(entry, client, result)
        return result
    else:
        mark = _joined(mark, name)
    if not entry.fast or entry.breaker._state is not _CLOSED:
        return await _admitted_acall(entry, client, fn, args, kwargs, subject, mark)  # type: ignore[no-any-return]
    token = _set_mark(mark)
    try:
        result = await (fn(*args, **kwargs) if kwargs else fn(*args))
    except BaseException as exc:
        _reset_mark(token)
        served = _raised(entry, client, exc, 0.0, False, None, subject, args, kwargs)
        if served is NOT_SERVED:
            raise
        return await _maybe_await(served)  # type: ignore[no-any-return]
    _reset_mark(token)
    if client.answer is None and not (_notes_used and _get_note() is not None):
        breaker = entry.breaker
        if breaker._steady_ring.steady:  # CircuitBreaker.record_success's steady case
            next(breaker._fast_successes)
        else:
            breaker.record_success()
        if client.observe is not None or client.observes_fallback:
            _observe(entry, client, result, subject, args)  # a frame is little next to an await
    else:
        _succeeded(entry, client, result, 0.0, None, subject, args)
    return result


async def _admitted_acall(  # noqa: PLR0917 - positional: the path runs per call
    entry: Entry,
    client: Client,
    fn: Callable[..., Awaitable[Any]],
    args: Any,
    kwargs: Any,
    subject: Any,
    mark: GuardedMark,
) -> Any:
    trial, admission, reason = _admit(entry)
    if reason is not None:
        return await _maybe_await(_rejected(entry, client, reason, subject, args, kwargs))
    clock = entry.breaker._clock
    measured = entry.measured
    start = clock() if measured else 0.0
    token = _set_mark(mark)
    try:
        plan = _chaos_plan(entry, client)
        if plan is not None:
            if plan[0] > 0:
                await asyncio.sleep(plan[0])
            if plan[1] is not None:
                raise plan[1]
        if entry.timeout is None:
            result = await fn(*args, **kwargs)
        else:
            result = await _wait(entry, fn(*args, **kwargs), entry.timeout)
    except BaseException as exc:
        _reset_mark(token)
        duration = clock() - start if measured else 0.0
        served = _raised(entry, client, exc, duration, trial, admission, subject, args, kwargs)
        if served is NOT_SERVED:
            raise
        return await _maybe_await(served)
    _reset_mark(token)
    _succeeded(
        entry,
        client,
        result,
        clock() - start if measured else 0.0,
        admission,
        subject,
        args,
    )
    return result


async def _wait(entry: Entry, awaitable: Awaitable[T], timeout: float) -> T:
    """``awaitable`` cancelled at the deadline, raising the built-in ``TimeoutError``."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError as exc:  # Python 3.10: not the built-in TimeoutError
        raise TimeoutError(
            f"call to dependency {entry.name!r} took longer than {timeout}s"
        ) from exc


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


# -- protect's wrappers of plain functions ---------------------------------------------


def protected(
    entry: Entry | None,
    entry_of: Callable[[], Entry],
    function: Callable[..., Any],
    fallback: Any,
) -> Callable[..., Any]:
    """``protect``'s wrapper of a sync function: ``guarded_call(entry, PLAIN, ...)``.

    The outermost call on a fast, CLOSED breaker (the common case) runs in the wrapper
    without the extra call into ``guarded_call``: the mark set and reset, the success
    counted as ``CircuitBreaker.record_success`` counts it on a steady window. Everything
    else (a joined or nested call, a breaker not CLOSED, hooks, a failure) takes the one
    path. ``entry`` is None when the dependency is not declared yet: ``entry_of()`` is
    then asked on the first call, and the wrapper bound to its answer from then on.
    """
    if entry is not None:
        return _bound_protected(entry, function, fallback)
    bound: Callable[..., Any] | None = None

    def late(*args: Any, **kwargs: Any) -> Any:
        nonlocal bound
        if bound is None:
            bound = _bound_protected(entry_of(), function, fallback)
        return bound(*args, **kwargs)

    return late


def _bound_protected(
    entry: Entry, function: Callable[..., Any], fallback: Any
) -> Callable[..., Any]:
    """``protected``'s wrapper for a declared dependency: entry, breaker, name and the
    breaker's success count bound here (the count is made once with the breaker and never
    replaced)."""
    breaker = entry.breaker
    name = entry.name
    count = breaker._fast_successes

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not entry.fast or breaker._state is not _CLOSED or _get_mark() is not None:
            return guarded_call(entry, PLAIN, function, args, kwargs, fallback)
        token = _set_mark(name)
        try:
            # Without keywords, no empty dict is built and merged for the call.
            result = function(*args, **kwargs) if kwargs else function(*args)
        except BaseException as exc:
            _reset_mark(token)
            served = _raised(entry, PLAIN, exc, 0.0, False, None, fallback, args, kwargs)
            if served is NOT_SERVED:
                raise
            return served
        _reset_mark(token)
        if _notes_used and _get_note() is not None:
            _succeeded(entry, PLAIN, result, 0.0, None, fallback, args)
        elif breaker._steady_ring.steady:
            next(count)
        else:
            breaker.record_success()
        return result

    return wrapper


def aprotected(
    entry: Entry | None,
    entry_of: Callable[[], Entry],
    function: Callable[..., Awaitable[Any]],
    fallback: Any,
) -> Callable[..., Awaitable[Any]]:
    """``protect``'s wrapper of a coroutine function: ``guarded_acall`` with the same
    fast lane as ``protected``."""

    # Bound here when the dependency is declared already, else on the first call (the
    # breaker's success count is made once with it and never replaced).
    breaker: Any = entry.breaker if entry is not None else None
    name = entry.name if entry is not None else ""
    count: Any = breaker._fast_successes if breaker is not None else None

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal entry, breaker, name, count
        found = entry
        if found is None:
            found = entry_of()
            breaker, name = found.breaker, found.name
            count = breaker._fast_successes
            entry = found  # last: another thread reading it finds the rest bound
        if not found.fast or breaker._state is not _CLOSED or _get_mark() is not None:
            return await guarded_acall(found, PLAIN, function, args, kwargs, fallback)
        token = _set_mark(name)
        try:
            result = await (function(*args, **kwargs) if kwargs else function(*args))
        except BaseException as exc:
            _reset_mark(token)
            served = _raised(found, PLAIN, exc, 0.0, False, None, fallback, args, kwargs)
            if served is NOT_SERVED:
                raise
            return await _maybe_await(served)
        _reset_mark(token)
        if _notes_used and _get_note() is not None:
            _succeeded(found, PLAIN, result, 0.0, None, fallback, args)
        elif breaker._steady_ring.steady:
            next(count)
        else:
            breaker.record_success()
        return result

    return wrapper


# -- generators --------------------------------------------------------------------------


def guarded_iter(  # noqa: PLR0917 - the same order as guarded_call
    entry: Entry,
    client: Client,
    fn: Callable[..., Iterator[T]],
    args: Any,
    kwargs: Any,
    subject: Any,
) -> Generator[T, Any, Any]:
    """Iterate ``fn(*args, **kwargs)`` as one guarded call (``protect`` on a generator).

    Admission happens when iteration starts (creating a generator does no I/O). An
    exception while iterating is a failure (by the usual rules), exhaustion a success,
    and closing it early (``close()``, ``break``, garbage collection) a success too: the
    dependency answered everything that was asked. ``GUARDED`` names the dependency only
    while the generator's own code runs, never while the consumer holds an item. The
    fallback answers a rejected iteration, or one that failed before its first item; it
    returns an iterable. Slow-call durations add up the time spent inside the generator.
    """
    name = entry.name
    mark = _get_mark()
    if mark is not None and (mark == name or (type(mark) is tuple and name in mark)):
        try:
            return (yield from fn(*args, **kwargs))
        except BaseException as exc:
            _note_exception(entry, client, exc)
            raise
    mark = name if mark is None else _joined(mark, name)
    trial, admission, reason = _admit(entry)
    if reason is not None:
        return (yield from _rejected(entry, client, reason, subject, args, kwargs))
    clock = entry.breaker._clock
    measured = entry.measured
    spent = 0.0
    started = False
    to_send: Any = None
    to_throw: BaseException | None = None
    iterator: Any = None
    while True:
        start = clock() if measured else 0.0
        token = _set_mark(mark)
        try:
            if iterator is None:
                plan = _chaos_plan(entry, client)
                if plan is not None:
                    if plan[0] > 0:
                        time.sleep(plan[0])
                    if plan[1] is not None:
                        raise plan[1]
                iterator = fn(*args, **kwargs)
            if to_throw is not None:
                item = iterator.throw(to_throw)
            else:
                item = iterator.send(to_send) if started else next(iterator)
        except StopIteration as stop:
            _reset_mark(token)
            spent += clock() - start if measured else 0.0
            _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
            return stop.value
        except BaseException as exc:
            _reset_mark(token)
            spent += clock() - start if measured else 0.0
            if exc is to_throw:  # the consumer's own exception, thrown in and not handled
                _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
                raise
            serving = NOT_SERVED if started else subject  # no fallback after the first item
            served = _raised(entry, client, exc, spent, trial, admission, serving, args, kwargs)
            if served is NOT_SERVED:
                raise
            return (yield from served)
        _reset_mark(token)
        spent += clock() - start if measured else 0.0
        started = True
        to_throw = None
        try:
            to_send = yield item
        except GeneratorExit:
            token = _set_mark(mark)
            try:
                iterator.close()
            finally:
                _reset_mark(token)
                _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
            raise
        except BaseException as exc:
            to_throw = exc


async def guarded_aiter(  # noqa: PLR0917 - the same order as guarded_acall
    entry: Entry,
    client: Client,
    fn: Callable[..., AsyncIterator[T]],
    args: Any,
    kwargs: Any,
    subject: Any,
) -> AsyncGenerator[T, Any]:
    """Iterate ``fn(*args, **kwargs)`` as one guarded call (async generators).

    As ``guarded_iter``; a step cancelled inside the generator follows the cancellation
    rule (no outcome in CLOSED, a failed probe for a half-open trial). The fallback may
    return an iterable or an async iterable.
    """
    name = entry.name
    mark = _get_mark()
    if mark is not None and (mark == name or (type(mark) is tuple and name in mark)):
        try:
            async for item in fn(*args, **kwargs):
                yield item
        except BaseException as exc:
            _note_exception(entry, client, exc)
            raise
        return
    mark = name if mark is None else _joined(mark, name)
    trial, admission, reason = _admit(entry)
    if reason is not None:
        async for item in _aiterate(_rejected(entry, client, reason, subject, args, kwargs)):
            yield item
        return
    clock = entry.breaker._clock
    measured = entry.measured
    spent = 0.0
    started = False
    to_send: Any = None
    to_throw: BaseException | None = None
    iterator: Any = None
    while True:
        start = clock() if measured else 0.0
        token = _set_mark(mark)
        try:
            if iterator is None:
                plan = _chaos_plan(entry, client)
                if plan is not None:
                    if plan[0] > 0:
                        await asyncio.sleep(plan[0])
                    if plan[1] is not None:
                        raise plan[1]
                iterator = fn(*args, **kwargs)
            if to_throw is not None:
                item = await iterator.athrow(to_throw)
            else:
                item = await (iterator.asend(to_send) if started else iterator.__anext__())
        except StopAsyncIteration:
            _reset_mark(token)
            spent += clock() - start if measured else 0.0
            _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
            return
        except BaseException as exc:
            _reset_mark(token)
            spent += clock() - start if measured else 0.0
            if exc is to_throw:  # the consumer's own exception, thrown in and not handled
                _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
                raise
            serving = NOT_SERVED if started else subject  # no fallback after the first item
            served = _raised(entry, client, exc, spent, trial, admission, serving, args, kwargs)
            if served is NOT_SERVED:
                raise
            async for item in _aiterate(served):
                yield item
            return
        _reset_mark(token)
        spent += clock() - start if measured else 0.0
        started = True
        to_throw = None
        try:
            to_send = yield item
        except GeneratorExit:
            token = _set_mark(mark)
            try:
                await iterator.aclose()
            finally:
                _reset_mark(token)
                _succeeded(entry, client, _NO_RESULT, spent, admission, subject, args)
            raise
        except BaseException as exc:
            to_throw = exc


async def _aiterate(values: Any) -> AsyncIterator[Any]:
    """Iterate what a fallback returned: an async iterable, an awaitable, or an iterable."""
    values = await _maybe_await(values)
    if hasattr(values, "__aiter__"):
        async for value in values:
            yield value
    else:
        for value in values:
            yield value


# -- with registry.guard(name) -----------------------------------------------------------


class Guard:
    """``with registry.guard(name):`` / ``async with``: admit, time and record one block.

    A rejected block raises ``CircuitOpenError`` on entry. A guard has no value to replace,
    so it applies no fallback, and no call timeout (wrap the block in ``asyncio.timeout``,
    or on Python 3.10 run the coroutine holding it under ``asyncio.wait_for``).
    Inside another guard of the same dependency it joins that call.
    """

    __slots__ = ("_admission", "_entry", "_start", "_token", "_trial")

    def __init__(self, entry: Entry) -> None:
        self._entry = entry
        self._token: contextvars.Token[GuardedMark | None] | None = None
        self._start: float | None = None
        self._trial = False
        self._admission: Admission | None = None

    def _enter(self) -> tuple[float, BaseException | None] | None:
        """Admit the block (or raise the rejection); the chaos plan for it."""
        entry = self._entry
        name = entry.name
        self._token = None
        self._trial = False
        self._admission = None
        self._start = None
        mark = _get_mark()
        if mark is None:
            mark = name
        elif mark == name or (type(mark) is tuple and name in mark):
            return None  # joined: no token
        else:
            mark = _joined(mark, name)
        if entry.fast and entry.breaker._state is _CLOSED:
            self._token = _set_mark(mark)
            return None
        trial, admission, reason = _admit(entry)
        if reason is not None:
            raise PLAIN.rejection(entry, reason, None)
        self._trial = trial
        self._admission = admission
        if entry.measured:
            self._start = entry.breaker._clock()
        self._token = _set_mark(mark)
        return _chaos_plan(entry, PLAIN)

    def __enter__(self) -> Guard:
        plan = self._enter()
        if plan is not None:
            delay, fault = plan
            if delay > 0:
                time.sleep(delay)
            if fault is not None:
                self.__exit__(type(fault), fault, None)
                raise fault
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entry = self._entry
        token = self._token
        if token is None:  # joined the outer call
            if exc is not None:
                _note_exception(entry, PLAIN, exc)
            return
        self._token = None
        _reset_mark(token)
        start = self._start
        duration = entry.breaker._clock() - start if start is not None else 0.0
        if exc is None:
            _succeeded(entry, PLAIN, _NO_RESULT, duration, self._admission, None, ())
        else:
            _raised(entry, PLAIN, exc, duration, self._trial, self._admission, NOT_SERVED, (), {})

    async def __aenter__(self) -> Guard:
        plan = self._enter()
        if plan is not None:
            delay, fault = plan
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None:
                self.__exit__(type(fault), fault, None)
                raise fault
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


# -- the worker threads of sync calls with a timeout -------------------------------------


class _Workers:
    """Daemon threads for sync calls with ``call_timeout_seconds``, started on demand.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so one
    stuck call would keep the process from exiting. Idle workers leave after a minute;
    after ``os.fork`` the child starts with none.
    """

    MAX_THREADS = 64
    IDLE_SECONDS = 60.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Any, Any, Any]]
        self._jobs = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0  # workers waiting for a job that no caller has claimed yet

    def submit(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self.MAX_THREADS:
                self._threads += 1
                threading.Thread(
                    target=self._work, name="otel-resilience-call", daemon=True
                ).start()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            try:
                future, fn, args, kwargs = jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and jobs is self._jobs:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue  # a caller claimed this worker: its job is on the way
            running = future.set_running_or_notify_cancel()
            result: Any = None
            error: BaseException | None = None
            if running:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    error = exc
            # Idle again before the caller hears back, so that its next call finds this
            # worker instead of starting another thread.
            with self._lock:
                self._idle += 1
            if running:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs, result, error


_WORKERS = _Workers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS._reset)
