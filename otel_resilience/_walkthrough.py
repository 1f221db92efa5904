"""``otel-resilience walkthrough``: a breaker walk-through with a simulated outage.

Two in-process dependencies, an optional cache with a fallback and a critical database,
are called at a steady rate through real breakers and a real clock. Both go down for a
while and come back; the walk-through prints each transition as it happens and a summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ._breaker import CircuitBreaker, State
from ._dependency import Criticality, Dependency
from ._errors import CircuitOpenError
from ._output import Output
from ._policy import BreakerPolicy
from ._registry import Registry

__all__ = ["run_walkthrough"]


@dataclass
class _Tally:
    ok: int = 0
    fallback: int = 0
    failed: int = 0
    fast_failed: int = 0
    opened_at: float | None = None
    closed_at: float | None = None
    transitions: list[str] = field(default_factory=list)


class _SimulatedDependency:
    """Answers while up; raises ConnectionError while down, after a short delay."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False

    def query(self, key: str) -> str:
        if self.down:
            time.sleep(0.005)
            raise ConnectionError(f"{self.name}: connection refused")
        return f"{self.name}:{key}"


def run_walkthrough(out: Output, *, seconds: float = 8.0, rate: float = 40.0) -> int:
    """Run the walk-through for ``seconds`` at ``rate`` calls per second per dependency."""
    policy = BreakerPolicy(
        minimum_calls=5,
        window_size=20,
        consecutive_failures=3,
        open_seconds=1.0,
        max_open_seconds=2.0,
    )
    cache = _SimulatedDependency("cache")
    database = _SimulatedDependency("database")
    registry = Registry(
        [
            Dependency("cache", Criticality.OPTIONAL, policy=policy, fallback=lambda key: "stale"),
            Dependency("database", Criticality.CRITICAL, policy=policy),
        ],
        service="walkthrough",
    )
    tallies = {"cache": _Tally(), "database": _Tally()}
    start = time.monotonic()
    outage_start, outage_end = seconds * 0.25, seconds * 0.6

    def on_transition(breaker: CircuitBreaker, old: State, new: State) -> None:
        elapsed = time.monotonic() - start
        tally = tallies[breaker.name]
        tally.transitions.append(f"{old.value}->{new.value}")
        if new is State.OPEN and tally.opened_at is None:
            tally.opened_at = elapsed - outage_start
        if new is State.CLOSED and elapsed > outage_end and tally.closed_at is None:
            tally.closed_at = elapsed - outage_end
        colour = {State.OPEN: "red", State.HALF_OPEN: "yellow", State.CLOSED: "green"}[new]
        out.line(f"{elapsed:6.2f}s {breaker.name:<9} {old.value} -> {new.value}", colour)

    for breaker in registry.breakers().values():
        breaker.add_listener(on_transition)

    out.paragraph(
        f"otel-resilience walk-through: {rate:g} calls/s to each dependency for "
        f"{seconds:g}s; both go down at {outage_start:.1f}s and come back at {outage_end:.1f}s"
    )
    interval = 1.0 / rate
    next_call = start
    index = 0
    while (now := time.monotonic()) - start < seconds:
        elapsed = now - start
        down = outage_start <= elapsed < outage_end
        cache.down = database.down = down
        key = f"k{index}"
        index += 1
        value = registry.call("cache", cache.query, key)
        tallies["cache"].fallback += value == "stale"
        tallies["cache"].ok += value != "stale"
        try:
            registry.call("database", database.query, key)
            tallies["database"].ok += 1
        except CircuitOpenError:
            tallies["database"].fast_failed += 1
        except ConnectionError:
            tallies["database"].failed += 1
        next_call += interval
        time.sleep(max(0.0, next_call - time.monotonic()))

    rows = [
        [
            name,
            str(tally.ok),
            str(tally.fallback),
            str(tally.failed),
            str(tally.fast_failed),
            "-" if tally.opened_at is None else f"{tally.opened_at:.2f}s",
            "-" if tally.closed_at is None else f"{tally.closed_at:.2f}s",
        ]
        for name, tally in tallies.items()
    ]
    headers = ["dependency", "answered", "fallback", "failed", "failed fast", "opened after"]
    out.table(
        [*headers, "closed after"],
        rows,
        title="summary (opened after the outage began, closed after it ended)",
    )
    healthy = all(registry.breaker(name).state is State.CLOSED for name in tallies)
    if healthy:
        out.line("all breakers closed again", "green")
    else:
        out.line("a breaker is still not closed", "red")
    return 0 if healthy else 1
