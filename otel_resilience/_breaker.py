"""The circuit breaker: five states, sliding-window failure rates, injected clock.

The lock guards bookkeeping only: it is never held across the protected call, and
listeners are called after it is released, so a slow listener cannot stall callers.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._policy import BreakerPolicy
from ._window import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow, Window

__all__ = [
    "ADMITTED",
    "REJECTED",
    "TRIAL",
    "BreakerSnapshot",
    "CircuitBreaker",
    "Listener",
    "State",
]

_log = logging.getLogger(__name__)


class State(enum.Enum):
    """A breaker's state; ``.value`` is the lower-case name used in metrics and JSON."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN
_FORCED_OPEN = State.FORCED_OPEN
_DISABLED = State.DISABLED

# What ``CircuitBreaker.admit()`` answers.
REJECTED = 0
ADMITTED = 1
TRIAL = 2

# ``retry_after`` while half-open permits are taken: this fraction of the open time.
HALF_OPEN_RETRY_FRACTION = 0.1
MIN_RETRY_AFTER = 0.001


class _NeverSteady:
    """The ``_steady_ring`` of a breaker whose successes need the full record (a time
    window or a slow-call bound): never steady."""

    __slots__ = ()
    steady = False


_NEVER_STEADY = _NeverSteady()

Listener = Callable[["CircuitBreaker", State, State], None]
"""Called as ``fn(breaker, old_state, new_state)`` after each transition."""

# An outcome left for the lock's holder (CircuitBreaker._defer): (failed, the failure's
# duration or the success's outcome, the clock's reading, the error type, the context).
_Deferred = tuple[bool, float, float, "str | None", "contextvars.Context | None"]
# A success on a full count window holding failures, left behind an outcome left before it:
# it can change no state, so it needs no time, no context and no settling; a run of them
# is entered at once (_fold_deferred).
_PENDING_SUCCESS: _Deferred = (False, SUCCESS, 0.0, None, None)
MAX_DEFERRED = 10_000
"""Outcomes left for the lock's holder (``CircuitBreaker._defer``) beyond which a thread
waits for the lock instead: the holder has waited that long for the GIL (tens of
milliseconds of other threads' calls), and the memory they take stays bounded."""


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent view of one breaker at one instant.

    Times (``opened_at``, ``last_failure_at``) are readings of the breaker's clock;
    ``retry_after`` is seconds until an OPEN breaker admits a probe (None when it is not
    waiting on time: closed, disabled, or forced open until a manual reset).
    """

    name: str
    state: State
    failure_rate: float
    slow_call_rate: float
    calls: int
    failures: int
    slow_calls: int
    consecutive_failures: int
    opened_at: float | None
    open_seconds: float
    retry_after: float | None
    last_failure_at: float | None
    last_error_type: str | None
    total_successes: int
    total_failures: int
    total_slow: int
    total_rejected: int


class CircuitBreaker:
    """A circuit breaker: closed, open, half-open, forced open and disabled.

    ``allow()`` asks for permission before a call; ``record_success`` and
    ``record_failure`` report its outcome. A call that was admitted and then neither
    succeeded nor failed (cancelled) gives its half-open permit back with ``release()``.
    """

    __slots__ = (
        "__weakref__",
        "_bounded_ring",
        "_clock",
        "_consecutive",
        "_count_window",
        "_deferred",
        "_fast_rejections",
        "_fast_rejections_read",
        "_fast_success",
        "_fast_successes",
        "_fast_successes_read",
        "_half_open_in_flight",
        "_half_open_successes",
        "_last_error_type",
        "_last_failure_at",
        "_listeners",
        "_lock",
        "_open_duration",
        "_opened_at",
        "_pending_successes",
        "_pending_successes_read",
        "_slow_threshold",
        "_state",
        "_steady_ring",
        "_timed_window",
        "_total_failures",
        "_total_rejected",
        "_total_slow",
        "_total_successes",
        "_transitions",
        "_unnotified",
        "_window",
        "name",
        "policy",
    )

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"breaker name must be a non-empty string, got {name!r}")
        self.name = name
        self.policy = policy if policy is not None else BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._window: Window
        self._count_window = CountWindow(
            self.policy.window_size if self.policy.window_seconds is None else 1
        )
        if self.policy.window_seconds is not None:
            self._window = TimeWindow(self.policy.window_seconds)
            self._timed_window = True
        else:
            self._window = self._count_window
            self._timed_window = False
        self._slow_threshold = self.policy.slow_call_seconds
        self._fast_success = not self._timed_window and self._slow_threshold is None
        self._steady_ring: CountWindow | _NeverSteady = (
            self._count_window if self._fast_success else _NEVER_STEADY
        )
        # The count window of a breaker with a slow-call bound (whose successes are
        # counted without the lock while it is steady and they are under the bound).
        self._bounded_ring: CountWindow | _NeverSteady = self._bounded_ring_of(self.policy)
        self._state = _CLOSED
        self._consecutive = 0
        self._opened_at: float | None = None
        self._open_duration = self.policy.open_seconds
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._last_failure_at: float | None = None
        self._last_error_type: str | None = None
        self._total_successes = 0
        # Successes recorded without the lock (see record_success): ``next()`` on an
        # itertools.count is one atomic step, where ``+= 1`` on an attribute is not.
        self._fast_successes = itertools.count()
        self._fast_successes_read = 0
        # Successes on a full count window that still holds failures, also counted without
        # the lock (see record_success) and entered in the window by the next call that
        # takes the lock (_fold_pending).
        self._pending_successes = itertools.count()
        self._pending_successes_read = 0
        self._total_failures = 0
        self._total_slow = 0
        self._total_rejected = 0
        # Rejections by an OPEN or FORCED_OPEN breaker, counted without the lock (admit).
        self._fast_rejections = itertools.count()
        self._fast_rejections_read = 0
        self._transitions: dict[tuple[State, State], int] = {}
        # Outcomes recorded while another thread held the lock, entered by whoever holds
        # it next (_defer, _settle), and the transitions they made, to be told to the
        # listeners in the recording call's context.
        self._deferred: deque[_Deferred] = deque()
        self._unnotified: list[tuple[list[tuple[State, State]], contextvars.Context | None]] = []

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value}>"

    # -- reading -------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state; an OPEN breaker whose time is up reads as HALF_OPEN."""
        if self._state is not _OPEN:
            return self._state
        with self._lock:
            changes = self._expire_open(self._clock())
            state = self._state
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        self._notify(changes)
        return state

    def snapshot(self) -> BreakerSnapshot:
        """Counts, rates and timings of this breaker, read under its lock."""
        with self._lock:
            self._fold_pending()
            now = self._clock()
            changes = self._expire_open(now)
            window = self._window
            if self._timed_window:
                window.refresh(now)
            calls = window.calls
            retry_after: float | None = None
            if self._state is _OPEN and self._opened_at is not None:
                retry_after = max(0.0, self._opened_at + self._open_duration - now)
            elif self._state is _HALF_OPEN:
                retry_after = 0.0
            snap = BreakerSnapshot(
                name=self.name,
                state=self._state,
                failure_rate=window.failures / calls if calls else 0.0,
                slow_call_rate=window.slow / calls if calls else 0.0,
                calls=calls,
                failures=window.failures,
                slow_calls=window.slow,
                consecutive_failures=self._consecutive,
                opened_at=self._opened_at,
                open_seconds=self._open_duration,
                retry_after=retry_after,
                last_failure_at=self._last_failure_at,
                last_error_type=self._last_error_type,
                total_successes=self._total_successes + self._read_fast_successes(),
                total_failures=self._total_failures,
                total_slow=self._total_slow,
                total_rejected=self._total_rejected + self._read_fast_rejections(),
            )
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        self._notify(changes)
        return snap

    def transition_counts(self) -> dict[tuple[State, State], int]:
        """How many times each transition happened, as ``{(old, new): count}``."""
        with self._lock:
            counts = dict(self._transitions)
        if self._deferred or self._unnotified:
            self._settle()
        return counts

    def retry_after(self) -> float:
        """Seconds until this breaker may admit a call again; always > 0.

        OPEN: the open time left (at least a millisecond). FORCED_OPEN: ``inf``. Otherwise
        (HALF_OPEN with every permit taken, or a rejection of another kind, such as a
        concurrency limit): a tenth of the current open time, so a client that sleeps
        ``retry_after`` before retrying never spins.
        """
        state = self._state  # OPEN or FORCED_OPEN (a rejected call's): without the lock
        if state is _FORCED_OPEN:
            return float("inf")
        if state is _OPEN:
            opened_at = self._opened_at
            if opened_at is not None:
                return max(opened_at + self._open_duration - self._clock(), MIN_RETRY_AFTER)
        with self._lock:
            if self._state is _FORCED_OPEN:
                after = float("inf")
            elif self._state is _OPEN and self._opened_at is not None:
                left = self._opened_at + self._open_duration - self._clock()
                after = max(left, MIN_RETRY_AFTER)
            else:
                after = max(self._open_duration * HALF_OPEN_RETRY_FRACTION, MIN_RETRY_AFTER)
        if self._deferred or self._unnotified:
            self._settle()
        return after

    # -- admitting calls -----------------------------------------------------------

    def allow(self) -> bool:
        """Whether a call may go ahead now; a False answer is counted as rejected."""
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return True
        return self.admit() != REJECTED

    def admit(self) -> int:
        """Like ``allow()``, telling how the call was let in: ``REJECTED`` (0),
        ``ADMITTED`` (1), or ``TRIAL`` (2), a half-open trial holding one of the permits.

        A trial that ends without an outcome gives its permit back (``release()``); a
        cancelled trial is a failed probe (``record_cancelled``).
        """
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return ADMITTED
        # Rejected while open, without the lock: every call fails fast during an outage,
        # and threads that each took the lock for it queued on it (a lock convoy, 5 to 8
        # times the CPU per rejected call from two threads up). A read racing a change of
        # state rejects as the call would have just before it.
        if state is _OPEN:
            opened_at = self._opened_at
            if opened_at is not None and self._clock() - opened_at < self._open_duration:
                next(self._fast_rejections)
                return REJECTED
        elif state is _FORCED_OPEN:
            next(self._fast_rejections)
            return REJECTED
        with self._lock:
            changes = self._expire_open(self._clock()) if state is _OPEN else None
            state = self._state
            if state is _HALF_OPEN and self._half_open_in_flight < self.policy.half_open_calls:
                self._half_open_in_flight += 1
                admitted = TRIAL
            elif state is _CLOSED or state is _DISABLED:
                admitted = ADMITTED
            else:
                self._total_rejected += 1
                admitted = REJECTED
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        if changes:
            self._notify(changes)
        return admitted

    def release(self) -> None:
        """Give back a half-open permit of a call that ended without an outcome."""
        with self._lock:
            if self._state is _HALF_OPEN and self._half_open_in_flight > 0:
                self._half_open_in_flight -= 1
        if self._deferred or self._unnotified:
            self._settle()

    def record_cancelled(self, duration: float = 0.0, trial: bool = False) -> None:
        """Record a call that was cancelled before it had an outcome.

        In CLOSED it is no outcome at all. A cancelled half-open trial (``trial``: it was
        admitted by ``admit()`` as ``TRIAL``) is a failed probe: the call did not show the
        dependency answering, so the breaker opens again instead of letting the next call
        become the next trial. (An application's own deadline around a hung dependency
        cancels the trial; without this, each following call would wait out the deadline.)
        """
        if not trial:
            return
        if self._state is _HALF_OPEN:
            self.record_failure(duration, "CancelledError")
        else:
            self.release()

    # -- recording outcomes --------------------------------------------------------

    def record_success(self, duration: float = 0.0) -> None:
        """Record a call that completed; it is slow when ``duration`` reaches the policy's bound."""
        if self._fast_success:
            ring = self._count_window
            state = self._state
            if state is _CLOSED or state is _DISABLED:
                # ``_steady_ring.steady`` (this ring's flag when _fast_success, else never):
                # the guarded-call path (_guard.py) tests it the same way inline, after
                # admitting the call on a CLOSED breaker, and then only takes the count.
                if ring.steady:
                    # The steady state, and the hot path of every guarded call: a full
                    # window of successes only. A success changes nothing but the total
                    # (the ring stays all-success, the run of failures stays 0), so it is
                    # counted without the lock. Racing a failure recorded under the lock
                    # is the same as this success coming just before it.
                    next(self._fast_successes)
                    return
                if ring.calls == ring.size:
                    # A full window holding failures: a success can only lower its rates
                    # (it takes the place of the oldest outcome), so it never trips the
                    # breaker now. It is counted without the lock too, and entered in the
                    # window by whoever takes the lock next (_fold_pending), before any
                    # outcome or reading that comes after it. On CPython 3.10, which can
                    # hand the GIL over at nearly any step, a thread preempted while
                    # holding the lock for every success made all the others queue on it.
                    # After an outcome left for the lock's holder (_defer), it is left too,
                    # so that the two are entered in the order they came.
                    deferred = self._deferred
                    if not deferred:
                        next(self._pending_successes)
                        return
                    if len(deferred) < MAX_DEFERRED:
                        deferred.append(_PENDING_SUCCESS)  # (it trips nothing)
                        return
                    self._record_success(duration)  # as many left: wait for the lock
                    return
                # The count window's record, inlined, and no call at all while the lock is
                # held: a call is where CPython may hand the GIL to another thread, and a
                # thread that loses the GIL holding the lock makes every other one queue
                # on it (a lock convoy). Held elsewhere, the lock is not waited for: the
                # success is left to its holder (_defer).
                lock = self._lock
                if not lock.acquire(False):
                    self._defer(False, SUCCESS, self._clock(), None)
                    return
                try:
                    self._fold_pending()  # (only after a window was cleared or resized)
                    if self._state is state:
                        self._total_successes += 1
                        self._consecutive = 0
                        size = ring.size
                        calls = ring.calls
                        index = ring.next_index
                        if calls == size:
                            evicted = ring.ring[index]
                            if evicted:
                                ring.failures -= evicted & FAILURE
                                ring.slow -= (evicted & SLOW) >> 1
                        else:
                            calls += 1
                            ring.calls = calls
                        ring.ring[index] = SUCCESS
                        index += 1
                        ring.next_index = 0 if index == size else index
                        failures = ring.failures
                        ring.steady = calls == size and not failures and not ring.slow
                        # A success trips only by bringing the calls up to minimum_calls
                        # (the rule of _tripped, for a success without a slow-call bound).
                        policy = self.policy
                        if (
                            state is not _CLOSED
                            or not failures
                            or calls < policy.minimum_calls
                            or failures / calls < policy.failure_rate_threshold
                        ):
                            changes: list[tuple[State, State]] | None = []
                        else:
                            changes = self._trip()
                    else:
                        changes = None
                finally:
                    lock.release()
                if self._deferred or self._unnotified:
                    self._settle()
                if changes is not None:
                    if changes:
                        self._notify(changes)
                    return
        elif self._bounded_ring.steady and duration < self._slow_threshold:  # type: ignore[operator]
            # A count window with a slow-call bound, full of calls neither failed nor slow:
            # a call under the bound changes nothing but the total, as in the steady case
            # above, and is counted without the lock (one at the bound takes it).
            state = self._state
            if state is _CLOSED or state is _DISABLED:
                next(self._fast_successes)
                return
        self._record_success(duration)

    def _bounded_ring_of(self, policy: BreakerPolicy) -> CountWindow | _NeverSteady:
        """``_bounded_ring`` for ``policy``: the count window when it bounds slow calls."""
        if policy.window_seconds is None and policy.slow_call_seconds is not None:
            return self._count_window
        return _NEVER_STEADY

    def _fold_pending(self) -> None:
        """Enter the successes counted without the lock on a full window (called with the
        lock held), each through ``CountWindow.record``: the oldest outcome gives way; then
        the outcomes other threads left while the lock was held (``_defer``), in order."""
        # The count goes on from where the last fold took it (that take included).
        taken = next(self._pending_successes)
        pending = taken - self._pending_successes_read
        self._pending_successes_read = taken + 1
        if pending:
            self._enter_successes(pending)
        if self._deferred:
            self._fold_deferred()

    def _enter_successes(self, count: int) -> None:
        """Enter ``count`` successes counted on a full count window (called with the lock
        held), each through ``CountWindow.record``: the oldest outcome gives way, and more
        than a window's worth leave a full window of successes."""
        self._total_successes += count
        self._consecutive = 0
        ring = self._count_window
        for _ in range(min(count, ring.size)):
            ring.record(SUCCESS)

    def _read_fast_successes(self) -> int:
        """Successes counted without the lock so far (called with the lock held)."""
        # Reading an itertools.count means taking a number from it: the reads are
        # counted and subtracted.
        value = next(self._fast_successes) - self._fast_successes_read
        self._fast_successes_read += 1
        return value

    def _read_fast_rejections(self) -> int:
        """Rejections counted without the lock so far (called with the lock held); read
        as ``_read_fast_successes`` reads its count."""
        value = next(self._fast_rejections) - self._fast_rejections_read
        self._fast_rejections_read += 1
        return value

    def _record_success(self, duration: float) -> None:
        slow_threshold = self._slow_threshold
        outcome = SLOW if slow_threshold is not None and duration >= slow_threshold else SUCCESS
        self._enter(False, outcome, None, None)

    def _succeeded(self, outcome: int, now: float | None) -> list[tuple[State, State]] | None:
        """Enter a success (``outcome`` SUCCESS or SLOW) recorded at ``now`` (None: now);
        the transitions it made. Called with the lock held."""
        state = self._state
        expired = None
        if state is _OPEN:
            # An outcome can arrive with no allow() before it (a span of an unguarded
            # call): an OPEN breaker whose time is up takes it as a half-open probe.
            expired = self._expire_open(self._clock() if now is None else now)
            state = self._state
        if state is _CLOSED or state is _DISABLED:
            if outcome:
                self._total_slow += 1
            else:
                self._total_successes += 1
            self._consecutive = 0
            window = self._window
            if self._timed_window:
                window.record(outcome, self._clock() if now is None else now)
            else:
                window.record(outcome, 0.0)
            changes = (
                self._trip()
                if (window.failures or window.slow) and state is _CLOSED and self._tripped()
                else None
            )
        elif state is _HALF_OPEN:
            if outcome:
                self._total_slow += 1
                # A probe that is still slow says the dependency has not recovered.
                changes = self._reopen()
            else:
                self._total_successes += 1
                changes = self._half_open_success()
        else:
            # A late outcome of a call admitted before the breaker opened.
            if outcome:
                self._total_slow += 1
            else:
                self._total_successes += 1
            changes = None
        if expired:
            changes = expired + (changes or [])
        return changes

    def record_failure(self, duration: float = 0.0, error_type: str | None = None) -> None:
        """Record a call that failed (``error_type`` names the error, for health reports)."""
        # The clock is read before the lock: no call while it is held (see above).
        self._enter(True, duration, self._clock(), error_type)

    def _enter(
        self,
        failed: bool,
        value: float,
        now: float | None,
        error_type: str | None,
        wait: bool = False,
    ) -> None:
        """Enter an outcome under the lock: a failure (``failed``, ``value`` its duration)
        or a success (``value`` its outcome, SUCCESS or SLOW), recorded at ``now`` (None:
        read when needed). Held by another thread, the lock is not waited for (unless
        ``wait``): the outcome is left to the holder (``_defer``)."""
        lock = self._lock
        if not lock.acquire(wait):
            self._defer(failed, value, self._clock() if now is None else now, error_type)
            return
        try:
            self._fold_pending()
            if failed:
                changes = self._failed(self._clock() if now is None else now, value, error_type)
            else:
                changes = self._succeeded(int(value), now)
        finally:
            lock.release()
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        if changes:
            self._notify(changes)

    def _failed(
        self, now: float, duration: float, error_type: str | None
    ) -> list[tuple[State, State]] | None:
        """Enter a failure recorded at ``now``; the transitions it made. Called with the
        lock held."""
        self._total_failures += 1
        self._last_failure_at = now
        if error_type is not None:
            self._last_error_type = error_type
        expired = self._expire_open(now) if self._state is _OPEN else None
        state = self._state
        changes = None
        if state is _CLOSED or state is _DISABLED:
            consecutive = self._consecutive + 1
            self._consecutive = consecutive
            outcome = FAILURE
            slow_threshold = self._slow_threshold
            if slow_threshold is not None and duration >= slow_threshold:
                outcome |= SLOW
            if self._timed_window:
                window: Window = self._window
                window.record(outcome, now)
            else:
                # CountWindow.record, inlined (no call under the lock).
                window = ring = self._count_window
                size = ring.size
                index = ring.next_index
                if ring.calls == size:
                    evicted = ring.ring[index]
                    if evicted:
                        ring.failures -= evicted & FAILURE
                        ring.slow -= (evicted & SLOW) >> 1
                else:
                    ring.calls += 1
                ring.ring[index] = outcome
                ring.failures += 1
                ring.slow += outcome >> 1
                index += 1
                ring.next_index = 0 if index == size else index
                ring.steady = False
            if state is _CLOSED:
                # The rule of _tripped, inlined for the same reason.
                policy = self.policy
                calls = window.calls
                limit = policy.consecutive_failures
                if (limit is not None and consecutive >= limit) or (
                    calls >= policy.minimum_calls
                    and (
                        window.failures / calls >= policy.failure_rate_threshold
                        or (
                            slow_threshold is not None
                            and window.slow / calls >= policy.slow_call_rate_threshold
                        )
                    )
                ):
                    changes = self._trip()
        elif state is _HALF_OPEN:
            self._consecutive += 1
            changes = self._reopen()
        if expired:
            changes = expired + (changes or [])
        return changes

    def _defer(self, failed: bool, value: float, now: float, error_type: str | None) -> None:
        """Leave an outcome to the thread that holds the lock, instead of waiting for it:
        a failure (``failed``, ``value`` its duration) or a success (``value`` its outcome,
        SUCCESS or SLOW), recorded at ``now``.

        Waiting is what makes a lock convoy under the GIL: a thread that waits gets the
        lock when it is let go but must then wait for the GIL too, holding the lock, so
        the next thread to record an outcome waits in turn, and from then on every
        outcome hands both over between threads (with a slow-call bound, where every
        success took the lock, a guarded call cost 3 to 6 times more CPU from two
        threads up). The holder enters what was left before it lets go, or just after
        (``_settle``), in the recording call's context, where the listeners of the
        transitions it makes are called (a trace link reads the tripping span there).
        """
        # Until it is entered, no success skips the lock as one on a steady window does
        # (here, in the guards, in the span processor): they queue behind it, in order.
        # (The holder may set the flag again before it lets go: those successes count as
        # coming before this outcome.)
        self._count_window.steady = False
        deferred = self._deferred
        if len(deferred) < MAX_DEFERRED:
            deferred.append((failed, value, now, error_type, contextvars.copy_context()))
            self._settle()  # let go meanwhile: entered here
        else:  # the holder is starved of the GIL: wait for it, as before
            self._enter(failed, value, now, error_type, wait=True)

    def _fold_deferred(self) -> None:
        """Enter the outcomes left by ``_defer`` (called with the lock held); the
        transitions they make wait in ``_unnotified`` for ``_settle``."""
        deferred = self._deferred
        while deferred:
            item = deferred.popleft()
            if item is _PENDING_SUCCESS:
                # A run of successes on a full count window, entered as the lock-free
                # count of them is (_fold_pending): a window's worth at most.
                count = 1
                while deferred and deferred[0] is _PENDING_SUCCESS:
                    deferred.popleft()
                    count += 1
                state = self._state
                if (state is _CLOSED or state is _DISABLED) and not self._timed_window:
                    self._enter_successes(count)
                    # (On a full window they trip nothing; one cleared meanwhile can be
                    # brought up to minimum_calls.)
                    if self._count_window.failures and state is _CLOSED and self._tripped():
                        self._unnotified.append((self._trip(), None))
                    continue
                for _ in range(count):  # the state changed meanwhile: one by one
                    changes = self._succeeded(SUCCESS, None)
                    if changes:
                        self._unnotified.append((changes, None))
                continue
            failed, value, now, error_type, context = item
            if failed:
                changes = self._failed(now, value, error_type)
            else:
                changes = self._succeeded(int(value), now)
            if changes:
                self._unnotified.append((changes, context))

    def _settle(self) -> None:
        """After the lock is let go: enter the outcomes other threads left meanwhile and
        tell the listeners about the transitions they made, each in the context of the
        call that recorded it. Never waits: if another thread holds the lock again, it
        settles when it lets go."""
        lock = self._lock
        while (self._deferred or self._unnotified) and lock.acquire(False):
            try:
                self._fold_pending()
                unnotified, self._unnotified = self._unnotified, []
            finally:
                lock.release()
            for changes, context in unnotified:
                if context is None:
                    self._notify(changes)
                else:
                    context.run(self._notify, changes)

    # -- manual control ------------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until ``reset()``."""
        self._manual(_FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and keep counting, never opening, until ``reset()``."""
        self._manual(_DISABLED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window and the base open time."""
        self._manual(_CLOSED)

    def half_open(self) -> bool:
        """Move an OPEN breaker to HALF_OPEN now (a health probe passed); True if it moved."""
        with self._lock:
            changes = [self._set_state(_HALF_OPEN)] if self._state is _OPEN else None
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        self._notify(changes)
        return changes is not None

    def apply_policy(self, policy: BreakerPolicy) -> None:
        """Take ``policy`` in place (a config reload): the state and the window's outcomes stay.

        A changed ``window_size`` keeps the newest outcomes that fit; a change of
        ``window_seconds`` (or between count and time windows) starts an empty window.
        An OPEN breaker stays OPEN, its current wait rescaled to the new ``open_seconds``
        (same back-off step, capped at ``max_open_seconds``). Nothing is evaluated now:
        the next outcome is judged by the new thresholds.
        """
        if not isinstance(policy, BreakerPolicy):
            raise TypeError(f"expected a BreakerPolicy, got {policy!r}")
        with self._lock:
            old = self.policy
            if policy != old:
                self._fold_pending()  # into the window they were counted for
                if policy.window_seconds != old.window_seconds:
                    self._count_window = CountWindow(
                        policy.window_size if policy.window_seconds is None else 1
                    )
                    if policy.window_seconds is None:
                        self._window = self._count_window
                    else:
                        self._window = TimeWindow(policy.window_seconds)
                elif policy.window_seconds is None and policy.window_size != old.window_size:
                    self._count_window = self._count_window.resized(policy.window_size)
                    self._window = self._count_window
                self._timed_window = policy.window_seconds is not None
                self._slow_threshold = policy.slow_call_seconds
                self._fast_success = not self._timed_window and self._slow_threshold is None
                self._steady_ring = self._count_window if self._fast_success else _NEVER_STEADY
                self._bounded_ring = self._bounded_ring_of(policy)
                if self._state is _OPEN:
                    step = self._open_duration / old.open_seconds
                    self._open_duration = min(policy.open_seconds * step, policy.max_open_seconds)
                else:
                    self._open_duration = policy.open_seconds
                self.policy = policy
        if self._deferred or self._unnotified:
            self._settle()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(breaker, old_state, new_state)`` after each transition."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # -- internals (called with the lock held unless said otherwise) ---------------

    def _manual(self, target: State) -> None:
        with self._lock:
            self._fold_pending()  # counted in the totals, then cleared with the window
            old = self._state
            self._window.clear()
            self._consecutive = 0
            self._opened_at = None
            self._open_duration = self.policy.open_seconds
            self._half_open_in_flight = 0
            self._half_open_successes = 0
            self._state = target
            if old is not target:
                self._transitions[(old, target)] = self._transitions.get((old, target), 0) + 1
        if self._deferred or self._unnotified:
            self._settle()  # (first: what was left came before)
        if old is not target:
            self._notify([(old, target)])

    def _set_state(self, new: State) -> tuple[State, State]:
        old = self._state
        self._state = new
        self._transitions[(old, new)] = self._transitions.get((old, new), 0) + 1
        if new is _HALF_OPEN:
            self._half_open_in_flight = 0
            self._half_open_successes = 0
        return (old, new)

    def _expire_open(self, now: float) -> list[tuple[State, State]] | None:
        if (
            self._state is _OPEN
            and self._opened_at is not None
            and now - self._opened_at >= self._open_duration
        ):
            return [self._set_state(_HALF_OPEN)]
        return None

    def _tripped(self) -> bool:
        """Whether the window and the run of failures call for opening (DESIGN.md 4)."""
        policy = self.policy
        window = self._window
        if policy.consecutive_failures is not None and (
            self._consecutive >= policy.consecutive_failures
        ):
            return True
        calls = window.calls
        if calls < policy.minimum_calls:
            return False
        return (
            window.failures > 0 and window.failures / calls >= policy.failure_rate_threshold
        ) or (
            self._slow_threshold is not None
            and window.slow > 0
            and window.slow / calls >= policy.slow_call_rate_threshold
        )

    def _trip(self) -> list[tuple[State, State]]:
        """CLOSED to OPEN, for the base open time."""
        self._opened_at = self._clock()
        self._open_duration = self.policy.open_seconds
        return [self._set_state(_OPEN)]

    def _reopen(self) -> list[tuple[State, State]]:
        self._opened_at = self._clock()
        self._open_duration = min(self._open_duration * 2, self.policy.max_open_seconds)
        return [self._set_state(_OPEN)]

    def _half_open_success(self) -> list[tuple[State, State]] | None:
        if self._half_open_in_flight > 0:
            self._half_open_in_flight -= 1
        self._half_open_successes += 1
        if self._half_open_successes < self.policy.half_open_calls:
            return None
        self._window.clear()
        self._consecutive = 0
        self._opened_at = None
        self._open_duration = self.policy.open_seconds
        return [self._set_state(_CLOSED)]

    def _notify(self, changes: list[tuple[State, State]] | None) -> None:
        """Tell listeners about ``changes``; called without the lock, never raises."""
        if not changes:
            return
        for old, new in changes:
            for listener in tuple(self._listeners):
                try:
                    listener(self, old, new)
                except Exception:
                    _log.exception(
                        "breaker listener %r failed on %s -> %s",
                        listener,
                        old.value,
                        new.value,
                    )
