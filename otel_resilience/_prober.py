"""The background prober: active health checks that notice recovery without user traffic.

A scheduler runs in its own daemon thread with its own event loop, so the application's
loop and the health endpoint never wait on a check. Every tick it reads each breaker's
state (an OPEN breaker whose time is up becomes HALF_OPEN eagerly) and starts the health
checks that are due. Each dependency's check runs in a slot of its own, a daemon thread
that runs one check at a time: a check that hangs (a sync call that never returns) is
reported as timed out at its timeout, is not started again while it is still stuck, never
delays another dependency's check, and never keeps the process from exiting.

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

from ._addresses import Address
from ._breaker import CircuitBreaker, State
from ._context import GUARDED, PROBING
from ._dependency import Dependency
from ._errors import ConfigError
from ._fork import after_fork_in_child
from ._health import health_monitor
from ._health_checks import (
    CheckResult,
    HealthCheckSpec,
    import_clients,
    parse_health_check,
    run_check_blocking,
)

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["HealthProber"]

_log = logging.getLogger(__name__)

# How long past a check's own timeout the scheduler waits for its slot before it reports
# the check as timed out itself (the check normally reports its own timeout first).
_GRACE_SECONDS = 0.1


class _Slot:
    """One dependency's bounded slot: one check at a time, on a daemon thread of its own."""

    __slots__ = ("started_at", "thread")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def busy(self) -> bool:
        """Whether the last check started here has not returned yet."""
        thread = self.thread
        return thread is not None and thread.is_alive()

    def start(
        self,
        name: str,
        run: Callable[[], CheckResult],
        deliver: Callable[[CheckResult], None],
        now: float,
    ) -> None:
        """Run ``run()`` on a new daemon thread and hand its result to ``deliver``."""

        def target() -> None:
            # A new thread starts with an empty context: mark the check's own calls here.
            PROBING.set(True)
            GUARDED.set(name)
            try:
                result = run()
            except BaseException as exc:  # a bug in the check runner: still a result
                result = CheckResult(False, now, 0.0, type(exc).__name__, type(exc).__name__)
            deliver(result)

        self.started_at = now
        self.thread = threading.Thread(
            target=target, name=f"otel-resilience-check-{name}", daemon=True
        )
        self.thread.start()


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
        self._wanted = False  # started and not stopped: a forked child starts it again
        self._specs: dict[str, tuple[Dependency, HealthCheckSpec | None]] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slots: dict[str, _Slot] = {}
        self._next_due: dict[str, float] = {}
        self._started: dict[str, float] = {}  # registry clock: when each check last started
        after_fork_in_child(self._after_fork_in_child)

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
            self._wanted = True
            if self.running:
                return
            # Before any check thread exists: a fork must never catch one mid-import.
            import_clients(self._spec(dependency) for dependency in self.registry.dependencies)
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
            self._wanted = False
            self._stopping = True
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(wake.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork_in_child(self) -> None:
        """In a forked child: fresh lock and state, and probing again if the parent was."""
        self._lock = threading.Lock()
        self._thread = None
        self._loop = None
        self._wake = None
        self._in_flight = {}
        self._slots = {}
        self._next_due = {}
        self._started = {}
        if self._wanted:
            self.start()

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
            _log.exception("health prober stopped by an error")
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
        # An opening breaker wakes the scheduler, to be there when it half-opens.
        remove_listener = self.registry.add_transition_listener(self._on_transition)
        try:
            while not stopping:
                try:
                    pause = self._tick()
                except Exception:
                    _log.exception("health prober tick failed")
                    pause = self.interval_seconds
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)
                wake.clear()
                with self._lock:
                    stopping = self._stopping
        finally:
            remove_listener()
            tasks = [task for task in self._in_flight.values() if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            self._in_flight.clear()

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        """Any thread: wake the scheduler when a breaker opens (a cheap, rare event)."""
        if new is not State.OPEN:
            return
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

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
            _log.error("health check not run: %s", exc)
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
            if state is State.OPEN:
                # Wake when it half-opens: the prober, not a user's call, makes the trial.
                pause = min(pause, max(breaker.retry_after(), 0.01))
            task = self._in_flight.get(name)
            if task is not None and not task.done():
                continue  # one probe in flight per dependency, never a pile
            due = self._next_due.get(name, now)
            if state is State.HALF_OPEN and self._untried(name, breaker):
                due = now  # half-opened since the last run: the trial is due now
            if now < due:
                pause = min(pause, due - now)
                continue
            self._next_due[name] = now + interval
            pause = min(pause, interval)
            slot = self._slots.setdefault(name, _Slot())
            if slot.busy:
                # Its last run timed out and is still stuck: say so again, start nothing.
                self._monitor.record_check(name, _stuck(spec, slot, self.registry.clock()))
                continue
            self._started[name] = self.registry.clock()
            self._in_flight[name] = asyncio.get_running_loop().create_task(
                self._probe(name, breaker, spec, state, slot)
            )
        return max(pause, 0.01)

    def _untried(self, name: str, breaker: CircuitBreaker) -> bool:
        """Whether no check of ``name`` started since its breaker last opened."""
        opened_at = breaker.snapshot().opened_at
        started = self._started.get(name)
        return opened_at is not None and (started is None or started < opened_at)

    async def _probe(
        self, name: str, breaker: CircuitBreaker, spec: HealthCheckSpec, state: State, slot: _Slot
    ) -> None:
        permit = state is State.HALF_OPEN and breaker.allow()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CheckResult] = loop.create_future()

        def settle(result: CheckResult) -> None:
            if not future.done():
                future.set_result(result)

        def deliver(result: CheckResult) -> None:
            with contextlib.suppress(RuntimeError):  # the prober stopped: nobody waits
                loop.call_soon_threadsafe(settle, result)

        clock = self.registry.clock
        address: Address | None = self._monitor.addresses.get(name)
        try:
            # The check's own client calls bypass the guards (the breaker may be open, or
            # its one half-open permit may be this probe's) and are not counted from their
            # spans: the slot marks its thread PROBING and GUARDED.
            slot.start(
                name,
                lambda: run_check_blocking(spec, clock=clock, address=address),
                deliver,
                clock(),
            )
            try:
                result = await asyncio.wait_for(
                    asyncio.shield(future), spec.timeout_seconds + _GRACE_SECONDS
                )
            except asyncio.TimeoutError:
                ended = clock()
                result = CheckResult(
                    False,
                    ended,
                    ended - slot.started_at,
                    f"timed out after {spec.timeout_seconds:g}s",
                    "TimeoutError",
                )
        except BaseException:
            if permit:
                breaker.release()
            raise
        self._monitor.record_check(name, result)
        if result.unknown:
            if permit:
                breaker.release()  # no address yet: the check says nothing either way
        elif permit:
            if result.passing:
                breaker.record_success()
            else:
                breaker.record_failure(error_type=result.error_type)
        elif result.passing and state is State.OPEN:
            breaker.half_open()
            if breaker.state is State.HALF_OPEN and breaker.allow():
                # The passing probe is the trial call: recovery needs no user traffic.
                breaker.record_success()


def _stuck(spec: HealthCheckSpec, slot: _Slot, now: float) -> CheckResult:
    """The result reported while a check's previous run is still stuck in its slot."""
    return CheckResult(
        False,
        now,
        now - slot.started_at,
        f"timed out after {spec.timeout_seconds:g}s; still stuck after "
        f"{now - slot.started_at:.0f}s, not started again",
        "TimeoutError",
    )
