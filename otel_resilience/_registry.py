"""The registry: the service's dependencies, their breakers, and guarded calls."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

from ._breaker import CircuitBreaker, Listener
from ._dependency import Dependency
from ._errors import UnknownDependencyError
from ._guard import (
    MISSING,
    PLAIN,
    Entry,
    Guard,
    guarded_acall,
    guarded_aiter,
    guarded_call,
    guarded_iter,
)
from ._health import HealthReport, health_report
from ._semconv import Classifier

__all__ = ["Registry", "TelemetrySettings"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class TelemetrySettings:
    """The ``telemetry:`` section of a config: how telemetry export protects itself."""

    __slots__ = ("export_timeout_seconds",)

    def __init__(self, export_timeout_seconds: float = 1.0) -> None:
        self.export_timeout_seconds = export_timeout_seconds

    def __repr__(self) -> str:
        return f"TelemetrySettings(export_timeout_seconds={self.export_timeout_seconds!r})"


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
    ) -> None:
        self.clock = clock
        self.service = service or os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"
        self.telemetry = telemetry if telemetry is not None else TelemetrySettings()
        self.source = source
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._classifier = Classifier(())
        self._fallback_counts: dict[tuple[str, str, str], int] = {}
        self._transition_listeners: list[Listener] = []
        self._add_all(dependencies)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Registry:
        """Build a registry from a config file path (YAML or TOML) or a dict (DESIGN.md 7)."""
        from ._config import load_config

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
                entries[dependency.name] = Entry(dependency, breaker, self._count_fallback)
            self._entries = entries
            # A new classifier (and cache) for the new set: readers never see a mix.
            self._classifier = Classifier(
                tuple(
                    (name, tuple(entry.dependency.match.items()))
                    for name, entry in entries.items()
                    if entry.dependency.match
                )
            )

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
                    iteration = guarded_aiter(entry, function, args, kwargs, fallback)
                    async with contextlib.aclosing(iteration):
                        async for item in iteration:
                            yield item

                return async_gen_wrapper  # type: ignore[return-value]

            if inspect.isgeneratorfunction(function):

                @functools.wraps(function)
                def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                    entry = bound[0] if bound else entry_of()
                    return (yield from guarded_iter(entry, function, args, kwargs, fallback))

                return gen_wrapper  # type: ignore[return-value]

            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    entry = bound[0] if bound else entry_of()
                    return await guarded_acall(entry, PLAIN, function, args, kwargs, fallback)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                entry = bound[0] if bound else entry_of()
                return guarded_call(entry, PLAIN, function, args, kwargs, fallback)

            return wrapper  # type: ignore[return-value]

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
        """The service's health now (DESIGN.md 8), from in-memory state only: never waits."""
        return health_report(self)
