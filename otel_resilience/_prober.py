"""The background prober: active health checks that notice recovery without user traffic.

It runs in its own daemon thread with its own event loop, so a hung check never touches the
application's loop and the health endpoint never waits on it. Every tick it reads each
breaker's state (an OPEN breaker whose time is up becomes HALF_OPEN eagerly) and starts the
health checks that are due, at most one in flight per dependency:

- OPEN: a passing check moves the breaker to HALF_OPEN at once and, taking the half-open
  permit, counts as the trial call, so the breaker closes with no user traffic.
- HALF_OPEN: the check runs as a trial call when a permit is free (success closes, failure
  re-opens with the open time doubled).
- CLOSED (and the others): the result only marks the dependency healthy or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from ._breaker import CircuitBreaker, State
from ._context import GUARDED, PROBING
from ._dependency import Dependency
from ._errors import ConfigError
from ._health import health_monitor
from ._health_checks import HealthCheckSpec, parse_health_check, run_check

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["HealthProber"]

_log = logging.getLogger("otel_resilience")


class HealthProber:
    """Runs each dependency's health check in the background (see the module docstring).

    ``interval_seconds`` is how often a check runs when its config gives no
    ``interval_seconds`` of its own. ``start()``/``stop()`` (or ``with``) from sync code,
    ``await astart()``/``await astop()`` (or ``async with``) from a lifespan.
    """

    def __init__(
        self,
        registry: Registry,
        interval_seconds: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(interval_seconds, bool)
            or not isinstance(interval_seconds, (int, float))
            or not 0 < interval_seconds < float("inf")
        ):
            raise ValueError(
                f"interval_seconds must be a finite number of seconds > 0, got {interval_seconds!r}"
            )
        self.registry = registry
        self.interval_seconds = float(interval_seconds)
        self._clock = clock
        self._monitor = health_monitor(registry)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._specs: dict[str, tuple[Dependency, HealthCheckSpec | None]] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._next_due: dict[str, float] = {}

    def __repr__(self) -> str:
        running = "running" if self.running else "stopped"
        return f"<HealthProber {running} every {self.interval_seconds:g}s>"

    @property
    def running(self) -> bool:
        """Whether the prober's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start probing in a daemon thread; a second call while running does nothing."""
        with self._lock:
            if self.running:
                return
            self._stopping = False
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(ready,), name="otel-resilience-prober", daemon=True
            )
            self._thread = thread
            thread.start()
        ready.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing: cancel checks in flight and wait (at most ``timeout``) for the thread."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(wake.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    async def astart(self) -> None:
        """``start()`` for async code (an ASGI lifespan)."""
        self.start()

    async def astop(self, timeout: float = 5.0) -> None:
        """``stop()`` for async code: the wait for the thread does not block the event loop."""
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> HealthProber:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> HealthProber:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- the probing thread ----------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready))
        except Exception:  # pragma: no cover - a bug; the application must not notice
            _log.exception("otel_resilience: health prober stopped by an error")
        finally:
            with self._lock:
                self._loop = None
                self._wake = None
            ready.set()
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        wake = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake = wake
            stopping = self._stopping
        ready.set()
        try:
            while not stopping:
                try:
                    pause = self._tick()
                except Exception:
                    _log.exception("otel_resilience: health prober tick failed")
                    pause = self.interval_seconds
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)
                with self._lock:
                    stopping = self._stopping
        finally:
            tasks = [task for task in self._in_flight.values() if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            self._in_flight.clear()

    def _spec(self, dependency: Dependency) -> HealthCheckSpec | None:
        cached = self._specs.get(dependency.name)
        if cached is not None and cached[0] is dependency:
            return cached[1]
        spec: HealthCheckSpec | None
        try:
            spec = parse_health_check(
                dependency.health_check,
                match=dependency.match,
                path=f"dependencies.{dependency.name}.health_check",
            )
        except ConfigError as exc:
            _log.error("otel_resilience: health check not run: %s", exc)
            spec = None
        self._specs[dependency.name] = (dependency, spec)
        return spec

    def _tick(self) -> float:
        """Start the checks that are due; return how long to wait before the next tick."""
        self._monitor.sync()
        now = self._clock()
        pause = self.interval_seconds
        for dependency in self.registry.dependencies:
            name = dependency.name
            breaker = self.registry.breaker(name)
            state = breaker.state  # an OPEN breaker whose time is up moves to HALF_OPEN here
            spec = self._spec(dependency)
            if spec is None:
                if state is State.OPEN:
                    pause = min(pause, max(breaker.retry_after(), 0.01))
                continue
            interval = spec.interval_seconds or self.interval_seconds
            task = self._in_flight.get(name)
            if task is not None and not task.done():
                continue  # one probe in flight per dependency, never a pile
            due = self._next_due.get(name, now)
            if now < due:
                pause = min(pause, due - now)
                continue
            self._next_due[name] = now + interval
            pause = min(pause, interval)
            self._in_flight[name] = asyncio.get_running_loop().create_task(
                self._probe(name, breaker, spec, state)
            )
        return max(pause, 0.01)

    async def _probe(
        self, name: str, breaker: CircuitBreaker, spec: HealthCheckSpec, state: State
    ) -> None:
        permit = state is State.HALF_OPEN and breaker.allow()
        # The check's own client calls bypass the guards (the breaker may be open, or its
        # one half-open permit may be this probe's) and are not counted from their spans.
        probing, guarded = PROBING.set(True), GUARDED.set(name)
        try:
            result = await run_check(spec, clock=self.registry.clock)
        except BaseException:
            if permit:
                breaker.release()
            raise
        finally:
            GUARDED.reset(guarded)
            PROBING.reset(probing)
        self._monitor.record_check(name, result)
        if permit:
            if result.passing:
                breaker.record_success()
            else:
                breaker.record_failure(error_type=result.error_type)
        elif result.passing and state is State.OPEN:
            breaker.half_open()
            if breaker.state is State.HALF_OPEN and breaker.allow():
                # The passing probe is the trial call: recovery needs no user traffic.
                breaker.record_success()
