"""Breaker policy: the numbers that decide when a circuit opens and for how long."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["BreakerPolicy"]


def _check_number(name: str, value: Any, *, integer: bool = False) -> float:
    """Return ``value`` as a finite number, or raise ``ValueError`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int) and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens, how long it stays open, and how it probes recovery.

    Validated on construction: a bad value raises ``ValueError`` naming the field, the
    value and the allowed range. docs/configuration.md describes every field.
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
        def rate(name: str) -> None:
            value = _check_number(name, getattr(self, name))
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be > 0 and <= 1, got {getattr(self, name)!r}")

        def count(name: str, optional: bool = False) -> None:
            raw = getattr(self, name)
            if optional and raw is None:
                return
            value = _check_number(name, raw, integer=True)
            if value < 1:
                allowed = "an integer >= 1 or null" if optional else "an integer >= 1"
                raise ValueError(f"{name} must be {allowed}, got {raw!r}")
            object.__setattr__(self, name, int(raw))

        def seconds(name: str, optional: bool = False) -> None:
            raw = getattr(self, name)
            if optional and raw is None:
                return
            value = _check_number(name, raw)
            if value <= 0:
                allowed = "a number of seconds > 0 or null" if optional else "> 0 seconds"
                raise ValueError(f"{name} must be {allowed}, got {raw!r}")

        rate("failure_rate_threshold")
        rate("slow_call_rate_threshold")
        count("minimum_calls")
        count("window_size")
        count("consecutive_failures", optional=True)
        count("half_open_calls")
        seconds("window_seconds", optional=True)
        seconds("slow_call_seconds", optional=True)
        seconds("open_seconds")
        seconds("max_open_seconds")
        seconds("call_timeout_seconds", optional=True)
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
