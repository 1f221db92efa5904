"""Sliding windows of call outcomes, count-based or time-based, with O(1) recording.

Windows are not thread-safe on their own: the breaker calls them under its lock.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["FAILURE", "SLOW", "SUCCESS", "CountWindow", "TimeWindow", "Window"]

# Outcome codes are bit flags so one byte says both "failed" and "slow".
SUCCESS = 0
FAILURE = 1
SLOW = 2


class Window(Protocol):
    """What the breaker needs from a window."""

    calls: int
    failures: int
    slow: int

    def record(self, outcome: int, now: float) -> None: ...

    def refresh(self, now: float) -> None: ...

    def clear(self) -> None: ...


class CountWindow:
    """The last ``size`` outcomes, in a ring buffer with running totals."""

    __slots__ = ("calls", "failures", "next_index", "ring", "size", "slow", "steady")

    def __init__(self, size: int) -> None:
        # Public so the breaker's hot path can inline a success; nothing else writes them.
        self.size = size
        self.ring = bytearray(size)
        self.next_index = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0
        # Full of plain successes: one more success changes nothing but the position,
        # and every slot is equal, so the breaker need not move it either.
        self.steady = False

    def record(self, outcome: int, now: float = 0.0) -> None:
        index = self.next_index
        if self.calls == self.size:
            evicted = self.ring[index]
            if evicted:
                self.failures -= evicted & FAILURE
                self.slow -= (evicted & SLOW) >> 1
        else:
            self.calls += 1
        self.ring[index] = outcome
        if outcome:
            self.failures += outcome & FAILURE
            self.slow += (outcome & SLOW) >> 1
        index += 1
        self.next_index = 0 if index == self.size else index
        self.steady = self.calls == self.size and not self.failures and not self.slow

    def resized(self, size: int) -> CountWindow:
        """A window of ``size`` holding the newest of these outcomes that fit, in order."""
        if self.calls < self.size:
            ordered = self.ring[: self.calls]
        else:
            ordered = self.ring[self.next_index :] + self.ring[: self.next_index]
        window = CountWindow(size)
        for outcome in ordered[max(0, len(ordered) - size) :]:
            window.record(outcome)
        return window

    def refresh(self, now: float) -> None:
        """A count window does not age."""

    def clear(self) -> None:
        self.ring = bytearray(self.size)
        self.next_index = 0
        self.calls = self.failures = self.slow = 0
        self.steady = False


class TimeWindow:
    """Outcomes of the last ``seconds``, kept in ``buckets`` equal time slices.

    An outcome recorded at time ``t`` falls in slice ``floor(t / width)``; the window
    holds the slices ``current - buckets + 1`` to ``current``, so it spans between
    ``seconds - width`` and ``seconds``. Memory is fixed whatever the call rate.
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_slow",
        "_buckets",
        "_current",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, seconds: float, buckets: int = 20) -> None:
        self._buckets = buckets
        self._width = seconds / buckets
        self._bucket_calls = [0] * buckets
        self._bucket_failures = [0] * buckets
        self._bucket_slow = [0] * buckets
        self._current: int | None = None
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def slice_of(self, now: float) -> int:
        """The index of the time slice that ``now`` falls in."""
        return math.floor(now / self._width)

    def refresh(self, now: float) -> None:
        """Drop the slices that have aged out of the window at ``now``."""
        target = self.slice_of(now)
        current = self._current
        if current is None:
            self._current = target
            return
        if target <= current:
            return
        steps = min(target - current, self._buckets)
        for step in range(1, steps + 1):
            slot = (current + step) % self._buckets
            self.calls -= self._bucket_calls[slot]
            self.failures -= self._bucket_failures[slot]
            self.slow -= self._bucket_slow[slot]
            self._bucket_calls[slot] = self._bucket_failures[slot] = self._bucket_slow[slot] = 0
        self._current = target

    def record(self, outcome: int, now: float) -> None:
        self.refresh(now)
        # A clock never goes back, but an outcome can be recorded with a time a little
        # older than the newest one seen: count it in the current slice.
        slot = (self._current if self._current is not None else 0) % self._buckets
        self._bucket_calls[slot] += 1
        self.calls += 1
        if outcome & FAILURE:
            self._bucket_failures[slot] += 1
            self.failures += 1
        if outcome & SLOW:
            self._bucket_slow[slot] += 1
            self.slow += 1

    def clear(self) -> None:
        for series in (self._bucket_calls, self._bucket_failures, self._bucket_slow):
            for index in range(self._buckets):
                series[index] = 0
        self.calls = self.failures = self.slow = 0
