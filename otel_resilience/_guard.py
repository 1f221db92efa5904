"""Guarded calls: check the breaker, run the call, record its outcome once, fall back.

``Registry.call``/``acall``/``protect``/``guard`` are thin layers over the functions here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

from ._breaker import CircuitBreaker, State
from ._dependency import Criticality, Dependency
from ._errors import CircuitOpenError

__all__ = ["MISSING", "Entry", "FallbackCounter", "Guard"]

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Sentinel: no per-call fallback given, so the dependency's own applies."""

# What an exception means for the breaker.
_FAILURE = 1
_SUCCESS = 2  # a business error: the dependency answered
_NEUTRAL = 3  # cancelled, or rejected by another breaker: no outcome, permit given back

_NEUTRAL_TYPES: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)

FallbackCounter = Callable[[str, str], None]
"""Called as ``fn(dependency_name, reason)`` each time a fallback is served."""


class Entry:
    """A dependency with its breaker and the flags the hot path needs, computed once."""

    __slots__ = (
        "breaker",
        "business_errors",
        "dependency",
        "fallback",
        "fast",
        "is_failure",
        "name",
        "on_fallback",
        "timed",
        "timeout",
    )

    def __init__(
        self, dependency: Dependency, breaker: CircuitBreaker, on_fallback: FallbackCounter
    ) -> None:
        self.name = dependency.name
        self.dependency = dependency
        self.breaker = breaker
        policy = dependency.policy
        self.timed = policy.slow_call_seconds is not None
        self.timeout = policy.call_timeout_seconds
        # No timing and no timeout: a call on a closed breaker can skip straight to it.
        self.fast = not self.timed and self.timeout is None
        self.fallback = (
            dependency.fallback if dependency.criticality is not Criticality.CRITICAL else None
        )
        self.business_errors = dependency.business_errors
        self.is_failure = dependency.is_failure
        self.on_fallback = on_fallback

    # -- outcome bookkeeping -------------------------------------------------------

    def classify(self, exc: BaseException) -> int:
        if isinstance(exc, _NEUTRAL_TYPES):
            return _NEUTRAL
        if self.business_errors and isinstance(exc, self.business_errors):
            return _SUCCESS
        if self.is_failure is not None:
            try:
                return _FAILURE if self.is_failure(exc) else _SUCCESS
            except Exception:
                return _FAILURE
        return _FAILURE

    def record_exception(self, exc: BaseException, duration: float) -> bool:
        """Record what ``exc`` means for the breaker; True when it counts as a failure."""
        kind = self.classify(exc)
        if kind == _FAILURE:
            self.breaker.record_failure(duration, type(exc).__name__)
            return True
        if kind == _SUCCESS:
            self.breaker.record_success(duration)
        else:
            self.breaker.release()
        return False

    def pick_fallback(self, fallback: Any) -> Callable[..., Any] | None:
        return self.fallback if fallback is MISSING else fallback

    def rejected(self, fallback: Any) -> Callable[..., Any]:
        """The fallback to serve for a rejected call, or raise ``CircuitOpenError``."""
        chosen = self.pick_fallback(fallback)
        if chosen is None:
            raise CircuitOpenError(self.name, self.breaker.retry_after())
        self.on_fallback(self.name, "open")
        return chosen

    # -- sync ------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], args: Any, kwargs: Any, fallback: Any) -> T:
        breaker = self.breaker
        if self.fast and breaker._state is _CLOSED:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                return self.failed(exc, 0.0, fallback, args, kwargs)  # type: ignore[no-any-return]
            breaker.record_success()
            return result
        if not breaker.allow():
            return self.rejected(fallback)(*args, **kwargs)  # type: ignore[no-any-return]
        if self.timeout is not None:
            return self._call_with_timeout(fn, args, kwargs, fallback)
        if not self.timed:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                return self.failed(exc, 0.0, fallback, args, kwargs)  # type: ignore[no-any-return]
            breaker.record_success()
            return result
        start = perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            return self.failed(exc, perf_counter() - start, fallback, args, kwargs)  # type: ignore[no-any-return]
        breaker.record_success(perf_counter() - start)
        return result

    def failed(
        self, exc: BaseException, duration: float, fallback: Any, args: Any, kwargs: Any
    ) -> Any:
        failed = self.record_exception(exc, duration)
        if failed:
            chosen = self.pick_fallback(fallback)
            if chosen is not None:
                self.on_fallback(self.name, "timeout" if isinstance(exc, TimeoutError) else "error")
                return chosen(*args, **kwargs)
        raise exc

    def _call_with_timeout(self, fn: Callable[..., T], args: Any, kwargs: Any, fallback: Any) -> T:
        # A thread cannot be interrupted: the call goes on in a worker thread, and the
        # caller stops waiting at the deadline (documented in the README).
        assert self.timeout is not None
        context = contextvars.copy_context()
        start = perf_counter()
        future = _executor().submit(context.run, fn, *args, **kwargs)
        try:
            result = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            error = TimeoutError(
                f"call to dependency {self.name!r} took longer than {self.timeout}s"
            )
            return self.failed(error, perf_counter() - start, fallback, args, kwargs)  # type: ignore[no-any-return]
        except BaseException as exc:
            return self.failed(exc, perf_counter() - start, fallback, args, kwargs)  # type: ignore[no-any-return]
        self.breaker.record_success(perf_counter() - start)
        return result

    # -- async -----------------------------------------------------------------------

    async def acall(
        self, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any, fallback: Any
    ) -> T:
        breaker = self.breaker
        if self.fast and breaker._state is _CLOSED:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                return await self._afailed(exc, 0.0, fallback, args, kwargs)  # type: ignore[no-any-return]
            breaker.record_success()
            return result
        if not breaker.allow():
            return await _maybe_await(self.rejected(fallback)(*args, **kwargs))  # type: ignore[no-any-return]
        start = perf_counter() if self.timed or self.timeout is not None else 0.0
        try:
            if self.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await asyncio.wait_for(fn(*args, **kwargs), self.timeout)
        except BaseException as raised:
            duration = perf_counter() - start if start else 0.0
            return await self._afailed(raised, duration, fallback, args, kwargs)  # type: ignore[no-any-return]
        breaker.record_success(perf_counter() - start if start else 0.0)
        return result

    async def _afailed(
        self, raised: BaseException, duration: float, fallback: Any, args: Any, kwargs: Any
    ) -> Any:
        exc = raised
        if isinstance(raised, asyncio.TimeoutError) and not isinstance(raised, TimeoutError):
            exc = TimeoutError(str(raised))  # Python 3.10: asyncio's own TimeoutError
        if self.record_exception(exc, duration):
            chosen = self.pick_fallback(fallback)
            if chosen is not None:
                self.on_fallback(self.name, "timeout" if isinstance(exc, TimeoutError) else "error")
                return await _maybe_await(chosen(*args, **kwargs))
        if exc is not raised:
            raise exc from raised
        raise raised


_CLOSED = State.CLOSED


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


class Guard:
    """``with registry.guard(name):`` / ``async with``: admit, time and record one block.

    A rejected block raises ``CircuitOpenError`` on entry. A guard has no value to replace,
    so it applies no fallback, and no call timeout (wrap the block in ``asyncio.timeout``).
    """

    __slots__ = ("_entry", "_start")

    def __init__(self, entry: Entry) -> None:
        self._entry = entry
        self._start = 0.0

    def __enter__(self) -> Guard:
        entry = self._entry
        if not entry.breaker.allow():
            raise CircuitOpenError(entry.name, entry.breaker.retry_after())
        self._start = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        duration = perf_counter() - self._start
        if exc is None:
            self._entry.breaker.record_success(duration)
        else:
            self._entry.record_exception(exc, duration)

    async def __aenter__(self) -> Guard:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


_executor_lock = threading.Lock()
_executors: list[concurrent.futures.ThreadPoolExecutor] = []


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The worker pool for sync calls with a timeout, created on first use."""
    if not _executors:
        with _executor_lock:
            if not _executors:
                _executors.append(
                    concurrent.futures.ThreadPoolExecutor(
                        max_workers=min(32, (os.cpu_count() or 1) + 4),
                        thread_name_prefix="otel-resilience-call",
                    )
                )
    return _executors[0]
