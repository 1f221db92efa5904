"""The closed breaker's lock-free success path counts exactly, whoever races it."""

from __future__ import annotations

import contextvars
import resource
import sys
import threading
from collections.abc import Callable

import pytest

from otel_resilience import BreakerPolicy, CircuitBreaker, State, _breaker

THREADS = 8
CALLS = 5_000


def test_successes_on_a_full_window_are_all_counted_across_threads() -> None:
    """Successes recorded without the lock by many threads (with a tiny switch interval) add up."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=10, minimum_calls=10))
    for _ in range(10):
        breaker.record_success()  # fill the ring: from here successes take the lock-free path
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        for _ in range(CALLS):
            breaker.record_success()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    snap = breaker.snapshot()
    assert snap.total_successes == 10 + THREADS * CALLS
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (10, 0, 0)


def test_reading_the_totals_does_not_change_them() -> None:
    """Snapshots taken between lock-free successes report each success exactly once."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=2, minimum_calls=2))
    seen = []
    for _ in range(6):
        breaker.record_success()
        seen.append(breaker.snapshot().total_successes)
        seen.append(breaker.snapshot().total_successes)
    assert seen == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


def test_failures_racing_lock_free_successes_still_open_the_breaker() -> None:
    """Failures recorded while other threads record lock-free successes trip the breaker."""
    breaker = CircuitBreaker(
        "dep", BreakerPolicy(window_size=20, minimum_calls=20, consecutive_failures=None)
    )
    for _ in range(20):
        breaker.record_success()
    stop = threading.Event()

    def succeed() -> None:
        while not stop.is_set():
            breaker.record_success()

    threads = [threading.Thread(target=succeed) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10_000):
            breaker.record_failure()
            if breaker.state is State.OPEN:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert breaker.state is State.OPEN


def test_disabled_breaker_counts_successes_on_the_fast_path_and_never_opens() -> None:
    """An observe-only (DISABLED) breaker counts every success and keeps counting failures."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=4, minimum_calls=4))
    breaker.disable()
    for _ in range(10):
        breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    snap = breaker.snapshot()
    assert (snap.state, snap.total_successes, snap.total_failures) == (State.DISABLED, 10, 4)
    assert (snap.calls, snap.failures) == (4, 4)


def test_a_success_that_reaches_minimum_calls_can_open_the_breaker() -> None:
    """With failures at the threshold, the success that brings the window to minimum_calls
    opens the breaker (the success path evaluates the failure rate like any record)."""
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(
            window_size=10, minimum_calls=4, failure_rate_threshold=0.5, consecutive_failures=None
        ),
    )
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state is State.CLOSED  # 3 calls: fewer than minimum_calls
    breaker.record_success()  # 4 calls, 2 failures: 50%
    assert breaker.state is State.OPEN


def test_failures_evicted_by_successes_leave_a_steady_window() -> None:
    """Once the last failure has left the window, successes are counted lock-free again and
    the window reads as all successes."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=3, minimum_calls=3))
    breaker.record_failure()
    for _ in range(5):
        breaker.record_success()
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (3, 0, 0)
    assert (snap.total_successes, snap.total_failures) == (5, 1)
    assert breaker._count_window.steady


def test_successes_on_a_full_window_with_failures_enter_it_before_the_next_failure() -> None:
    """On a full window that holds failures, a success is counted without the lock and
    entered in the window before the next outcome: it resets the run of failures, takes
    the oldest outcome's place, and the next failure comes after it."""
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(
            window_size=4, minimum_calls=4, failure_rate_threshold=0.9, consecutive_failures=None
        ),
    )
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()  # full: F F S S
    breaker.record_success()  # without the lock; evicts the first F when entered
    breaker.record_failure()  # evicts the second F: S S S F, oldest first
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (4, 1, 1)
    assert (snap.total_successes, snap.total_failures) == (3, 3)
    assert snap.state is State.CLOSED
    for _ in range(3):  # the three outcomes older than the failure give way first
        breaker.record_success()
    assert (breaker.snapshot().failures, breaker._count_window.steady) == (1, False)
    breaker.record_success()  # then the failure: all successes again
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (4, 0, 0)
    assert breaker._count_window.steady


def test_successes_not_yet_entered_count_once_across_a_reset() -> None:
    """A reset enters the successes counted without the lock (in the totals), then clears
    the window: none is lost, none lands in the new window."""
    breaker = CircuitBreaker(
        "dep", BreakerPolicy(window_size=3, minimum_calls=3, failure_rate_threshold=0.9)
    )
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()
    for _ in range(5):
        breaker.record_success()  # a full window with a failure: without the lock
    breaker.reset()
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.total_successes, snap.total_failures) == (0, 0, 7, 1)
    breaker.record_success()
    assert breaker.snapshot().calls == 1


def test_mixed_outcomes_from_many_threads_are_all_counted() -> None:
    """Successes (without the lock, on a full window holding failures) and failures (under
    the lock) from many threads, switching as often as CPython allows: every outcome is in
    the totals, and the window stays full and consistent."""
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(
            window_size=50, minimum_calls=50, failure_rate_threshold=1.0, consecutive_failures=None
        ),
    )
    for _ in range(49):
        breaker.record_success()
    breaker.record_failure()
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        barrier.wait()
        for call in range(CALLS):
            if (call + index) % 20 == 0:
                breaker.record_failure()
            else:
                breaker.record_success()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(index,)) for index in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    snap = breaker.snapshot()
    failures = sum(
        1 for index in range(THREADS) for call in range(CALLS) if (call + index) % 20 == 0
    )
    assert snap.total_failures == failures + 1
    assert snap.total_successes == THREADS * CALLS - failures + 49
    assert snap.calls == 50
    ring = breaker._count_window
    assert snap.failures == sum(1 for slot in ring.ring if slot) <= 50
    assert snap.state is State.CLOSED


def test_outcomes_recorded_while_another_thread_holds_the_lock_are_entered_after() -> None:
    """A thread that finds the lock held (by a thread the GIL was taken from) does not wait
    for it: its outcomes are left to whoever takes the lock next, entered in order, and the
    listeners of the transition they make run in the recording call's context."""
    who: contextvars.ContextVar[str | None] = contextvars.ContextVar("who", default=None)
    seen: list[tuple[State, State, str | None]] = []
    breaker = CircuitBreaker(
        "dep", BreakerPolicy(consecutive_failures=3, slow_call_seconds=1.0, minimum_calls=100)
    )
    breaker.add_listener(lambda _, old, new: seen.append((old, new, who.get())))

    def record() -> None:
        who.set("recorder")
        breaker.record_success(0.1)
        for _ in range(3):
            breaker.record_failure(0.1, "TimeoutError")

    _left_while_held(breaker, record)  # (the lock let go without settling: a bare lock)
    assert breaker._state is State.CLOSED  # nothing entered yet
    assert not seen
    snap = breaker.snapshot()  # takes the lock: enters what was left
    assert (snap.total_successes, snap.total_failures, snap.state) == (1, 3, State.OPEN)
    assert snap.last_error_type == "TimeoutError"
    assert seen == [(State.CLOSED, State.OPEN, "recorder")]


def test_threads_recording_outcomes_under_the_lock_do_not_queue_on_it() -> None:
    """With a slow-call bound every success takes the lock. Threads that waited for it
    formed a convoy (each outcome handing the lock and the GIL over between threads, more
    than one context switch per call); now a thread never waits for a lock held by one
    that lost the GIL, and every outcome is still counted."""
    breaker = CircuitBreaker(
        "dep", BreakerPolicy(slow_call_seconds=1.0, consecutive_failures=None, window_size=20)
    )
    calls = 20_000
    switches: list[int] = []
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        barrier.wait()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
        for call in range(calls // THREADS):
            if (call + index) % 25 == 0:
                breaker.record_failure(0.01)
            else:
                breaker.record_success(0.01)
        switches.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    snap = breaker.snapshot()
    assert snap.total_successes + snap.total_failures == calls
    assert snap.total_failures == calls // 25
    assert snap.state is State.CLOSED
    assert sum(switches) < calls // 20, switches  # a convoy: more than one per call


def test_past_the_bound_of_outcomes_left_a_thread_waits_for_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A holder starved of the GIL for long (MAX_DEFERRED outcomes left behind it): the next
    thread waits for the lock, as before, and nothing is lost."""
    monkeypatch.setattr(_breaker, "MAX_DEFERRED", 3)
    breaker = CircuitBreaker("dep", BreakerPolicy(consecutive_failures=None, minimum_calls=100))
    done = threading.Event()

    def record() -> None:
        for _ in range(4):
            breaker.record_failure()
        done.set()

    recorder = threading.Thread(target=record)
    with breaker._lock:
        recorder.start()
        assert not done.wait(0.3)  # three left, the fourth waits
        assert len(breaker._deferred) == 3
    assert done.wait(10)
    recorder.join(10)
    assert breaker.snapshot().total_failures == 4
    assert not breaker._deferred


def _left_while_held(breaker: CircuitBreaker, record: Callable[[], None]) -> None:
    """Run ``record`` in another thread while this one holds the breaker's lock (as a
    thread the GIL was taken from would): what it records is left to the holder."""
    recorder = threading.Thread(target=record)
    with breaker._lock:
        recorder.start()
        recorder.join(10)
        assert not recorder.is_alive(), "the recording thread waited for the lock"


def test_successes_behind_a_left_failure_are_entered_after_it() -> None:
    """On a full window holding failures, successes that come after a failure left for the
    lock's holder are left behind it, so the window ends with the successes (entered
    before it, the failure would still be in the window)."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=10, consecutive_failures=None))
    for _ in range(9):
        breaker.record_success()
    breaker.record_failure()

    def record() -> None:
        breaker.record_failure()
        for _ in range(25):
            breaker.record_success()

    _left_while_held(breaker, record)
    assert len(breaker._deferred) == 26
    snap = breaker.snapshot()
    assert (snap.total_successes, snap.total_failures) == (34, 2)
    assert (snap.calls, snap.failures) == (10, 0)
    assert not breaker._deferred


def test_successes_behind_a_left_failure_that_trips_count_as_late_outcomes() -> None:
    """The left failures open the breaker as they are entered; the successes left behind
    them are then late outcomes of calls admitted before it opened: counted, and the
    breaker stays open."""
    breaker = CircuitBreaker("dep", BreakerPolicy(window_size=10, consecutive_failures=3))
    for _ in range(9):
        breaker.record_success()
    breaker.record_failure()

    def record() -> None:
        breaker.record_failure()
        breaker.record_failure()
        for _ in range(5):
            breaker.record_success()

    _left_while_held(breaker, record)
    snap = breaker.snapshot()
    assert snap.state is State.OPEN
    assert (snap.total_successes, snap.total_failures) == (14, 3)


@pytest.mark.parametrize(
    "take_the_lock",
    [
        lambda breaker: breaker.snapshot(),
        lambda breaker: breaker.transition_counts(),
        lambda breaker: breaker.retry_after(),
        lambda breaker: breaker.release(),
        lambda breaker: breaker.half_open(),
        lambda breaker: breaker.apply_policy(BreakerPolicy(consecutive_failures=2)),
        lambda breaker: breaker.record_success(),
        lambda breaker: breaker.record_failure(),
    ],
    ids=[
        "snapshot",
        "transition_counts",
        "retry_after",
        "release",
        "half_open",
        "apply_policy",
        "record_success",
        "record_failure",
    ],
)
def test_whatever_takes_the_lock_next_enters_what_was_left(
    take_the_lock: Callable[[CircuitBreaker], object],
) -> None:
    """A failure left while the lock was held, and a success left while the window was
    not yet full, are entered by the next use of the lock, whatever it is, and the
    transition the failure makes is told. (``state`` of a CLOSED breaker takes no lock;
    in the library every use of the lock enters what was left as it lets go.)"""
    opened: list[State] = []
    breaker = CircuitBreaker("dep", BreakerPolicy(consecutive_failures=1, window_size=10))
    breaker.add_listener(lambda _, old, new: opened.append(new))

    def record() -> None:
        breaker.record_success()
        breaker.record_failure()

    _left_while_held(breaker, record)
    assert breaker._state is State.CLOSED
    take_the_lock(breaker)
    assert breaker._state is State.OPEN
    assert opened[0] is State.OPEN
    assert not breaker._deferred
    assert breaker.snapshot().total_successes >= 1


def test_with_a_slow_call_bound_successes_under_it_on_a_steady_window_take_no_lock() -> None:
    """A count window with a slow-call bound, full of calls neither failed nor slow: a
    success under the bound is counted without the lock (a thread finds nothing to wait
    for and leaves nothing behind); one at the bound is a slow call, entered under it, and
    a run of them still opens the breaker."""
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(
            slow_call_seconds=1.0,
            slow_call_rate_threshold=0.5,
            window_size=4,
            minimum_calls=4,
            consecutive_failures=None,
        ),
    )
    for _ in range(4):
        breaker.record_success(0.1)

    _left_while_held(breaker, lambda: [breaker.record_success(0.1) for _ in range(10)])
    assert not breaker._deferred  # counted without the lock
    assert breaker.snapshot().total_successes == 14
    _left_while_held(breaker, lambda: breaker.record_success(1.0))
    assert len(breaker._deferred) == 1  # a slow call needs the lock
    snap = breaker.snapshot()
    assert (snap.total_slow, snap.slow_calls, snap.state) == (1, 1, State.CLOSED)
    breaker.record_success(0.1)  # the window holds a slow call: under the lock
    assert breaker.snapshot().total_successes == 15
    for _ in range(2):
        breaker.record_success(2.0)
    assert breaker.state is State.OPEN


def test_a_reset_after_a_left_failure_that_trips_is_told_after_the_trip() -> None:
    """A failure left while the lock was held opens the breaker as ``reset()`` enters it;
    the listeners hear of the opening first and of the reset last, so a state kept from
    them ends where the breaker is."""
    heard: list[tuple[State, State]] = []
    breaker = CircuitBreaker("dep", BreakerPolicy(consecutive_failures=1))
    breaker.add_listener(lambda _, old, new: heard.append((old, new)))
    _left_while_held(breaker, breaker.record_failure)
    breaker.reset()
    assert heard == [(State.CLOSED, State.OPEN), (State.OPEN, State.CLOSED)]
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("state", [State.OPEN, State.FORCED_OPEN])
def test_threads_failing_fast_on_an_open_breaker_do_not_queue_on_its_lock(state: State) -> None:
    """During an outage every call is rejected at once. Threads that each took the
    breaker's lock to be rejected (and again for ``retry_after``) queued on it, more than
    one context switch per call; now an open breaker rejects without the lock, and every
    rejection is counted."""
    breaker = CircuitBreaker(
        "dep", BreakerPolicy(consecutive_failures=1, open_seconds=3600, max_open_seconds=3600)
    )
    if state is State.OPEN:
        breaker.record_failure()
    else:
        breaker.force_open()
    assert breaker.state is state
    calls = 20_000
    switches: list[int] = []
    waits: list[float] = []
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
        for _ in range(calls // THREADS):
            assert not breaker.allow()
            waits.append(breaker.retry_after())
        switches.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert breaker.snapshot().total_rejected == calls
    assert min(waits) > 3000
    assert sum(switches) < calls // 20, switches
