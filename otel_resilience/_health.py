"""The health of a service from what each dependency means to it (DESIGN.md 8).

The rules are pure: ``dependency_healthy``, ``dependency_slow`` and ``evaluate_health``
take breaker snapshots, policies, criticalities and the last health-check results and do
no I/O. ``health_report(registry)`` gathers those inputs from a registry; it reads only
in-memory state, so it answers at once even while every dependency hangs.
``HealthMonitor`` keeps the last check results of a registry and tells listeners when a
dependency degrades or recovers (the degradation feed). What they need of a registry is
``MonitoredRegistry``, so this module imports none: the registry imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from ._addresses import Address, AddressBook
from ._breaker import BreakerSnapshot, CircuitBreaker, State
from ._dependency import Criticality, Dependency
from ._errors import ConfigError
from ._fork import after_fork_in_child, renew_breaker_locks
from ._health_checks import CheckResult, needs_address, parse_health_check
from ._policy import BreakerPolicy

__all__ = [
    "DependencyHealth",
    "HealthEvent",
    "HealthEvents",
    "HealthListener",
    "HealthMonitor",
    "HealthReport",
    "MonitoredRegistry",
    "address_learner",
    "dependency_healthy",
    "dependency_slow",
    "evaluate_health",
    "health_events",
    "health_monitor",
    "health_report",
    "iso_utc",
    "learn_address",
    "learning_needed",
    "on_health_change",
    "overall_status",
    "usable_check",
]

_log = logging.getLogger(__name__)

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"

# Breaker states in which a dependency is not healthy. HALF_OPEN is not among them: the
# breaker admits trial calls, and a readiness probe that kept the pod out of rotation while
# half-open would starve it of the very traffic that closes the breaker. That holds only
# where traffic is the sole way to close it: with an active health check the prober makes
# the trial calls, so the check decides until the breaker closes (``dependency_healthy``).
_DOWN_STATES = frozenset({State.OPEN, State.FORCED_OPEN})


def iso_utc(wall_seconds: float) -> str:
    """A wall-clock time (seconds since the epoch) as UTC ISO 8601 with a ``Z``."""
    moment = datetime.fromtimestamp(wall_seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dependency_healthy(state: State, check_passing: bool | None, *, checked: bool = False) -> bool:
    """Whether one dependency is healthy: its breaker admits calls and its check (if any) passes.

    Open and forced open are not healthy; closed and disabled are, unless the last active
    health check failed (``check_passing`` False; None means no usable check result).
    Half-open is healthy when the dependency has no active check (``checked`` False), so
    that traffic can reach it and close the breaker; with one, the prober makes the trial
    calls and only a passing check taken since the breaker opened counts (the caller passes
    None for an older result), so a critical dependency that is still down keeps the
    service unhealthy.
    """
    if state in _DOWN_STATES:
        return False
    if state is State.HALF_OPEN and checked:
        return check_passing is True
    return check_passing is not False


def dependency_slow(snapshot: BreakerSnapshot, policy: BreakerPolicy) -> bool:
    """Whether a dependency answers too slowly: performance-based degradation (DESIGN.md 8).

    True when the policy bounds call durations (``slow_call_seconds``), the window holds at
    least ``minimum_calls`` outcomes, and the slow-call rate is at or above half of
    ``slow_call_rate_threshold``: a warning before the breaker opens on slowness.
    """
    if policy.slow_call_seconds is None or snapshot.calls < max(policy.minimum_calls, 1):
        return False
    return snapshot.slow_calls / snapshot.calls >= policy.slow_call_rate_threshold / 2


def usable_check(result: CheckResult | None, snapshot: BreakerSnapshot) -> bool | None:
    """What a check result says about a dependency now: passing, failing, or None.

    None for no result, an ``unknown`` one (the check has no address yet), and, while the
    breaker is half-open, a result taken before the breaker last opened.
    """
    if result is None or result.unknown:
        return None
    if (
        snapshot.state is State.HALF_OPEN
        and snapshot.opened_at is not None
        and result.checked_at < snapshot.opened_at
    ):
        return None
    return result.passing


def overall_status(dependencies: Iterable[tuple[Criticality, bool, bool]]) -> str:
    """The service status from ``(criticality, healthy, decisive)`` per dependency.

    Unhealthy when a decisive CRITICAL dependency is not healthy, degraded when a decisive
    IMPORTANT or OPTIONAL one is not, else healthy. MONITORING and non-decisive
    (observe-only, auto-discovered) dependencies never change the status.
    """
    status = HEALTHY
    for criticality, healthy, decisive in dependencies:
        if healthy or not decisive or criticality is Criticality.MONITORING:
            continue
        if criticality is Criticality.CRITICAL:
            return UNHEALTHY
        status = DEGRADED
    return status


@dataclass(frozen=True, slots=True)
class DependencyHealth:
    """One dependency's entry in the health document (docs/health.md).

    Times are UTC ISO 8601 strings. ``monitoring`` flags a dependency that is reported but
    never changes the status (MONITORING criticality, or observe-only); ``check`` is the
    last active health-check result as a dict (``passing``, ``checked_at``, ``error``), or
    None when the dependency has no check or it has not run yet. ``slow`` flags a
    dependency whose slow-call rate is at or above half its threshold (``dependency_slow``).
    """

    name: str
    criticality: Criticality
    state: State
    healthy: bool
    failure_rate: float
    consecutive_failures: int
    last_failure_at: str | None
    last_error_type: str | None
    retry_after_seconds: float | None
    monitoring: bool = False
    observe_only: bool = False
    check: Mapping[str, Any] | None = None
    slow: bool = False

    def to_dict(self) -> dict[str, Any]:
        """This entry as JSON-ready data."""
        document: dict[str, Any] = {
            "criticality": self.criticality.value,
            "state": self.state.value,
            "healthy": self.healthy,
            "failure_rate": round(self.failure_rate, 4),
            "consecutive_failures": self.consecutive_failures,
            "last_failure_at": self.last_failure_at,
            "last_error_type": self.last_error_type,
            "retry_after_seconds": self.retry_after_seconds,
        }
        if self.monitoring:
            document["monitoring"] = True
        if self.observe_only:
            document["observe_only"] = True
        if self.slow:
            document["slow"] = True
        if self.check is not None:
            document["health_check"] = dict(self.check)
        return document


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The health of the service: ``status`` is ``healthy``, ``degraded`` or ``unhealthy``."""

    status: str
    service: str
    checked_at: str
    dependencies: Mapping[str, DependencyHealth] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether a readiness probe should pass: every status but ``unhealthy``."""
        return self.status != UNHEALTHY

    def to_dict(self) -> dict[str, Any]:
        """The health document (docs/health.md), JSON-ready."""
        return {
            "status": self.status,
            "service": self.service,
            "checked_at": self.checked_at,
            "dependencies": {name: dep.to_dict() for name, dep in self.dependencies.items()},
        }


def evaluate_health(
    snapshots: Mapping[str, BreakerSnapshot],
    criticality: Mapping[str, Criticality],
    checks: Mapping[str, CheckResult | None] | None = None,
    *,
    service: str,
    wall_now: float,
    mono_now: float,
    observe_only: Iterable[str] = (),
    policies: Mapping[str, BreakerPolicy] | None = None,
) -> HealthReport:
    """A HealthReport from breaker snapshots, criticalities and last check results.

    Pure: the caller reads the clocks. Snapshot and check times are readings of the
    registry's monotonic clock, turned into wall time as ``wall_now - (mono_now - reading)``.
    ``policies`` (by dependency) enable the slow-call rule; a dependency that is ``slow``
    makes the service at least degraded, never unhealthy.
    """
    checks = checks or {}
    policies = policies or {}
    observers = frozenset(observe_only)
    entries: dict[str, DependencyHealth] = {}
    verdicts: list[tuple[Criticality, bool, bool]] = []
    any_slow = False
    for name, snap in snapshots.items():
        level = criticality[name]
        result = checks.get(name)
        checked = result is not None and not result.unknown
        healthy = dependency_healthy(snap.state, usable_check(result, snap), checked=checked)
        policy = policies.get(name)
        slow = policy is not None and dependency_slow(snap, policy)
        is_observer = name in observers
        decisive = not is_observer and level is not Criticality.MONITORING
        verdicts.append((level, healthy, decisive))
        any_slow = any_slow or (slow and decisive)
        last_failure = snap.last_failure_at
        retry_after = snap.retry_after
        check_document = None
        if result is not None:
            check_document = {
                "status": result.status,
                "passing": None if result.unknown else result.passing,
                "checked_at": iso_utc(wall_now - (mono_now - result.checked_at)),
                "duration_seconds": round(result.duration_seconds, 4),
                "error": result.error,
            }
        entries[name] = DependencyHealth(
            name=name,
            criticality=level,
            state=snap.state,
            healthy=healthy,
            failure_rate=snap.failure_rate,
            consecutive_failures=snap.consecutive_failures,
            last_failure_at=(
                None if last_failure is None else iso_utc(wall_now - (mono_now - last_failure))
            ),
            last_error_type=snap.last_error_type,
            retry_after_seconds=None if retry_after is None else round(retry_after, 3),
            monitoring=not decisive,
            observe_only=is_observer,
            check=check_document,
            slow=slow,
        )
    status = overall_status(verdicts)
    if any_slow and status == HEALTHY:
        status = DEGRADED  # slowness alone degrades, never more
    return HealthReport(
        status=status,
        service=service,
        checked_at=iso_utc(wall_now),
        dependencies=entries,
    )


# -- the degradation feed --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A dependency degraded (``healthy`` False) or recovered (``healthy`` True).

    ``message`` is a sentence an application can show or log, such as
    ``"redis is unavailable (open): calls get its fallback"``; ``status`` is the service's
    status right after the change.
    """

    dependency: str
    criticality: Criticality
    was_healthy: bool
    healthy: bool
    state: State
    status: str
    message: str
    check_error: str | None = None


HealthListener = Callable[[HealthEvent], None]
"""Called as ``fn(event)`` on the thread where the change happened; must be quick."""


def _message(  # noqa: PLR0917 - a private helper called once, with every field named
    name: str,
    level: Criticality,
    healthy: bool,
    state: State,
    has_fallback: bool,
    check_error: str | None,
) -> str:
    if healthy and state is State.HALF_OPEN:
        return f"{name} may have recovered: trial calls are admitted (half_open)"
    if healthy:
        return f"{name} recovered ({state.value})"
    why = state.value if state in _DOWN_STATES else "health check failing"
    if state is State.HALF_OPEN and not check_error:
        why = "half_open, until its health check passes"
    if level is Criticality.MONITORING:
        consequence = "telemetry may be dropped; the service is unaffected"
    elif has_fallback and state in _DOWN_STATES:
        consequence = "calls get its fallback"
    elif state in _DOWN_STATES:
        consequence = "calls to it fail fast"
    else:
        consequence = "calls to it may fail"
    if check_error and state not in _DOWN_STATES:
        why = f"health check failing: {check_error}"
    return f"{name} is unavailable ({why}): {consequence}"


class MonitoredRegistry(Protocol):
    """What health needs of a registry (``Registry`` is one): its dependencies and
    breakers, its clock and service name, the slot that keeps its ``HealthMonitor``, and
    its lock (renewed in a forked child along with the breakers' locks)."""

    _health_monitor: HealthMonitor | None
    _lock: threading.Lock

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def service(self) -> str: ...

    @property
    def dependencies(self) -> tuple[Dependency, ...]: ...

    def breaker(self, name: str) -> CircuitBreaker: ...

    def breakers(self) -> dict[str, CircuitBreaker]: ...

    def __getitem__(self, name: str) -> Dependency: ...

    def __contains__(self, name: object) -> bool: ...


class HealthMonitor:
    """The health bookkeeping of one registry: last check results and change listeners.

    It listens to every breaker's transitions and to check results, and calls health
    listeners when a dependency's ``healthy`` flips. ``addresses`` holds where each
    dependency's calls go, for the checks that have no address of their own. Thread-safe;
    listeners run outside the lock and their exceptions are logged, never raised into the
    caller.
    """

    def __init__(self, registry: MonitoredRegistry) -> None:
        self._registry_ref = weakref.ref(registry)
        self.addresses = AddressBook()
        self._lock = threading.Lock()
        self._checks: dict[str, CheckResult] = {}
        self._healthy: dict[str, bool] = {}
        self._watched: set[str] = set()
        self._listeners: list[HealthListener] = []
        after_fork_in_child(self._after_fork_in_child)
        self.sync()

    def _after_fork_in_child(self) -> None:
        # Another thread (the prober's) may have held these locks at the fork.
        self._lock = threading.Lock()
        self.addresses._lock = threading.Lock()
        registry = self._registry()
        if registry is not None:
            registry._lock = threading.Lock()
            renew_breaker_locks(registry.breakers().values())

    def _registry(self) -> MonitoredRegistry | None:
        return self._registry_ref()

    def sync(self) -> None:
        """Listen to breakers added to the registry since the last call (auto-discovery)."""
        registry = self._registry()
        if registry is None:
            return
        breakers = registry.breakers()
        if len(breakers) == len(self._watched):
            return
        with self._lock:
            for name, breaker in breakers.items():
                if name in self._watched:
                    continue
                self._watched.add(name)
                self._healthy[name] = _healthy_now(breaker, self._checks.get(name))[0]
                breaker.add_listener(self._on_transition)

    def check_results(self) -> dict[str, CheckResult]:
        """The last active health-check result of each dependency that has one."""
        with self._lock:
            return dict(self._checks)

    def record_check(self, name: str, result: CheckResult) -> None:
        """Keep ``result`` as the last check of ``name`` and tell listeners if health flipped."""
        with self._lock:
            self._checks[name] = result
        self._reevaluate(name)

    def add_listener(self, listener: HealthListener) -> Callable[[], None]:
        """Call ``listener(event)`` on each change; returns a function that unsubscribes."""
        self.sync()
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        self._reevaluate(breaker.name)

    def _reevaluate(self, name: str) -> None:
        registry = self._registry()
        if registry is None or name not in registry:
            return
        breaker = registry.breaker(name)
        dependency = registry[name]
        with self._lock:
            check = self._checks.get(name)
        healthy, state = _healthy_now(breaker, check)
        with self._lock:
            was_healthy = self._healthy.get(name, True)
            self._healthy[name] = healthy
            listeners = tuple(self._listeners) if healthy != was_healthy else ()
        if not listeners:
            return
        check_error = None if check is None or check.passing or check.unknown else check.error
        event = HealthEvent(
            dependency=name,
            criticality=dependency.criticality,
            was_healthy=was_healthy,
            healthy=healthy,
            state=state,
            status=self._status(registry),
            message=_message(
                name,
                dependency.criticality,
                healthy,
                state,
                dependency.fallback is not None,
                check_error,
            ),
            check_error=check_error,
        )
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("health listener %r failed", listener)

    def _status(self, registry: MonitoredRegistry) -> str:
        with self._lock:
            healthy = dict(self._healthy)
        return overall_status(
            (
                dep.criticality,
                healthy.get(dep.name, True),
                not dep.observe_only,
            )
            for dep in registry.dependencies
        )


def _healthy_now(breaker: CircuitBreaker, check: CheckResult | None) -> tuple[bool, State]:
    """``dependency_healthy`` for a breaker's current snapshot and its last check result."""
    snap = breaker.snapshot()
    checked = check is not None and not check.unknown
    return dependency_healthy(snap.state, usable_check(check, snap), checked=checked), snap.state


# Makes each registry's monitor once (HealthMonitor() reads the registry, so not under the
# registry's own lock); the monitor itself is kept on the registry that owns it.
_MONITOR_CREATION_LOCK = threading.Lock()


def health_monitor(registry: MonitoredRegistry) -> HealthMonitor:
    """The one HealthMonitor of ``registry`` (``registry._health_monitor``), made on first use."""
    monitor = registry._health_monitor
    if monitor is None:
        with _MONITOR_CREATION_LOCK:
            monitor = registry._health_monitor
            if monitor is None:
                monitor = HealthMonitor(registry)
                registry._health_monitor = monitor
    return monitor


def health_report(
    registry: MonitoredRegistry, *, wall_clock: Callable[[], float] = time.time
) -> HealthReport:
    """The health of ``registry`` now, from in-memory state only (never waits on a probe)."""
    monitor = health_monitor(registry)
    monitor.sync()
    dependencies = registry.dependencies  # one read: a dependency added meanwhile waits
    snapshots = {dep.name: registry.breaker(dep.name).snapshot() for dep in dependencies}
    mono_now = registry.clock()
    wall_now = wall_clock()
    return evaluate_health(
        snapshots,
        {dep.name: dep.criticality for dep in dependencies},
        monitor.check_results(),
        service=registry.service,
        wall_now=wall_now,
        mono_now=mono_now,
        observe_only=[dep.name for dep in dependencies if dep.observe_only],
        policies={dep.name: registry.breaker(dep.name).policy for dep in dependencies},
    )


def learn_address(registry: MonitoredRegistry, name: str, address: Address | None) -> None:
    """Tell ``registry``'s health checks where dependency ``name``'s calls go.

    For client guards, which see calls that have no span (asyncpg connects) and skip the
    spans of the calls they guard. Cheap when nothing changed; never raises.
    """
    try:
        health_monitor(registry).addresses.learn(name, address)
    except Exception:  # pragma: no cover - a bug; the guarded call must go on
        _log.debug("could not learn the address of %s", name, exc_info=True)


def learning_needed(registry: MonitoredRegistry) -> bool:
    """Whether any dependency of ``registry`` has a built-in check with no address of its
    own, so that the span processor should learn addresses from guarded calls' spans too."""
    for dependency in registry.dependencies:
        if dependency.health_check is None:
            continue
        try:
            spec = parse_health_check(dependency.health_check, match=dependency.match)
        except (ConfigError, ValueError):
            continue
        if needs_address(spec):
            return True
    return False


def address_learner(
    registry: MonitoredRegistry, name: str
) -> Callable[[Mapping[str, Any]], None] | None:
    """The span processor's learning function for ``name``, or None when none is needed.

    Only a dependency with a built-in health check that has no address of its own needs
    its calls' address; for the others the processor does nothing extra per span.
    """
    try:
        dependency = registry[name]
        spec = parse_health_check(dependency.health_check, match=dependency.match)
    except (ConfigError, ValueError, LookupError):
        return None
    if not needs_address(spec):
        return None
    return health_monitor(registry).addresses.span_learner(name)


def on_health_change(registry: MonitoredRegistry, listener: HealthListener) -> Callable[[], None]:
    """Call ``listener(event)`` whenever a dependency of ``registry`` degrades or recovers.

    Returns a function that unsubscribes. The listener runs on the thread where the change
    happened (a request's, or the prober's); it must be quick and should not raise.
    """
    return health_monitor(registry).add_listener(listener)


class HealthEvents:
    """An async iterator over the HealthEvents of a registry, subscribed from creation on.

    Made by ``health_events(registry)`` inside a running event loop; events from any thread
    are handed to that loop. At most ``max_queued`` events wait for a slow consumer (the
    oldest are dropped first). ``aclose()``, leaving ``async with``, or garbage collection
    unsubscribes.
    """

    def __init__(self, registry: MonitoredRegistry, *, max_queued: int = 100) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued!r}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[HealthEvent | None] = asyncio.Queue()  # None: closed
        self._queue = queue

        def put(event: HealthEvent) -> None:
            while queue.qsize() >= max_queued:
                queue.get_nowait()
            queue.put_nowait(event)

        def listener(event: HealthEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(put, event)

        self._unsubscribe = weakref.finalize(self, on_health_change(registry, listener))

    def __aiter__(self) -> HealthEvents:
        return self

    async def __anext__(self) -> HealthEvent:
        if not self._unsubscribe.alive:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop listening; a pending ``async for`` ends."""
        if self._unsubscribe.alive:
            self._unsubscribe()
            self._queue.put_nowait(None)

    async def __aenter__(self) -> HealthEvents:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def health_events(registry: MonitoredRegistry, *, max_queued: int = 100) -> HealthEvents:
    """``async for event in health_events(registry)``: each degradation and recovery.

    Call it inside a running event loop; it listens from that moment on.
    """
    return HealthEvents(registry, max_queued=max_queued)
