"""The registry: the service's dependencies, their breakers, and guarded calls."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._breaker import CircuitBreaker, Listener
from ._chaos import ChaosSettings, FaultInjector, FaultSpec, mark_current_span
from ._config import LoadedConfig, TelemetrySettings, parse_config
from ._dependency import Dependency
from ._errors import ConcurrencyLimitError, UnknownDependencyError
from ._guard import (
    MISSING,
    PLAIN,
    REJECTION_ERRORS,
    Entry,
    Guard,
    aprotected,
    guarded_acall,
    guarded_aiter,
    guarded_call,
    guarded_iter,
    protected,
)
from ._health import HealthMonitor, HealthReport, health_report
from ._limits import ConcurrencyLimiter
from ._reload import reload_registry
from ._retry_budget import RetryBudgetPolicy, RetryGate, retry_predicate
from ._semconv import Classifier
from ._trace_links import log_open_transition

if TYPE_CHECKING:
    from ._events import OperatorEvent

__all__ = ["Registry", "TelemetrySettings", "load_config"]

_DEFAULT_RETRY_BUDGET = RetryBudgetPolicy()

# A call over its concurrency limit raises this (mixed with the client's own error).
REJECTION_ERRORS["limit"] = ConcurrencyLimitError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """The declared dependencies of a service, each with its own circuit breaker.

    ``Registry.from_config`` builds one from a ``resilience.yaml`` (or TOML, or a dict).
    """

    def __init__(
        self,
        dependencies: Iterable[Dependency] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        service: str | None = None,
        telemetry: TelemetrySettings | None = None,
        source: str | None = None,
        chaos: ChaosSettings | None = None,
    ) -> None:
        self.clock = clock
        self.chaos_settings = chaos if chaos is not None else ChaosSettings()
        self._retry_gates: dict[str, RetryGate] = {}
        self._limiters: dict[str, ConcurrencyLimiter] = {}
        self._chaos_counts: dict[tuple[str, str], int] = {}
        self.service = service or os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"
        self.telemetry = telemetry if telemetry is not None else TelemetrySettings()
        self.source = source
        # The env var holding the admin token of health_app's manual-control routes.
        self.admin_token_env: str | None = None
        self._lock = threading.Lock()
        # Its health state (check results, learned addresses, listeners): _health.health_monitor.
        self._health_monitor: HealthMonitor | None = None
        # The error of the invalid config it stands in for (configure()), one line; under
        # _configure's wiring lock.
        self._config_error: str | None = None
        self._entries: dict[str, Entry] = {}
        self._classifier = Classifier(())
        self._fallback_counts: dict[tuple[str, str, str], int] = {}
        # Every transition to OPEN is a log record with the tripping call's trace ids.
        self._transition_listeners: list[Listener] = [log_open_transition]
        self._event_listeners: tuple[Callable[[OperatorEvent], None], ...] = ()
        self._add_all(dependencies)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Registry:
        """Build a registry from a config file path (YAML, TOML, JSON) or a dict."""
        return load_config(config, clock=clock)

    # -- the dependencies ------------------------------------------------------------

    def add(self, dependency: Dependency) -> Dependency:
        """Declare ``dependency`` (its name must be new) and give it a breaker."""
        self._add_all((dependency,))
        return dependency

    def _add_all(self, dependencies: Iterable[Dependency]) -> None:
        """Declare several dependencies at once: one copy and one classifier for all, so
        a config of thousands loads in linear time."""
        dependencies = tuple(dependencies)
        for dependency in dependencies:
            if not isinstance(dependency, Dependency):
                raise TypeError(f"expected a Dependency, got {dependency!r}")
        if not dependencies:
            return
        with self._lock:
            entries = dict(self._entries)
            for dependency in dependencies:
                if dependency.name in entries:
                    raise ValueError(f"dependency {dependency.name!r} is declared twice")
                breaker = CircuitBreaker(dependency.name, dependency.policy, clock=self.clock)
                for listener in self._transition_listeners:
                    breaker.add_listener(listener)
                if dependency.observe_only:
                    breaker.disable()  # counts every outcome, never rejects
                bind = getattr(dependency.fallback, "bind_breaker", None)
                if bind is not None:  # a fallback that follows recovery (the memory cache)
                    bind(breaker)
                entry = Entry(dependency, breaker, self._count_fallback)
                self._equip(entry)
                entries[dependency.name] = entry
            self._entries = entries
            self._rebuild_classifier()

    def _rebuild_classifier(self) -> None:
        # A new classifier (and cache) for the current set: readers never see a mix.
        self._classifier = Classifier(
            tuple(
                (name, tuple(entry.dependency.match.items()))
                for name, entry in self._entries.items()
                if entry.dependency.match
            )
        )

    def reload(self, config: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> None:
        """Apply a new config (path or dict; default: the file this registry came from) in
        place: policies, criticalities, matches and fallbacks change, breaker states and
        windows stay. An invalid config raises ``ConfigError`` and changes nothing."""
        reload_registry(self, config)

    def _apply_reloaded(self, fresh: Registry) -> None:
        """Take ``fresh``'s dependencies and settings in place (``_reload``'s apply step,
        after ``fresh`` was validated): breaker states and windows stay, limiters whose
        policy is unchanged stay, chaos follows the new settings."""
        for dependency in fresh.dependencies:
            if dependency.name not in self:
                self.add(dependency)
                continue
            entry = self._entry(dependency.name)
            was_observe_only = entry.dependency.observe_only
            reloaded = _keep_fallback_state(entry.dependency, dependency)
            bind = getattr(reloaded.fallback, "bind_breaker", None)
            if bind is not None:  # a new memory cache follows recovery of the same breaker
                bind(entry.breaker)
            entry.breaker.apply_policy(reloaded.policy)
            entry.dependency = reloaded
            entry.refresh()  # the hot path's flags of the reloaded dependency
            if was_observe_only:
                # An auto-discovered dependency is now declared: its breaker protects from now on.
                entry.breaker.reset()
        self._rebuild_classifier()
        self.chaos_settings = fresh.chaos_settings
        with self._lock:
            for entry in self._entries.values():
                self._equip(entry)  # limits kept or replaced, chaos from the new settings
        self.service = fresh.service
        self.telemetry = fresh.telemetry
        self.admin_token_env = fresh.admin_token_env
        if fresh.source is not None:
            self.source = fresh.source

    def _entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownDependencyError(name, self._entries) from None

    def __getitem__(self, name: str) -> Dependency:
        return self._entry(name).dependency

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Dependency]:
        return iter([entry.dependency for entry in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry service={self.service!r} dependencies={list(self._entries)}>"

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        """The declared dependencies, in declaration order."""
        return tuple(entry.dependency for entry in self._entries.values())

    def breaker(self, name: str) -> CircuitBreaker:
        """The circuit breaker of dependency ``name``."""
        return self._entry(name).breaker

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker by dependency name."""
        return {name: entry.breaker for name, entry in self._entries.items()}

    def add_event_listener(self, listener: Callable[[OperatorEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for each operator event of this registry (a config reload,
        applied or failed; a manual breaker action over HTTP); returns a remover."""
        with self._lock:
            self._event_listeners = (*self._event_listeners, listener)

        def remove() -> None:
            with self._lock:
                listeners = list(self._event_listeners)
                if listener in listeners:
                    listeners.remove(listener)
                self._event_listeners = tuple(listeners)

        return remove

    def event_listeners(self) -> tuple[Callable[[OperatorEvent], None], ...]:
        """The operator-event listeners now (``_events.emit_event`` calls them)."""
        return self._event_listeners

    def add_transition_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(breaker, old, new)`` on every breaker's transitions, present and
        future; returns a function that removes it again."""
        with self._lock:
            self._transition_listeners.append(listener)
            breakers = [entry.breaker for entry in self._entries.values()]
        for breaker in breakers:
            breaker.add_listener(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._transition_listeners:
                    self._transition_listeners.remove(listener)
                current = [entry.breaker for entry in self._entries.values()]
            for breaker in current:
                breaker.remove_listener(listener)

        return remove

    # -- classification --------------------------------------------------------------

    def classify(self, attributes: Mapping[str, Any]) -> str | None:
        """The first declared dependency whose ``match`` holds for these span attributes.

        Memoised by the attribute values the matchers read (``_semconv.Classifier``): this
        runs for every client span.
        """
        return self._classifier.classify(attributes)

    # -- fallbacks -------------------------------------------------------------------

    def _count_fallback(self, name: str, reason: str, operation: str = "read") -> None:
        key = (name, reason, operation)
        with self._lock:
            self._fallback_counts[key] = self._fallback_counts.get(key, 0) + 1

    def fallback_counts(self) -> dict[tuple[str, str], int]:
        """How many fallbacks were served, by (dependency, reason: open, error, timeout)."""
        totals: dict[tuple[str, str], int] = {}
        for (name, reason, _), count in self.fallback_operation_counts().items():
            totals[name, reason] = totals.get((name, reason), 0) + count
        return totals

    def fallback_operation_counts(self) -> dict[tuple[str, str, str], int]:
        """Fallbacks served by (dependency, reason, operation: read or write)."""
        with self._lock:
            return dict(self._fallback_counts)

    # -- guarded calls ---------------------------------------------------------------

    def call(
        self, name: str, fn: Callable[..., T], /, *args: Any, fallback: Any = MISSING, **kwargs: Any
    ) -> T:
        """Call ``fn(*args, **kwargs)`` through dependency ``name``'s breaker.

        Rejected (breaker open) or failed calls return ``fallback(*args, **kwargs)`` when
        there is one (the argument, else the dependency's own; ``fallback=None`` turns it
        off); otherwise a rejection raises ``CircuitOpenError`` and a failure re-raises.
        Inside another guarded call of the same dependency, the call joins that one.
        """
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownDependencyError(name, self._entries) from None
        return guarded_call(entry, PLAIN, fn, args, kwargs, fallback)

    async def acall(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        fallback: Any = MISSING,
        **kwargs: Any,
    ) -> T:
        """``await fn(*args, **kwargs)`` through the breaker; a timeout cancels the call."""
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownDependencyError(name, self._entries) from None
        return await guarded_acall(entry, PLAIN, fn, args, kwargs, fallback)

    @overload
    def protect(self, name: str, fn: F, /) -> F: ...

    @overload
    def protect(self, name: str, /, *, fallback: Any = MISSING) -> Callable[[F], F]: ...

    def protect(self, name: str, fn: Any = None, /, *, fallback: Any = MISSING) -> Any:
        """Decorate a function so every call goes through the breaker.

        Sync and async functions; on a generator or async generator function the whole
        iteration is the guarded call (an exception while iterating is a failure,
        exhaustion a success).
        """

        def decorate(function: F) -> F:
            # Entries are never replaced once added, so the wrapper binds its entry on the
            # first call (the dependency may be declared after the function is decorated).
            bound: list[Entry] = []

            def entry_of() -> Entry:
                if not bound:
                    bound.append(self._entry(name))
                return bound[0]

            if name in self._entries:
                entry_of()

            if inspect.isasyncgenfunction(function):

                @functools.wraps(function)
                async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                    entry = bound[0] if bound else entry_of()
                    iteration = guarded_aiter(entry, PLAIN, function, args, kwargs, fallback)
                    # What ``yield from`` does for generators: values sent and exceptions
                    # thrown in reach the guarded iteration (and the function's own code).
                    async with contextlib.aclosing(iteration):
                        try:
                            item = await iteration.__anext__()
                            while True:
                                try:
                                    sent = yield item
                                except GeneratorExit:
                                    raise  # aclosing closes the iteration
                                except BaseException as exc:
                                    item = await iteration.athrow(exc)
                                else:
                                    item = await iteration.asend(sent)
                        except StopAsyncIteration:
                            return

                return async_gen_wrapper  # type: ignore[return-value]

            if inspect.isgeneratorfunction(function):

                @functools.wraps(function)
                def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                    entry = bound[0] if bound else entry_of()
                    return (yield from guarded_iter(entry, PLAIN, function, args, kwargs, fallback))

                return gen_wrapper  # type: ignore[return-value]

            known = bound[0] if bound else None
            if inspect.iscoroutinefunction(function):
                async_wrapper = aprotected(known, entry_of, function, fallback)
                return functools.wraps(function)(async_wrapper)  # type: ignore[return-value]

            return functools.wraps(function)(protected(known, entry_of, function, fallback))  # type: ignore[return-value]

        if fn is not None:
            return decorate(fn)
        return decorate

    def guard(self, name: str) -> Guard:
        """A context manager (``with`` and ``async with``) guarding one block of code.

        Inside another guarded call of the same dependency, the block joins that call.
        """
        return Guard(self._entry(name))

    # -- health ----------------------------------------------------------------------

    def health(self) -> HealthReport:
        """The service's health now, from in-memory state only: never waits."""
        return health_report(self)

    # -- retry budgets (DESIGN.md 11) --------------------------------------------------

    def _retry_gate(self, name: str) -> RetryGate:
        entry = self._entry(name)
        policy = entry.dependency.retry_budget or _DEFAULT_RETRY_BUDGET
        gate = self._retry_gates.get(name)
        if gate is not None and gate.policy == policy:
            return gate
        with self._lock:
            gate = self._retry_gates.get(name)
            if gate is None or gate.policy != policy:
                fresh = RetryGate(entry.breaker, policy, clock=self.clock)
                if gate is not None:  # a reloaded policy keeps the counts
                    fresh.allowed, fresh.denied = gate.allowed, gate.denied
                gate = self._retry_gates[name] = fresh
        return gate

    def retry_allowed(self, name: str) -> bool:
        """Spend one retry of dependency ``name``: False while its breaker is not CLOSED or
        its retry budget (``retry_budget``; by default 20% of calls plus 10 a second) is
        spent. Counted in ``resilience.dependency.retries``."""
        return self._retry_gate(name).retry_allowed()

    def retry_on(
        self, name: str, *exception_types: type[BaseException]
    ) -> Callable[[BaseException], bool]:
        """A predicate ``exc -> bool`` for stamina (``stamina.retry(on=...)``) and tenacity
        (``retry=retry_if_exception(...)``): True only for ``exception_types`` and only
        while ``retry_allowed(name)``; never for a call the guard rejected."""
        self._entry(name)  # an unknown name fails here, not at the first retry
        return retry_predicate(lambda: self._retry_gate(name), exception_types)

    def retry_counts(self) -> dict[tuple[str, str], int]:
        """Retries asked for, by (dependency, outcome: allowed, denied); every dependency
        is listed (at 0 before its first)."""
        gates = dict(self._retry_gates)
        counts: dict[tuple[str, str], int] = {}
        for name in self._entries:
            gate = gates.get(name)
            counts[(name, "allowed")] = gate.allowed if gate is not None else 0
            counts[(name, "denied")] = gate.denied if gate is not None else 0
        return counts

    # -- concurrency limits and chaos drills: the guarded-call path's hooks ----------------

    def _equip(self, entry: Entry) -> None:
        """Give ``entry`` the concurrency limit of its dependency and the chaos drill of the
        chaos settings (or take them away). A limiter whose policy is unchanged is kept, with
        its calls in flight and its learnt limit; a replaced one keeps its rejection count.
        Calls admitted by a replaced limiter still give their permit back to it."""
        name = entry.name
        limits = entry.dependency.limits
        current = self._limiters.get(name)
        if limits is None:
            self._limiters.pop(name, None)
            entry.admission = None
        elif current is None or current.policy != limits:
            limiter = ConcurrencyLimiter(limits)
            if current is not None:
                limiter.rejected = current.rejected
            self._limiters[name] = limiter
            entry.admission = limiter
        else:
            entry.admission = current
        spec = self.chaos_settings.spec_for(name)
        entry.chaos = self._injector(name, spec) if spec is not None else None

    def _injector(self, name: str, spec: FaultSpec) -> FaultInjector:
        def on_fault(kind: str) -> None:
            self._count_chaos(name, kind)
            mark_current_span(kind)

        return FaultInjector(spec, on_fault=on_fault)

    def limiters(self) -> dict[str, ConcurrencyLimiter]:
        """The concurrency limiter of each dependency that has ``limits``."""
        return dict(self._limiters)

    def _count_chaos(self, name: str, fault: str) -> None:
        key = (name, fault)
        with self._lock:
            self._chaos_counts[key] = self._chaos_counts.get(key, 0) + 1

    def chaos_counts(self) -> dict[tuple[str, str], int]:
        """Faults injected, by (dependency, fault: error, latency); dependencies named in
        the ``chaos:`` block are listed from the start (at 0)."""
        with self._lock:
            counts = dict(self._chaos_counts)
        for name in self.chaos_settings.dependencies:
            for fault in ("error", "latency"):
                counts.setdefault((name, fault), 0)
        return counts

    @contextlib.contextmanager
    def chaos(
        self,
        name: str,
        *,
        error_rate: float = 0.0,
        latency_seconds: float = 0.0,
        latency_rate: float = 1.0,
    ) -> Iterator[None]:
        """Inject faults into dependency ``name``'s calls for the duration of the block: a
        share ``error_rate`` fails with the client's connection error before any I/O, a
        share ``latency_rate`` waits ``latency_seconds`` first. For tests: it needs no
        ``OTEL_RESILIENCE_CHAOS``; what was configured before is restored afterwards."""
        entry = self._entry(name)
        spec = FaultSpec(
            error_rate=error_rate, latency_seconds=latency_seconds, latency_rate=latency_rate
        )
        before = entry.chaos
        entry.chaos = self._injector(name, spec)
        try:
            yield
        finally:
            entry.chaos = before


def _keep_fallback_state(old: Dependency, new: Dependency) -> Dependency:
    """Keep the live in-process cache when the reloaded fallback is the same kind of cache,
    so a reload during an outage does not empty what the fallback is serving."""
    from ._memory_cache import MemoryCache

    before, after = old.fallback, new.fallback
    if (
        isinstance(before, MemoryCache)
        and type(after) is type(before)
        and _cache_settings(before) == _cache_settings(after)
    ):
        return dataclasses.replace(new, fallback=before)
    if isinstance(before, MemoryCache) and isinstance(after, MemoryCache):
        after.reach_redis_as(before)  # a new cache replays through the same Redis
    return new


def _cache_settings(cache: Any) -> tuple[Any, ...]:
    return tuple(
        getattr(cache, name, None)
        for name in (
            "max_entries",
            "default_ttl_seconds",
            "max_bytes",
            "replay_writes",
            "max_replay_writes",
        )
    )


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str] | None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Registry:
    """A Registry from a path, a dict, or None (then ``$OTEL_RESILIENCE_CONFIG``, else defaults)."""
    return _registry_of(parse_config(config), clock)


def _registry_of(loaded: LoadedConfig, clock: Callable[[], float]) -> Registry:
    registry = Registry(
        loaded.dependencies,
        clock=clock,
        service=loaded.service,
        telemetry=loaded.telemetry,
        source=loaded.source,
        chaos=loaded.chaos,
    )
    registry.admin_token_env = loaded.admin_token_env
    return registry
