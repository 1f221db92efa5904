"""Breaker policy: the numbers that decide when a circuit opens and for how long."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["POLICY_FIELDS", "BreakerPolicy", "PolicyField", "format_number"]


def format_number(value: float) -> str:
    """``value`` as a person writes it: ``1000000``, ``0.001``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True, slots=True)
class PolicyField:
    """The allowed values of one policy field: the one source for validation and docs.

    ``kind`` is ``rate`` (a fraction > 0 and <= 1), ``count`` (an integer from ``low`` to
    ``high``) or ``seconds`` (a number from ``low`` to ``high``). The upper bounds keep
    every value something the breaker can hold and compute with: a count window allocates
    one byte per call, and a time window divides its span into slices.
    """

    name: str
    kind: str
    low: float
    high: float
    optional: bool
    doc: str

    @property
    def allowed(self) -> str:
        """What is allowed, as the error messages and docs say it."""
        if self.kind == "rate":
            text = "> 0 and <= 1"
        elif self.kind == "count":
            text = f"an integer from {format_number(self.low)} to {format_number(self.high)}"
        else:
            text = (
                f"a number of seconds from {format_number(self.low)} to {format_number(self.high)}"
            )
        return f"{text} or null" if self.optional else text

    def check(self, value: Any) -> Any:
        """``value`` converted (an int for counts), or ``ValueError`` naming the field."""
        if self.optional and value is None:
            return None
        integer = self.kind == "count"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"{self.name} must be {'an integer' if integer else 'a number'}, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.name} must be finite, got {value!r}")
        if integer and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{self.name} must be an integer, got {value!r}")
        low_ok = value > self.low if self.kind == "rate" else value >= self.low
        if not (low_ok and value <= self.high):
            raise ValueError(f"{self.name} must be {self.allowed}, got {value!r}")
        return int(value) if integer else value


_DAY = 86_400.0
_WEEK = 7 * _DAY
_MAX_CALLS = 1_000_000

POLICY_FIELDS: tuple[PolicyField, ...] = (
    PolicyField(
        "failure_rate_threshold",
        "rate",
        0,
        1,
        False,
        "Opens when failures / calls in the window reach this fraction.",
    ),
    PolicyField(
        "minimum_calls",
        "count",
        1,
        _MAX_CALLS,
        False,
        "Calls the window must hold before the failure or slow-call rate can open it.",
    ),
    PolicyField(
        "window_size",
        "count",
        1,
        _MAX_CALLS,
        False,
        "Size of the count-based window: the last N calls.",
    ),
    PolicyField(
        "window_seconds",
        "seconds",
        0.01,
        _DAY,
        True,
        "When set, the window holds the calls of the last N seconds instead.",
    ),
    PolicyField(
        "consecutive_failures",
        "count",
        1,
        _MAX_CALLS,
        True,
        "Opens after this many failures in a row, whatever the rate; null switches it off.",
    ),
    PolicyField(
        "slow_call_seconds",
        "seconds",
        0.001,
        _DAY,
        True,
        "A call slower than this counts as slow; slow calls can open the breaker too.",
    ),
    PolicyField(
        "slow_call_rate_threshold",
        "rate",
        0,
        1,
        False,
        "Opens when slow / calls in the window reach this fraction (with slow_call_seconds).",
    ),
    PolicyField(
        "open_seconds",
        "seconds",
        0.001,
        _WEEK,
        False,
        "How long the breaker stays open before a probe call is let through.",
    ),
    PolicyField(
        "max_open_seconds",
        "seconds",
        0.001,
        _WEEK,
        False,
        "Cap of the open time, which doubles on each failed probe; >= open_seconds.",
    ),
    PolicyField(
        "half_open_calls",
        "count",
        1,
        10_000,
        False,
        "Probe calls admitted at a time while half-open; that many successes close it.",
    ),
    PolicyField(
        "call_timeout_seconds",
        "seconds",
        0.001,
        _DAY,
        True,
        "Guarded calls (registry.call, protect) taking longer fail with a timeout.",
    ),
)
_FIELDS = {field.name: field for field in POLICY_FIELDS}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens, how long it stays open, and how it probes recovery.

    Validated on construction: a bad value raises ``ValueError`` naming the field, the
    value and the allowed range (``POLICY_FIELDS``). See docs/configuration.md.
    """

    failure_rate_threshold: float = 0.5
    minimum_calls: int = 10
    window_size: int = 100
    window_seconds: float | None = None
    consecutive_failures: int | None = 5
    slow_call_seconds: float | None = None
    slow_call_rate_threshold: float = 1.0
    open_seconds: float = 30.0
    max_open_seconds: float = 300.0
    half_open_calls: int = 1
    call_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        for field in POLICY_FIELDS:
            object.__setattr__(self, field.name, field.check(getattr(self, field.name)))
        if self.max_open_seconds < self.open_seconds:
            raise ValueError(
                f"max_open_seconds must be >= open_seconds ({self.open_seconds!r}), "
                f"got {self.max_open_seconds!r}"
            )
        if self.window_seconds is None and self.minimum_calls > self.window_size:
            raise ValueError(
                f"minimum_calls must be <= window_size ({self.window_size!r}) for a "
                f"count-based window, got {self.minimum_calls!r}"
            )

    def replace(self, **changes: Any) -> BreakerPolicy:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The policy's field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))
