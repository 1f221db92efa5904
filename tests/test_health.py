"""Health rules (DESIGN.md 8), the report document, and the degradation feed."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_resilience import (
    BreakerPolicy,
    Criticality,
    Dependency,
    HealthEvent,
    Registry,
    State,
    health_events,
    on_health_change,
)
from otel_resilience._health import (
    dependency_healthy,
    evaluate_health,
    health_monitor,
    health_report,
    overall_status,
)
from otel_resilience._health_checks import CheckResult

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


POLICY = BreakerPolicy(consecutive_failures=2, minimum_calls=2, open_seconds=10.0)


def make_registry(clock: FakeClock, **criticalities: str) -> Registry:
    return Registry(
        [Dependency(name, level, policy=POLICY) for name, level in criticalities.items()],
        clock=clock,
        service="chat-api",
    )


def trip(registry: Registry, name: str, error_type: str = "ConnectionError") -> None:
    for _ in range(2):
        registry.breaker(name).record_failure(error_type=error_type)


# -- pure rules ----------------------------------------------------------------------------

DOWN = {State.OPEN, State.FORCED_OPEN}


@pytest.mark.parametrize(
    ("state", "check", "expected"),
    [
        (state, check, state not in DOWN and check is not False)
        for state, check in itertools.product(State, (None, True, False))
    ],
)
def test_dependency_healthy_table(state: State, check: bool | None, expected: bool) -> None:
    """Open and forced open are down; closed, half-open, disabled are up unless the check fails."""
    assert dependency_healthy(state, check) is expected


def reference_status(entries: list[tuple[Criticality, State, bool | None, bool]]) -> str:
    """DESIGN.md 8 written out plainly: the model the implementation is checked against."""
    down = [
        level
        for level, state, check, observe_only in entries
        if not observe_only
        and level is not Criticality.MONITORING
        and (state in (State.OPEN, State.FORCED_OPEN) or check is False)
    ]
    if Criticality.CRITICAL in down:
        return "unhealthy"
    if Criticality.IMPORTANT in down or Criticality.OPTIONAL in down:
        return "degraded"
    return "healthy"


ONE_DEPENDENCY = list(itertools.product(Criticality, State, (None, True, False), (False, True)))


@pytest.mark.parametrize(("level", "state", "check", "observe_only"), ONE_DEPENDENCY)
def test_status_of_every_single_dependency_combination(
    level: Criticality, state: State, check: bool | None, observe_only: bool
) -> None:
    """Every criticality x state x check x observe-only gives the status DESIGN.md 8 says."""
    healthy = dependency_healthy(state, check)
    status = overall_status([(level, healthy, not observe_only)])
    assert status == reference_status([(level, state, check, observe_only)])


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.combinations_with_replacement(Criticality, 2))
)
def test_pairs_of_down_dependencies(first: Criticality, second: Criticality) -> None:
    """With two dependencies down, the worst decisive criticality decides."""
    status = overall_status([(first, False, True), (second, False, True)])
    assert status == reference_status(
        [(first, State.OPEN, None, False), (second, State.OPEN, None, False)]
    )


entry_strategy = st.tuples(
    st.sampled_from(Criticality),
    st.sampled_from(State),
    st.sampled_from([None, True, False]),
    st.booleans(),
)


@given(st.lists(entry_strategy, max_size=8))
def test_status_matches_reference_for_any_mix(
    entries: list[tuple[Criticality, State, bool | None, bool]],
) -> None:
    """Any mix of dependencies gets the status of the reference model."""
    verdicts = [
        (level, dependency_healthy(state, check), not observe_only)
        for level, state, check, observe_only in entries
    ]
    assert overall_status(verdicts) == reference_status(entries)


@given(st.lists(entry_strategy, min_size=1, max_size=6))
def test_evaluate_health_agrees_with_rules(
    entries: list[tuple[Criticality, State, bool | None, bool]],
) -> None:
    """evaluate_health applies the same rules per dependency and overall."""
    from otel_resilience import BreakerSnapshot

    snapshots = {}
    levels = {}
    checks: dict[str, CheckResult | None] = {}
    observers = []
    for index, (level, state, check, observe_only) in enumerate(entries):
        name = f"dep{index}"
        snapshots[name] = BreakerSnapshot(
            name=name,
            state=state,
            failure_rate=0.0,
            slow_call_rate=0.0,
            calls=0,
            failures=0,
            slow_calls=0,
            consecutive_failures=0,
            opened_at=None,
            open_seconds=1.0,
            retry_after=None,
            last_failure_at=None,
            last_error_type=None,
            total_successes=0,
            total_failures=0,
            total_slow=0,
            total_rejected=0,
        )
        levels[name] = level
        checks[name] = None if check is None else CheckResult(check, 0.0, 0.0)
        if observe_only:
            observers.append(name)
    report = evaluate_health(
        snapshots,
        levels,
        checks,
        service="s",
        wall_now=WALL,
        mono_now=0.0,
        observe_only=observers,
    )
    assert report.status == reference_status(entries)
    for index, (level, state, check, observe_only) in enumerate(entries):
        entry = report.dependencies[f"dep{index}"]
        assert entry.healthy is dependency_healthy(state, check)
        assert entry.monitoring is (observe_only or level is Criticality.MONITORING)


# -- the document --------------------------------------------------------------------------


def test_document_has_the_fields_of_design_8() -> None:
    """to_dict() is the DESIGN.md 8 document: status, service, checked_at, dependencies."""
    clock = FakeClock()
    registry = make_registry(clock, redis="optional", postgres="critical")
    trip(registry, "redis")
    clock.advance(2.5)
    document = health_report(registry, wall_clock=lambda: WALL).to_dict()
    assert set(document) == {"status", "service", "checked_at", "dependencies"}
    assert document["status"] == "degraded"
    assert document["service"] == "chat-api"
    assert document["checked_at"] == "2027-01-15T08:00:00.000Z"
    redis = document["dependencies"]["redis"]
    assert redis == {
        "criticality": "optional",
        "state": "open",
        "healthy": False,
        "failure_rate": 1.0,
        "consecutive_failures": 2,
        "last_failure_at": "2027-01-15T07:59:57.500Z",
        "last_error_type": "ConnectionError",
        "retry_after_seconds": 7.5,
    }
    assert document["dependencies"]["postgres"]["healthy"] is True
    assert document["dependencies"]["postgres"]["last_failure_at"] is None


def test_registry_health_uses_wall_clock_iso_z() -> None:
    """Registry.health() stamps checked_at as UTC ISO 8601 ending in Z."""
    registry = make_registry(FakeClock(), postgres="critical")
    report = registry.health()
    assert ISO_Z.match(report.checked_at)
    assert report.status == "healthy"
    assert report.ready is True


@pytest.mark.parametrize(
    ("level", "expected"),
    [("critical", "unhealthy"), ("important", "degraded"), ("optional", "degraded")],
)
def test_open_breaker_sets_status_by_criticality(level: str, expected: str) -> None:
    """An open breaker makes the service unhealthy or degraded according to its criticality."""
    registry = make_registry(FakeClock(), dep=level)
    trip(registry, "dep")
    assert registry.health().status == expected


def test_forced_open_counts_as_down() -> None:
    """A forced-open critical dependency makes the service unhealthy."""
    registry = make_registry(FakeClock(), postgres="critical")
    registry.breaker("postgres").force_open()
    assert registry.health().status == "unhealthy"


def test_half_open_counts_as_healthy() -> None:
    """Once open_seconds pass the breaker is half-open, admits trial calls, and counts healthy."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical")
    trip(registry, "postgres")
    clock.advance(10.0)
    report = registry.health()
    assert report.dependencies["postgres"].state is State.HALF_OPEN
    assert report.status == "healthy"


def test_monitoring_and_observe_only_are_reported_never_decisive() -> None:
    """A down MONITORING or observe-only dependency is in the document, flagged, status healthy."""
    clock = FakeClock()
    registry = Registry(
        [
            Dependency("telemetry", "monitoring", policy=POLICY),
            Dependency("auto:10.0.0.9", "critical", policy=POLICY, observe_only=True),
        ],
        clock=clock,
    )
    trip(registry, "telemetry")
    trip(registry, "auto:10.0.0.9")
    document = registry.health().to_dict()
    assert document["status"] == "healthy"
    assert document["dependencies"]["telemetry"]["monitoring"] is True
    assert document["dependencies"]["telemetry"]["healthy"] is False
    assert document["dependencies"]["auto:10.0.0.9"]["observe_only"] is True


def test_dependency_added_later_is_reported() -> None:
    """A dependency added after the first report (auto-discovery) appears in the next one."""
    registry = make_registry(FakeClock(), postgres="critical")
    registry.health()
    registry.add(Dependency("auto:redis", observe_only=True, policy=POLICY))
    assert "auto:redis" in registry.health().dependencies


def test_failing_check_marks_a_closed_dependency_unhealthy() -> None:
    """A closed critical dependency whose last health check failed makes the service unhealthy."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical")
    monitor = health_monitor(registry)
    monitor.record_check("postgres", CheckResult(False, clock(), 0.1, "timed out after 2s"))
    document = registry.health().to_dict()
    assert document["status"] == "unhealthy"
    assert document["dependencies"]["postgres"]["state"] == "closed"
    assert document["dependencies"]["postgres"]["health_check"]["error"] == "timed out after 2s"
    monitor.record_check("postgres", CheckResult(True, clock(), 0.1))
    assert registry.health().status == "healthy"


# -- the degradation feed ------------------------------------------------------------------


def test_listener_hears_degradation_and_recovery() -> None:
    """on_health_change tells of a dependency going down and coming back, with a message."""
    clock = FakeClock()
    registry = Registry(
        [Dependency("redis", "optional", policy=POLICY, fallback="none")], clock=clock
    )
    events: list[HealthEvent] = []
    unsubscribe = on_health_change(registry, events.append)
    trip(registry, "redis")
    assert len(events) == 1
    down = events[0]
    assert (down.dependency, down.was_healthy, down.healthy) == ("redis", True, False)
    assert down.criticality is Criticality.OPTIONAL
    assert down.state is State.OPEN
    assert down.status == "degraded"
    assert down.message == "redis is unavailable (open): calls get its fallback"
    clock.advance(10.0)
    registry.breaker("redis").allow()  # half-open: a trial call goes ahead
    registry.breaker("redis").record_success()
    assert [e.healthy for e in events] == [False, True]
    assert events[1].status == "healthy"
    unsubscribe()
    trip(registry, "redis")
    assert len(events) == 2


def test_listener_hears_failing_check_on_critical() -> None:
    """A failing check on a closed critical dependency is announced with its reason."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical")
    events: list[HealthEvent] = []
    on_health_change(registry, events.append)
    health_monitor(registry).record_check(
        "postgres", CheckResult(False, clock(), 2.0, "timed out after 2s")
    )
    assert len(events) == 1
    assert events[0].status == "unhealthy"
    assert events[0].message == (
        "postgres is unavailable (health check failing: timed out after 2s): calls to it may fail"
    )


def test_a_raising_listener_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged; the call that tripped the breaker goes on."""
    registry = make_registry(FakeClock(), redis="optional")

    def broken(event: HealthEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[HealthEvent] = []
    on_health_change(registry, broken)
    on_health_change(registry, seen.append)
    trip(registry, "redis")
    assert len(seen) == 1
    assert "health listener" in caplog.text


def test_messages_say_what_changed_and_what_it_means() -> None:
    """A dependency back from a failing check is "recovered"; a monitoring dependency that
    goes down only means telemetry may be dropped."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical", collector="monitoring")
    events: list[HealthEvent] = []
    on_health_change(registry, events.append)
    monitor = health_monitor(registry)
    monitor.record_check("postgres", CheckResult(False, clock(), 0.1, "timed out after 2s"))
    monitor.record_check("postgres", CheckResult(True, clock(), 0.1))
    trip(registry, "collector")
    assert [(event.dependency, event.healthy, event.message) for event in events[1:]] == [
        ("postgres", True, "postgres recovered (closed)"),
        (
            "collector",
            False,
            "collector is unavailable (open): telemetry may be dropped; the service is unaffected",
        ),
    ]
    assert events[2].status == "healthy"  # a monitoring dependency never decides


async def test_async_iterator_needs_room_for_an_event() -> None:
    """health_events() refuses a queue bound below one, naming the value."""
    with pytest.raises(ValueError, match="max_queued must be >= 1, got 0"):
        health_events(make_registry(FakeClock(), redis="optional"), max_queued=0)


def test_an_invalid_check_given_in_code_leaves_span_counting_alone() -> None:
    """A dependency built in code with a health check that does not parse learns no
    address from its spans, and its spans are counted as usual."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_resilience import BreakerSpanProcessor

    registry = Registry(
        [Dependency("cache", match={"db.system": "redis"}, health_check={"type": "pingg"})]
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    provider.get_tracer("t").start_span(
        "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "server.address": "c"}
    ).end()
    assert registry.breaker("cache").snapshot().total_successes == 1
    assert health_monitor(registry).addresses.get("cache") is None


async def test_async_iterator_yields_events_from_another_thread() -> None:
    """health_events() delivers changes made on another thread into the event loop."""
    clock = FakeClock()
    registry = make_registry(clock, redis="important")
    received: list[HealthEvent] = []
    async with health_events(registry) as events:
        await asyncio.to_thread(trip, registry, "redis")
        received.append(await asyncio.wait_for(events.__anext__(), 1.0))
    assert received[0].healthy is False
    assert received[0].status == "degraded"


async def test_async_iterator_drops_oldest_when_full() -> None:
    """A slow consumer sees at most max_queued events, the newest ones."""
    clock = FakeClock()
    registry = make_registry(clock, redis="optional", cache="optional", search="optional")
    stream = health_events(registry, max_queued=2)
    for name in ("redis", "cache", "search"):  # three events, one per dependency, in order
        trip(registry, name)
    await asyncio.sleep(0)
    got: list[Any] = [await stream.__anext__(), await stream.__anext__()]
    with pytest.raises(asyncio.TimeoutError):  # nothing more was kept
        await asyncio.wait_for(stream.__anext__(), 0.1)
    await stream.aclose()
    assert [event.dependency for event in got] == ["cache", "search"]  # redis, oldest, dropped
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_aclose_ends_a_waiting_async_for() -> None:
    """aclose() from another task ends an async for that is waiting for the next event."""
    registry = make_registry(FakeClock(), redis="optional")
    stream = health_events(registry)
    received: list[HealthEvent] = []

    async def consume() -> None:
        async for event in stream:
            received.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await stream.aclose()
    await asyncio.wait_for(task, 1.0)
    assert received == []


# -- half-open with an active check (DESIGN.md 8) -------------------------------------------


@pytest.mark.parametrize(
    ("check", "checked", "expected"),
    [
        (None, False, True),  # no active check: traffic must be able to close it
        (True, True, True),
        (False, True, False),
        (None, True, False),  # a check that has not spoken since the breaker opened
    ],
)
def test_half_open_is_decided_by_the_check(
    check: bool | None, checked: bool, expected: bool
) -> None:
    """Half-open counts as healthy only without an active check; with one, the check decides."""
    assert dependency_healthy(State.HALF_OPEN, check, checked=checked) is expected


def test_half_open_with_a_check_stays_unhealthy_until_a_fresh_check_passes() -> None:
    """A critical half-open dependency with a check: unhealthy on a result older than the
    opening, healthy on a passing one taken since, closed means healthy."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical")
    monitor = health_monitor(registry)
    monitor.record_check("postgres", CheckResult(True, clock(), 0.01))
    clock.advance(1.0)
    trip(registry, "postgres")
    clock.advance(10.0)
    assert registry.breaker("postgres").state is State.HALF_OPEN
    report = registry.health()
    assert report.status == "unhealthy"  # the passing result predates the outage
    assert report.dependencies["postgres"].healthy is False
    monitor.record_check("postgres", CheckResult(False, clock(), 0.01, "refused"))
    assert registry.health().status == "unhealthy"
    monitor.record_check("postgres", CheckResult(True, clock(), 0.01))
    assert registry.health().status == "healthy"


def test_unknown_check_is_neither_passing_nor_failing() -> None:
    """A check with no address yet is reported as unknown and leaves health to the breaker."""
    clock = FakeClock()
    registry = make_registry(clock, postgres="critical")
    unknown = CheckResult(False, clock(), 0.0, "no address yet", "NoAddress", unknown=True)
    health_monitor(registry).record_check("postgres", unknown)
    document = registry.health().to_dict()
    assert document["status"] == "healthy"
    check = document["dependencies"]["postgres"]["health_check"]
    assert check["status"] == "unknown"
    assert check["passing"] is None
    trip(registry, "postgres")
    assert registry.health().status == "unhealthy"
    clock.advance(10.0)  # half-open: without a working check, traffic decides
    assert registry.health().status == "healthy"


# -- performance-based degradation (DESIGN.md 8) --------------------------------------------

SLOW_POLICY = BreakerPolicy(
    minimum_calls=4,
    consecutive_failures=None,
    slow_call_seconds=1.0,
    slow_call_rate_threshold=0.8,
    window_seconds=10.0,
    open_seconds=5.0,
)


def slow_registry(clock: FakeClock, level: str = "critical") -> Registry:
    return Registry([Dependency("api", level, policy=SLOW_POLICY)], clock=clock, service="s")


def record_calls(registry: Registry, slow: int, fast: int) -> None:
    breaker = registry.breaker("api")
    for _ in range(fast):
        breaker.record_success(0.1)
    for _ in range(slow):
        breaker.record_success(2.0)


@pytest.mark.parametrize(
    ("slow", "fast", "expected"),
    [
        (2, 2, True),  # 50% >= half of 80%
        (1, 2, False),  # 3 calls: below minimum_calls
        (1, 3, False),  # 25% < 40%
        (4, 6, True),  # 40%: at half the threshold exactly
        (3, 7, False),  # 30%
    ],
)
def test_slow_rule(slow: int, fast: int, expected: bool) -> None:
    """slow: at least minimum_calls outcomes and a slow-call rate >= half the threshold."""
    clock = FakeClock()
    registry = slow_registry(clock)
    record_calls(registry, slow, fast)
    from otel_resilience._health import dependency_slow

    breaker = registry.breaker("api")
    assert dependency_slow(breaker.snapshot(), breaker.policy) is expected
    assert registry.breaker("api").state is State.CLOSED


def test_slow_degrades_a_critical_dependency_never_unhealthy_and_ages_out() -> None:
    """A slow critical dependency: "slow" in its entry, service degraded (not unhealthy),
    healthy again once the slow calls leave the time window of the fake clock."""
    clock = FakeClock()
    registry = slow_registry(clock)
    record_calls(registry, 3, 1)
    document = registry.health().to_dict()
    assert document["status"] == "degraded"
    assert document["dependencies"]["api"]["slow"] is True
    assert document["dependencies"]["api"]["healthy"] is True
    clock.advance(11.0)
    document = registry.health().to_dict()
    assert document["status"] == "healthy"
    assert "slow" not in document["dependencies"]["api"]


def test_slow_monitoring_dependency_changes_nothing() -> None:
    """Slowness of a MONITORING dependency is reported but leaves the status healthy."""
    clock = FakeClock()
    registry = slow_registry(clock, "monitoring")
    record_calls(registry, 3, 1)
    document = registry.health().to_dict()
    assert document["status"] == "healthy"
    assert document["dependencies"]["api"]["slow"] is True


def test_slow_and_down_is_still_unhealthy() -> None:
    """Slowness never lowers a worse status: a down critical dependency stays unhealthy."""
    clock = FakeClock()
    registry = Registry(
        [
            Dependency("api", "optional", policy=SLOW_POLICY),
            Dependency("db", "critical", policy=POLICY),
        ],
        clock=clock,
    )
    record_calls(registry, 3, 1)
    trip(registry, "db")
    assert registry.health().status == "unhealthy"


# -- the whole rule set against a plain reference --------------------------------------------

CHECKS = ("none", "passing", "failing", "unknown", "stale_passing")


def reference_full(
    entries: list[tuple[Criticality, State, str, bool, bool]],
) -> str:
    """DESIGN.md 8 with half-open checks and slowness, written out plainly."""
    worst = "healthy"
    for level, state, check, slow, observe_only in entries:
        if observe_only or level is Criticality.MONITORING:
            continue
        has_check = check in ("passing", "failing", "stale_passing")
        if state in (State.OPEN, State.FORCED_OPEN) or check == "failing":
            healthy = False
        elif state is State.HALF_OPEN and has_check:
            healthy = check == "passing"  # only a result taken since the opening counts
        else:
            healthy = True
        if not healthy and level is Criticality.CRITICAL:
            return "unhealthy"
        if not healthy or slow:
            worst = "degraded"
    return worst


@given(
    st.lists(
        st.tuples(
            st.sampled_from(Criticality),
            st.sampled_from(State),
            st.sampled_from(CHECKS),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_evaluate_health_matches_the_full_reference(
    entries: list[tuple[Criticality, State, str, bool, bool]],
) -> None:
    """Any mix of states, check results (fresh, stale, unknown), slowness and observers
    gets the status of the reference; slowness alone never makes it unhealthy."""
    from otel_resilience import BreakerSnapshot

    opened_at = 100.0
    snapshots = {}
    levels = {}
    checks: dict[str, CheckResult | None] = {}
    policies = {}
    observers = []
    for index, (level, state, check, slow, observe_only) in enumerate(entries):
        name = f"dep{index}"
        snapshots[name] = BreakerSnapshot(
            name=name,
            state=state,
            failure_rate=0.0,
            slow_call_rate=0.5 if slow else 0.0,
            calls=10,
            failures=0,
            slow_calls=5 if slow else 0,
            consecutive_failures=0,
            opened_at=opened_at if state in (State.OPEN, State.HALF_OPEN) else None,
            open_seconds=1.0,
            retry_after=None,
            last_failure_at=None,
            last_error_type=None,
            total_successes=0,
            total_failures=0,
            total_slow=0,
            total_rejected=0,
        )
        levels[name] = level
        policies[name] = BreakerPolicy(minimum_calls=10, slow_call_seconds=1.0)
        checks[name] = {
            "none": None,
            "passing": CheckResult(True, opened_at + 1, 0.0),
            "failing": CheckResult(False, opened_at + 1, 0.0, "refused"),
            "unknown": CheckResult(False, opened_at + 1, 0.0, "no address", unknown=True),
            "stale_passing": CheckResult(True, opened_at - 1, 0.0),
        }[check]
        if observe_only:
            observers.append(name)
    report = evaluate_health(
        snapshots,
        levels,
        checks,
        service="s",
        wall_now=WALL,
        mono_now=opened_at + 2,
        observe_only=observers,
        policies=policies,
    )
    assert report.status == reference_full(entries)
    for index, (_, _, _, slow, _) in enumerate(entries):
        assert report.dependencies[f"dep{index}"].slow is slow
