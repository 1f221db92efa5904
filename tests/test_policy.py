"""BreakerPolicy validation."""

from __future__ import annotations

import dataclasses

import pytest

from otel_resilience import BreakerPolicy


def test_defaults_match_the_design() -> None:
    """The defaults are those of DESIGN.md section 3."""
    policy = BreakerPolicy()
    assert policy.failure_rate_threshold == 0.5
    assert policy.minimum_calls == 10
    assert policy.window_size == 100
    assert policy.window_seconds is None
    assert policy.consecutive_failures == 5
    assert policy.slow_call_seconds is None
    assert policy.slow_call_rate_threshold == 1.0
    assert policy.open_seconds == 30.0
    assert policy.max_open_seconds == 300.0
    assert policy.half_open_calls == 1
    assert policy.call_timeout_seconds is None


def test_policy_is_frozen() -> None:
    """A policy cannot be changed after construction."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        BreakerPolicy().open_seconds = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("failure_rate_threshold", 0, "failure_rate_threshold must be > 0 and <= 1, got 0"),
        ("failure_rate_threshold", 1.5, "failure_rate_threshold must be > 0 and <= 1, got 1.5"),
        ("slow_call_rate_threshold", -0.1, "slow_call_rate_threshold must be > 0 and <= 1"),
        ("minimum_calls", 0, "minimum_calls must be an integer from 1 to 1000000, got 0"),
        ("minimum_calls", 2.5, "minimum_calls must be an integer, got 2.5"),
        ("window_size", True, "window_size must be an integer, got True"),
        (
            "consecutive_failures",
            0,
            "consecutive_failures must be an integer from 1 to 1000000 or null",
        ),
        ("half_open_calls", "2", "half_open_calls must be an integer, got '2'"),
        ("open_seconds", 0, "open_seconds must be a number of seconds from 0.001 to 604800, got 0"),
        ("open_seconds", float("nan"), "open_seconds must be finite"),
        (
            "window_seconds",
            -1,
            "window_seconds must be a number of seconds from 0.01 to 86400 or null",
        ),
        ("slow_call_seconds", "fast", "slow_call_seconds must be a number, got 'fast'"),
        ("call_timeout_seconds", float("inf"), "call_timeout_seconds must be finite"),
        ("max_open_seconds", 10, "max_open_seconds must be >= open_seconds (30.0), got 10"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    """A bad value raises ValueError naming the field, the value and what is allowed."""
    with pytest.raises(ValueError, match="^" + __import__("re").escape(message)):
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]


def test_minimum_calls_cannot_exceed_a_count_window() -> None:
    """A count window smaller than minimum_calls could never trip on rate, so it is refused."""
    with pytest.raises(ValueError, match=r"minimum_calls must be <= window_size \(5\)"):
        BreakerPolicy(window_size=5, minimum_calls=6)
    assert BreakerPolicy(window_size=5, minimum_calls=6, window_seconds=10).minimum_calls == 6


def test_replace_validates() -> None:
    """replace() returns a validated copy."""
    policy = BreakerPolicy().replace(open_seconds=5, max_open_seconds=50)
    assert (policy.open_seconds, policy.max_open_seconds) == (5, 50)
    with pytest.raises(ValueError, match="open_seconds"):
        policy.replace(open_seconds=-1)


def test_optional_fields_accept_none() -> None:
    """Optional bounds can be switched off with None."""
    policy = BreakerPolicy(consecutive_failures=None, call_timeout_seconds=None)
    assert policy.consecutive_failures is None
