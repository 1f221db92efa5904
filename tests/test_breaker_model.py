"""The breaker against a small reference model of DESIGN.md section 4 (hypothesis, stateful).

The model is written for clarity, not speed: the window is a plain list of outcomes, the
time window keeps every (time, outcome) pair and filters on read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from otel_resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    Criticality,
    Dependency,
    Registry,
    State,
)
from otel_resilience._breaker import REJECTED, TRIAL
from tests.conftest import FakeClock

TIME_BUCKETS = 20  # the time window's slice count, part of its documented semantics


@dataclass
class Outcome:
    at: float
    failed: bool
    slow: bool


@dataclass
class Model:
    policy: BreakerPolicy
    state: str = "closed"
    window: list[Outcome] = field(default_factory=list)
    consecutive: int = 0
    opened_at: float | None = None
    open_duration: float = 0.0
    in_flight: int = 0
    probe_successes: int = 0
    rejected: int = 0
    successes: int = 0
    failures: int = 0
    slow_total: int = 0

    def __post_init__(self) -> None:
        self.open_duration = self.policy.open_seconds

    # -- the window ----------------------------------------------------------------

    def live(self, now: float) -> list[Outcome]:
        if self.policy.window_seconds is None:
            return self.window[-self.policy.window_size :]
        width = self.policy.window_seconds / TIME_BUCKETS
        newest = math.floor(now / width)
        # An outcome sits in the slice of the newest time seen when it was recorded.
        return [o for o in self.window if math.floor(o.at / width) > newest - TIME_BUCKETS]

    def should_trip(self, now: float) -> bool:
        policy = self.policy
        if (
            policy.consecutive_failures is not None
            and self.consecutive >= policy.consecutive_failures
        ):
            return True
        live = self.live(now)
        if len(live) < policy.minimum_calls:
            return False
        failed = sum(o.failed for o in live)
        if failed and failed / len(live) >= policy.failure_rate_threshold:
            return True
        slow = sum(o.slow for o in live)
        return (
            policy.slow_call_seconds is not None
            and slow > 0
            and slow / len(live) >= policy.slow_call_rate_threshold
        )

    # -- transitions ---------------------------------------------------------------

    def expire(self, now: float) -> None:
        opened_at = self.opened_at
        if self.state == "open" and opened_at is not None and now - opened_at >= self.open_duration:
            self.to_half_open()

    def to_half_open(self) -> None:
        self.state = "half_open"
        self.in_flight = 0
        self.probe_successes = 0

    def open(self, now: float, doubled: bool) -> None:
        self.state = "open"
        self.opened_at = now
        if doubled:
            self.open_duration = min(self.open_duration * 2, self.policy.max_open_seconds)
        else:
            self.open_duration = self.policy.open_seconds

    def manual(self, state: str) -> None:
        self.state = state
        self.window = []
        self.consecutive = 0
        self.opened_at = None
        self.open_duration = self.policy.open_seconds
        self.in_flight = 0
        self.probe_successes = 0

    # -- operations ----------------------------------------------------------------

    def allow(self, now: float) -> bool:
        return self.admit(now) != "rejected"

    def admit(self, now: float) -> str:
        """ "rejected", "admitted", or "trial" (a half-open call holding a permit)."""
        self.expire(now)
        if self.state in ("closed", "disabled"):
            return "admitted"
        if self.state == "half_open" and self.in_flight < self.policy.half_open_calls:
            self.in_flight += 1
            return "trial"
        self.rejected += 1
        return "rejected"

    def cancelled(self, now: float, duration: float, trial: bool) -> None:
        """A cancelled call: nothing in CLOSED; a half-open trial is a failed probe."""
        self.expire(now)
        if trial and self.state == "half_open":
            self.failure(now, duration)

    def release(self) -> None:
        if self.state == "half_open" and self.in_flight > 0:
            self.in_flight -= 1

    def is_slow(self, duration: float) -> bool:
        bound = self.policy.slow_call_seconds
        return bound is not None and duration >= bound

    def success(self, now: float, duration: float) -> None:
        slow = self.is_slow(duration)
        if slow:
            self.slow_total += 1
        else:
            self.successes += 1
        self.expire(now)
        if self.state in ("closed", "disabled"):
            self.consecutive = 0
            self.window.append(Outcome(now, False, slow))
            if self.state == "closed" and self.should_trip(now):
                self.open(now, doubled=False)
        elif self.state == "half_open":
            if slow:
                self.open(now, doubled=True)
                return
            self.in_flight = max(0, self.in_flight - 1)
            self.probe_successes += 1
            if self.probe_successes >= self.policy.half_open_calls:
                self.manual("closed")

    def failure(self, now: float, duration: float) -> None:
        self.failures += 1
        self.expire(now)
        if self.state in ("closed", "disabled"):
            self.consecutive += 1
            self.window.append(Outcome(now, True, self.is_slow(duration)))
            if self.state == "closed" and self.should_trip(now):
                self.open(now, doubled=False)
        elif self.state == "half_open":
            self.consecutive += 1
            self.open(now, doubled=True)


policies = st.builds(
    BreakerPolicy,
    failure_rate_threshold=st.sampled_from([0.25, 0.5, 0.8, 1.0]),
    minimum_calls=st.integers(1, 5),
    window_size=st.integers(5, 8),
    window_seconds=st.sampled_from([None, None, 2.0, 5.0]),
    consecutive_failures=st.sampled_from([None, 1, 2, 4]),
    slow_call_seconds=st.sampled_from([None, 0.5]),
    slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
    open_seconds=st.sampled_from([1.0, 2.5]),
    max_open_seconds=st.sampled_from([5.0, 10.0]),
    half_open_calls=st.integers(1, 3),
)
durations = st.sampled_from([0.0, 0.1, 0.5, 2.0])


class BreakerMatchesModel(RuleBasedStateMachine):
    """Random sequences of permits, outcomes, time steps and manual actions."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()

    @initialize(policy=policies)
    def start(self, policy: BreakerPolicy) -> None:
        # The breaker of a registry's dependency, so calls can also go through the guards.
        self.registry = Registry(
            [Dependency("model", Criticality.CRITICAL, policy=policy)], clock=self.clock
        )
        self.breaker = self.registry.breaker("model")
        assert isinstance(self.breaker, CircuitBreaker)
        self.model = Model(policy)

    @rule(seconds=st.sampled_from([0.05, 0.3, 1.0, 2.5, 7.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(times=st.integers(1, 4))
    def allow(self, times: int) -> None:
        for _ in range(times):
            assert self.breaker.allow() == self.model.allow(self.clock.now)

    @rule(duration=durations)
    def success(self, duration: float) -> None:
        self.breaker.record_success(duration)
        self.model.success(self.clock.now, duration)

    @rule(duration=durations)
    def failure(self, duration: float) -> None:
        self.breaker.record_failure(duration, "Boom")
        self.model.failure(self.clock.now, duration)

    @rule(duration=durations, failed=st.booleans())
    def guarded_call(self, duration: float, failed: bool) -> None:
        """allow() then, if admitted, an outcome: the path a guard takes."""
        allowed = self.breaker.allow()
        assert allowed == self.model.allow(self.clock.now)
        if allowed:
            self.clock.advance(duration)
            if failed:
                self.breaker.record_failure(duration)
                self.model.failure(self.clock.now, duration)
            else:
                self.breaker.record_success(duration)
                self.model.success(self.clock.now, duration)

    @rule(duration=durations)
    def cancelled_call(self, duration: float) -> None:
        """admit() then a cancellation: no outcome, unless it was a half-open trial."""
        admitted = self.breaker.admit()
        expected = self.model.admit(self.clock.now)
        assert admitted == {"rejected": REJECTED, "trial": TRIAL}.get(expected, admitted)
        assert (admitted == TRIAL) == (expected == "trial")
        if admitted != REJECTED:
            self.clock.advance(duration)
            self.breaker.record_cancelled(duration, trial=admitted == TRIAL)
            self.model.cancelled(self.clock.now, duration, expected == "trial")

    @rule(
        layers=st.lists(st.sampled_from(["call", "guard", "protect"]), min_size=1, max_size=3),
        duration=durations,
        outcome=st.sampled_from(["success", "failure", "cancelled"]),
    )
    def nested_guarded_call(self, layers: list[str], duration: float, outcome: str) -> None:
        """A call through nested guards of the dependency (registry.call, guard, protect)
        is one admission and one outcome: the model sees a single guarded call."""
        registry = self.registry

        def innermost() -> str:
            self.clock.advance(duration)
            if outcome == "failure":
                raise ConnectionError("refused")
            if outcome == "cancelled":
                raise asyncio.CancelledError
            return "ok"

        def wrap(layer: str, inner: Callable[[], str]) -> Callable[[], str]:
            if layer == "call":
                return lambda: registry.call("model", inner)
            if layer == "protect":
                return registry.protect("model")(inner)

            def guarded() -> str:
                with registry.guard("model"):
                    return inner()

            return guarded

        call = innermost
        for layer in layers:
            call = wrap(layer, call)
        # The model's view: one admission, then (when admitted) one outcome.
        admitted = self.model.admit(self.clock.now)
        expected: type[BaseException] | None = {
            "rejected": CircuitOpenError,
            "failure": ConnectionError,
            "cancelled": asyncio.CancelledError,
        }.get(admitted if admitted == "rejected" else outcome)
        if expected is None:
            assert call() == "ok"
        else:
            with pytest.raises(expected):
                call()
        if admitted == "rejected":
            return
        # The registry's guards measure durations only when the policy has a slow-call bound.
        measured = duration if self.model.policy.slow_call_seconds is not None else 0.0
        now = self.clock.now
        if outcome == "success":
            self.model.success(now, measured)
        elif outcome == "failure":
            self.model.failure(now, measured)
        else:
            self.model.cancelled(now, measured, admitted == "trial")

    @rule()
    def release(self) -> None:
        self.breaker.release()
        self.model.release()

    @rule()
    def probe_passed(self) -> None:
        moved = self.breaker.half_open()
        assert moved == (self.model.state == "open")
        if moved:
            self.model.to_half_open()

    @rule(action=st.sampled_from(["force_open", "disable", "reset"]))
    def manual(self, action: str) -> None:
        getattr(self.breaker, action)()
        self.model.manual(
            {"force_open": "forced_open", "disable": "disabled", "reset": "closed"}[action]
        )

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "model"):
            return
        now = self.clock.now
        snap = self.breaker.snapshot()
        self.model.expire(now)
        model = self.model
        assert snap.state is State(model.state)
        live = model.live(now)
        assert snap.calls == len(live)
        assert snap.failures == sum(o.failed for o in live)
        assert snap.slow_calls == sum(o.slow for o in live)
        assert snap.consecutive_failures == model.consecutive
        assert snap.total_rejected == model.rejected
        assert snap.total_failures == model.failures
        assert (snap.total_successes, snap.total_slow) == (model.successes, model.slow_total)
        if model.state == "open":
            assert model.opened_at is not None
            assert snap.open_seconds == model.open_duration
            assert snap.retry_after is not None
            assert abs(snap.retry_after - (model.opened_at + model.open_duration - now)) < 1e-9


TestBreakerMatchesModel = BreakerMatchesModel.TestCase
