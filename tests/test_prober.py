"""The health prober's own rules: its settings, a check it cannot parse, and the half-open
permit it takes for a trial probe, always given back when the probe says nothing."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from otel_resilience import BreakerPolicy, Criticality, Dependency, HealthProber, Registry, State
from otel_resilience._health import health_monitor
from tests.conftest import FakeClock

POLICY = BreakerPolicy(consecutive_failures=1, open_seconds=5, half_open_calls=1)


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def half_open(registry: Registry, clock: FakeClock, name: str) -> None:
    registry.breaker(name).record_failure(error_type="ConnectionError")
    clock.advance(5)
    assert registry.breaker(name).state is State.HALF_OPEN


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan"), True, "5"])
def test_interval_must_be_a_finite_positive_number(interval: Any) -> None:
    """A prober interval that is not a finite number of seconds > 0 is refused, naming it."""
    with pytest.raises(ValueError, match="interval_seconds must be a finite number of seconds"):
        HealthProber(Registry(), interval_seconds=interval)


def test_start_twice_runs_one_prober() -> None:
    """A second start() while running starts no second thread; repr says whether it runs."""
    prober = HealthProber(Registry(), interval_seconds=2)
    assert repr(prober) == "<HealthProber stopped every 2s>"
    prober.start()
    try:
        thread = prober._thread
        prober.start()
        assert prober._thread is thread
        assert repr(prober) == "<HealthProber running every 2s>"
    finally:
        prober.stop()
    assert not prober.running


def test_a_check_given_in_code_that_does_not_parse_is_logged_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dependency built in code with an invalid health check is not checked; the prober
    logs why once, naming the dependency, and keeps running the other checks."""
    calls: list[int] = []
    registry = Registry(
        [
            Dependency("db", Criticality.CRITICAL, health_check={"type": "pingg"}),
            Dependency("api", health_check=lambda: calls.append(1) or True),
        ]
    )
    with (
        caplog.at_level(logging.ERROR, logger="otel_resilience._prober"),
        HealthProber(registry, interval_seconds=0.05),
    ):
        wait_until(lambda: len(calls) >= 2)
    errors = [r.getMessage() for r in caplog.records]
    assert errors == [
        "health check not run: dependencies.db.health_check.type: unknown health check "
        "'pingg'; built-ins: redis, sql, http, or an import path 'module:function'"
    ]
    assert "db" not in health_monitor(registry).check_results()


def test_a_trial_probe_with_no_address_gives_its_permit_back(clock: FakeClock) -> None:
    """A half-open breaker's trial probe that cannot run (no address learned yet) reports
    unknown and gives the half-open permit back, so the application's next call is the
    trial."""
    registry = Registry(
        [Dependency("cache", Criticality.CRITICAL, policy=POLICY, health_check="redis")],
        clock=clock,
    )
    half_open(registry, clock, "cache")
    breaker = registry.breaker("cache")
    with HealthProber(registry, interval_seconds=3600, clock=clock):
        wait_until(lambda: "cache" in health_monitor(registry).check_results())
        assert health_monitor(registry).check_results()["cache"].unknown
        wait_until(breaker.allow)  # the permit is free again: this call takes it
    breaker.record_success()
    assert breaker.state is State.CLOSED


def test_a_trial_probe_cut_short_by_stop_gives_its_permit_back(clock: FakeClock) -> None:
    """Stopping the prober while its half-open trial probe hangs gives the permit back."""
    started, gate = threading.Event(), threading.Event()

    def hangs() -> bool:
        started.set()
        gate.wait(10)
        return True

    registry = Registry(
        [Dependency("db", Criticality.CRITICAL, policy=POLICY, health_check=hangs)],
        clock=clock,
    )
    half_open(registry, clock, "db")
    breaker = registry.breaker("db")
    prober = HealthProber(registry, interval_seconds=3600, clock=clock)
    prober.start()
    try:
        assert started.wait(5)
        assert not breaker.allow()  # the probe holds the only permit
    finally:
        prober.stop()
        gate.set()
    assert breaker.allow()


def test_a_check_that_exits_is_a_failing_check() -> None:
    """A check function that raises SystemExit (a sys.exit() in the user's check) fails its
    check; the prober and the process go on."""
    import sys

    def exits() -> bool:
        sys.exit(3)

    registry = Registry([Dependency("api", health_check=exits)])
    with HealthProber(registry, interval_seconds=0.05) as prober:
        wait_until(lambda: "api" in health_monitor(registry).check_results())
        assert prober.running
    result = health_monitor(registry).check_results()["api"]
    assert (result.passing, result.error_type) == (False, "SystemExit")
