"""Chaos drills: the double switch, fault injection, and its path through the guards."""

from __future__ import annotations

import random

import pytest

from otel_resilience._chaos import ChaosSettings, FaultInjector, FaultSpec, chaos_switched_on

# -- pure ------------------------------------------------------------------------------


def test_both_switches_are_needed() -> None:
    """The config's enabled flag and OTEL_RESILIENCE_CHAOS=1 together arm a drill; either
    alone injects nothing."""
    faults = {"redis": FaultSpec(error_rate=1.0)}
    assert chaos_switched_on({"OTEL_RESILIENCE_CHAOS": "1"})
    for value in ("", "0", "true", "yes"):
        assert not chaos_switched_on({"OTEL_RESILIENCE_CHAOS": value})
    assert not chaos_switched_on({})
    assert ChaosSettings(True, faults, armed=True).spec_for("redis") == faults["redis"]
    assert ChaosSettings(True, faults, armed=False).spec_for("redis") is None
    assert ChaosSettings(False, faults, armed=True).spec_for("redis") is None
    assert ChaosSettings(True, faults, armed=True).spec_for("postgres") is None


def test_settings_read_the_environment_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings made without an explicit ``armed`` take it from the environment."""
    monkeypatch.delenv("OTEL_RESILIENCE_CHAOS", raising=False)
    assert not ChaosSettings(True).armed
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    assert ChaosSettings(True).armed


def test_error_rate_one_fails_every_call() -> None:
    """error_rate 1.0: every draw asks for a fault, reported as it is drawn."""
    seen: list[str] = []
    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=seen.append)
    assert [injector.draw() for _ in range(5)] == [(0.0, True)] * 5
    assert seen == ["error"] * 5


def test_rates_are_drawn_per_call() -> None:
    """error_rate and latency_rate are shares of calls (seeded, so exact here); a call
    drawn neither gets None."""
    injector = FaultInjector(
        FaultSpec(error_rate=0.25, latency_seconds=0.5, latency_rate=0.5), rng=random.Random(3)
    )
    plans = [injector.draw() for _ in range(2000)]
    failed = sum(1 for plan in plans if plan is not None and plan[1])
    delayed = [plan[0] for plan in plans if plan is not None and plan[0]]
    assert 400 < failed < 600
    assert 850 < len(delayed) < 1150
    assert set(delayed) == {0.5}
    assert None in plans


def test_latency_and_error_together_are_both_reported() -> None:
    """A slow failing call: both faults reported, latency first."""
    events: list[str] = []
    injector = FaultInjector(FaultSpec(error_rate=1.0, latency_seconds=0.2), on_fault=events.append)
    assert injector.draw() == (0.2, True)
    assert events == ["latency", "error"]


def test_an_idle_spec_injects_nothing() -> None:
    """Zero rates, or latency with no seconds, are idle and draw nothing."""
    assert FaultSpec().idle
    assert FaultSpec(latency_seconds=1.0, latency_rate=0).idle
    assert not FaultSpec(latency_seconds=1.0).idle
    assert FaultInjector(FaultSpec(latency_rate=1.0)).draw() is None


def test_a_failing_reporter_does_not_break_the_drill() -> None:
    """on_fault raising is ignored: the fault is still drawn."""

    def broken(kind: str) -> None:
        raise RuntimeError("telemetry down")

    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=broken)
    assert injector.draw() == (0.0, True)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": 2}, "error_rate"),
        ({"error_rate": "often"}, "error_rate"),
        ({"latency_rate": 1.5}, "latency_rate"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"latency_seconds": 3600}, "latency_seconds"),
        ({"latency_seconds": float("inf")}, "latency_seconds"),
    ],
)
def test_bad_fault_values_name_the_field(values: dict[str, object], field: str) -> None:
    """Rates outside 0..1 and negative or absurd latencies are refused."""
    with pytest.raises(ValueError, match=field):
        FaultSpec(**values)  # type: ignore[arg-type]
