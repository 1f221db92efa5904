"""CircuitBreaker: every transition of DESIGN.md section 4, with a fake clock and no sleeps."""

from __future__ import annotations

import pytest

from otel_resilience import BreakerPolicy, CircuitBreaker, State
from tests.conftest import FakeClock


def make(clock: FakeClock, **policy: object) -> CircuitBreaker:
    return CircuitBreaker("dep", BreakerPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def fail(breaker: CircuitBreaker, times: int, **kwargs: object) -> None:
    for _ in range(times):
        breaker.record_failure(**kwargs)  # type: ignore[arg-type]


def test_starts_closed_and_admits(clock: FakeClock) -> None:
    """A new breaker is CLOSED and admits calls."""
    breaker = make(clock)
    assert breaker.state is State.CLOSED
    assert breaker.allow()


def test_state_values_are_lower_case_names() -> None:
    """State values are the lower-case names used in metrics and JSON."""
    assert [s.value for s in State] == ["closed", "open", "half_open", "forced_open", "disabled"]


def test_consecutive_failures_open(clock: FakeClock) -> None:
    """consecutive_failures failures in a row open the breaker, one fewer does not."""
    breaker = make(clock, consecutive_failures=3, minimum_calls=50)
    fail(breaker, 2)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN
    assert not breaker.allow()


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    """A success between failures breaks the run."""
    breaker = make(clock, consecutive_failures=3, minimum_calls=50)
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot().consecutive_failures == 2


def test_failure_rate_opens_only_after_minimum_calls(clock: FakeClock) -> None:
    """The failure rate trips only once the window holds minimum_calls outcomes."""
    breaker = make(clock, consecutive_failures=None, minimum_calls=4, failure_rate_threshold=0.5)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED  # 2/3 but only 3 calls
    breaker.record_success()  # 2/4 = 0.5 >= 0.5
    assert breaker.state is State.OPEN


def test_failure_rate_below_threshold_stays_closed(clock: FakeClock) -> None:
    """A rate just under the threshold keeps the breaker closed."""
    breaker = make(clock, consecutive_failures=None, minimum_calls=10, failure_rate_threshold=0.5)
    for _ in range(6):
        breaker.record_success()
    fail(breaker, 4)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot().failure_rate == pytest.approx(0.4)


def test_count_window_forgets_old_outcomes(clock: FakeClock) -> None:
    """Only the last window_size outcomes count."""
    breaker = make(
        clock,
        consecutive_failures=None,
        minimum_calls=4,
        window_size=4,
        failure_rate_threshold=0.75,
    )
    fail(breaker, 2)
    for _ in range(4):
        breaker.record_success()
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures) == (4, 0)


def test_time_window_forgets_old_outcomes(clock: FakeClock) -> None:
    """With window_seconds, outcomes older than the window stop counting."""
    breaker = make(
        clock,
        consecutive_failures=None,
        minimum_calls=3,
        window_seconds=10.0,
        failure_rate_threshold=0.5,
    )
    fail(breaker, 2)
    clock.advance(10.5)
    assert breaker.snapshot().calls == 0
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is State.CLOSED  # 1/3: the two old failures aged out


def test_slow_calls_open(clock: FakeClock) -> None:
    """Enough slow calls open the breaker even though they succeeded."""
    breaker = make(
        clock,
        minimum_calls=3,
        slow_call_seconds=1.0,
        slow_call_rate_threshold=0.6,
    )
    breaker.record_success(duration=2.0)
    breaker.record_success(duration=0.1)
    breaker.record_success(duration=1.0)
    assert breaker.state is State.OPEN
    snap = breaker.snapshot()
    assert (snap.slow_calls, snap.total_slow, snap.total_successes) == (2, 2, 1)


def test_slow_calls_ignored_without_slow_call_seconds(clock: FakeClock) -> None:
    """Durations do not matter when slow_call_seconds is not set."""
    breaker = make(clock, minimum_calls=2)
    for _ in range(5):
        breaker.record_success(duration=100.0)
    assert breaker.state is State.CLOSED


def test_open_becomes_half_open_after_open_seconds(clock: FakeClock) -> None:
    """OPEN rejects until open_seconds have passed, then reads HALF_OPEN lazily."""
    breaker = make(clock, consecutive_failures=1, open_seconds=10)
    breaker.record_failure()
    clock.advance(9.999)
    assert not breaker.allow()
    assert breaker.snapshot().retry_after == pytest.approx(0.001)
    clock.advance(0.001)
    assert breaker.state is State.HALF_OPEN


def test_half_open_admits_limited_probes(clock: FakeClock) -> None:
    """HALF_OPEN admits at most half_open_calls calls at a time."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1, half_open_calls=2)
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_half_open_successes_close_and_clear(clock: FakeClock) -> None:
    """half_open_calls successes close the breaker with a cleared window."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1, half_open_calls=2)
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is State.CLOSED
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (0, 0, 0)


def test_half_open_failure_reopens_with_doubled_time(clock: FakeClock) -> None:
    """A failed probe re-opens, doubling the open time up to max_open_seconds."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1, max_open_seconds=5)
    breaker.record_failure()
    clock.advance(1)
    for expected in [2.0, 4.0, 5.0, 5.0]:
        assert breaker.allow()  # the probe
        breaker.record_failure()
        snap = breaker.snapshot()
        assert (snap.state, snap.open_seconds) == (State.OPEN, expected)
        clock.advance(expected - 0.01)
        assert not breaker.allow()
        clock.advance(0.01)
    # a successful probe closes it, and the next opening is back to open_seconds
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is State.CLOSED
    breaker.record_failure()
    assert breaker.snapshot().open_seconds == 1.0


def test_slow_probe_reopens(clock: FakeClock) -> None:
    """In HALF_OPEN a slow call counts as a failed probe."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1, slow_call_seconds=0.5)
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success(duration=0.7)
    assert breaker.state is State.OPEN


def test_outcome_without_allow_probes_an_expired_open_breaker(clock: FakeClock) -> None:
    """A span-recorded success after open_seconds closes the breaker with no allow() call."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1)
    breaker.record_failure()
    breaker.record_success()  # still open: a late outcome, ignored
    assert breaker._state is State.OPEN
    clock.advance(1)
    breaker.record_success()
    assert breaker._state is State.CLOSED


def test_forced_open_rejects_until_reset(clock: FakeClock) -> None:
    """FORCED_OPEN rejects whatever the time, until reset()."""
    breaker = make(clock)
    breaker.force_open()
    clock.advance(10_000)
    assert not breaker.allow()
    assert breaker.state is State.FORCED_OPEN
    assert breaker.snapshot().retry_after is None
    assert breaker.retry_after() == float("inf")
    breaker.reset()
    assert breaker.allow()


def test_disabled_admits_all_and_counts(clock: FakeClock) -> None:
    """DISABLED admits every call, keeps counting, and never opens."""
    breaker = make(clock, consecutive_failures=2)
    breaker.disable()
    fail(breaker, 20)
    assert breaker.allow()
    snap = breaker.snapshot()
    assert snap.state is State.DISABLED
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (20, 20, 20)


def test_rejected_calls_are_not_failures(clock: FakeClock) -> None:
    """A rejected call is counted as rejected, never as a dependency failure."""
    breaker = make(clock, consecutive_failures=1)
    breaker.record_failure()
    for _ in range(5):
        assert not breaker.allow()
    snap = breaker.snapshot()
    assert (snap.total_rejected, snap.total_failures) == (5, 1)


def test_half_open_via_probe(clock: FakeClock) -> None:
    """half_open() moves an OPEN breaker to HALF_OPEN at once and does nothing otherwise."""
    breaker = make(clock, consecutive_failures=1, open_seconds=100)
    assert not breaker.half_open()
    breaker.record_failure()
    assert breaker.half_open()
    assert breaker.state is State.HALF_OPEN


def test_listeners_see_each_transition(clock: FakeClock) -> None:
    """Listeners get (breaker, old, new) for every transition, in order."""
    breaker = make(clock, consecutive_failures=1, open_seconds=1)
    seen: list[tuple[str, str]] = []
    breaker.add_listener(lambda b, old, new: seen.append((old.value, new.value)))
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success()
    breaker.force_open()
    breaker.disable()
    breaker.reset()
    assert seen == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "forced_open"),
        ("forced_open", "disabled"),
        ("disabled", "closed"),
    ]


def test_failing_listener_never_reaches_the_caller(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; the transition and other listeners go on."""
    breaker = make(clock, consecutive_failures=1)
    seen: list[State] = []

    def bad(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(bad)
    breaker.add_listener(lambda b, old, new: seen.append(new))
    breaker.record_failure()
    assert seen == [State.OPEN]
    assert "listener bug" in caplog.text
    breaker.remove_listener(bad)
    breaker.remove_listener(bad)  # unknown: ignored


def test_listener_may_read_the_breaker(clock: FakeClock) -> None:
    """Listeners run outside the lock, so they can read the breaker without deadlock."""
    breaker = make(clock, consecutive_failures=1)
    states: list[State] = []
    breaker.add_listener(lambda b, old, new: states.append(b.snapshot().state))
    breaker.record_failure()
    assert states == [State.OPEN]


def test_snapshot_reports_errors(clock: FakeClock) -> None:
    """The snapshot carries the last failure time and error type."""
    breaker = make(clock, consecutive_failures=10)
    clock.advance(5)
    breaker.record_failure(error_type="ConnectionError")
    snap = breaker.snapshot()
    assert snap.last_failure_at == clock.now
    assert snap.last_error_type == "ConnectionError"
    assert snap.failure_rate == 1.0


def test_bad_name_is_refused() -> None:
    """A breaker needs a non-empty name."""
    with pytest.raises(ValueError, match="non-empty string"):
        CircuitBreaker("")
