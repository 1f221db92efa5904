"""Chaos drills: the double switch, fault injection, and its path through the guards."""

from __future__ import annotations

import asyncio
import random

import pytest

from otel_resilience._chaos import (
    ChaosError,
    ChaosSettings,
    FaultInjector,
    FaultSpec,
    chaos_switched_on,
)

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


def test_error_rate_one_fails_every_call_before_it_runs() -> None:
    """error_rate 1.0: every call raises the given error, counted, and reported first."""
    seen: list[str] = []
    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=seen.append)
    for _ in range(5):
        with pytest.raises(ChaosError, match="redis"):
            injector.before_call(lambda: ChaosError("redis"))
    assert (injector.errors, injector.latencies) == (5, 0)
    assert seen == ["error"] * 5


def test_rates_are_drawn_per_call() -> None:
    """error_rate and latency_rate are shares of calls (seeded, so exact here)."""
    sleeps: list[float] = []
    injector = FaultInjector(
        FaultSpec(error_rate=0.25, latency_seconds=0.5, latency_rate=0.5),
        rng=random.Random(3),
        sleep=sleeps.append,
    )
    failed = 0
    for _ in range(2000):
        try:
            injector.before_call(lambda: ChaosError("dep"))
        except ChaosError:
            failed += 1
    assert failed == injector.errors
    assert 400 < failed < 600
    assert 850 < injector.latencies < 1150
    assert sleeps == [0.5] * injector.latencies


def test_latency_sleeps_before_the_error() -> None:
    """Latency then error: a slow failing call, reported in that order."""
    events: list[str] = []
    injector = FaultInjector(
        FaultSpec(error_rate=1.0, latency_seconds=0.2),
        sleep=lambda seconds: events.append(f"sleep {seconds}"),
        on_fault=events.append,
    )
    with pytest.raises(ChaosError):
        injector.before_call(lambda: ChaosError("dep"))
    assert events == ["latency", "sleep 0.2", "error"]


async def test_async_calls_wait_with_the_async_sleep() -> None:
    """The async pre-call step awaits the injected async sleep, never blocks the loop."""
    waited: list[float] = []

    async def asleep(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(0)

    injector = FaultInjector(
        FaultSpec(latency_seconds=3.0),
        sleep=lambda seconds: pytest.fail("the blocking sleep was used"),
        asleep=asleep,
    )
    await injector.abefore_call(lambda: ChaosError("dep"))
    assert waited == [3.0]


def test_a_failing_reporter_does_not_break_the_drill() -> None:
    """on_fault raising is ignored: the fault is still injected."""

    def broken(kind: str) -> None:
        raise RuntimeError("telemetry down")

    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=broken)
    with pytest.raises(ChaosError):
        injector.before_call(lambda: ChaosError("dep"))


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


def test_chaos_error_is_a_connection_error_and_pickles() -> None:
    """The generic injected error is a ConnectionError and survives pickling."""
    import pickle

    error = pickle.loads(pickle.dumps(ChaosError("dep")))
    assert isinstance(error, ConnectionError)
    assert error.dependency == "dep"
