"""Guards for redis-py: sync and asyncio clients and pipelines.

Imported only when redis-py is installed (``instrumentation.install``). A declaration on
the guarded-call path of ``_guard.py``: the dependency of a client is looked up once per
connection pool; error replies are answers, not failures; the rejection error is also a
``redis.exceptions.ConnectionError``; an optional dependency's fallback (the ``memory``
cache, or a callable) answers per command.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from .._errors import CircuitOpenError
from .._guard import NOT_SERVED, Client, Entry, guarded_acall, guarded_call
from .._memory_cache import MemoryCache, UnsupportedCommand
from ._clientcall import guard_current_span
from ._common import Patcher

__all__ = ["RedisCircuitOpenError", "install_redis"]

# The dependency of a client is kept on its connection pool itself, tagged with the
# install that looked it up, so the hot path is one attribute read:
# (patcher, entry or None, decode_responses).
_CACHE_ATTRIBUTE = "_otel_resilience_dependency"


class RedisCircuitOpenError(CircuitOpenError, redis.exceptions.ConnectionError):
    """The Redis breaker is open: raised before any network I/O.

    Also a ``redis.exceptions.ConnectionError``, so ``except ConnectionError`` clauses
    written for redis-py keep working.
    """


def _is_failure(exc: BaseException) -> bool:
    # An error reply (WRONGTYPE, a script error...) means Redis answered.
    return not isinstance(exc, (redis.exceptions.ResponseError, redis.exceptions.DataError)) or (
        isinstance(exc, redis.exceptions.ConnectionError)
    )


def serve(entry: Entry, commands: list[tuple[Any, ...]], decode: bool, reason: str) -> Any:
    """Answer ``commands`` from the fallback (counted under ``reason``), or ``NOT_SERVED``."""
    fallback = entry.fallback
    if fallback is None:
        return NOT_SERVED
    try:
        if isinstance(fallback, MemoryCache):
            results = [fallback.execute(args, decode=decode) for args in commands]
        else:
            results = [fallback(*args) for args in commands]
    except UnsupportedCommand:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason)
    return results


def _serve_command(entry: Entry, reason: str, decode: bool, args: Any, kwargs: Any) -> Any:
    served = serve(entry, [tuple(args)], decode, reason)
    return served if served is NOT_SERVED else served[0]


def _serve_pipeline(
    entry: Entry, reason: str, subject: tuple[list[tuple[Any, ...]], bool], args: Any, kwargs: Any
) -> Any:
    commands, decode = subject
    return serve(entry, commands, decode, reason)


def _observe_command(entry: Entry, result: Any, decode: bool, args: Any) -> None:
    fallback = entry.fallback
    if isinstance(fallback, MemoryCache):
        fallback.observe(args, result)


def _observe_pipeline(
    entry: Entry, results: Any, subject: tuple[list[tuple[Any, ...]], bool], args: Any
) -> None:
    fallback = entry.fallback
    if isinstance(fallback, MemoryCache):
        for command, result in zip(subject[0], results, strict=False):
            if not isinstance(result, Exception):
                fallback.observe(command, result)


def _client(serve: Any, observe: Any) -> Client:
    return Client(
        "redis",
        open_error=RedisCircuitOpenError,
        fault=redis.exceptions.ConnectionError,
        is_failure=_is_failure,
        serve=serve,
        observe=observe,
        timeout_errors=(redis.exceptions.TimeoutError,),
    )


COMMAND = _client(_serve_command, _observe_command)
"""``execute_command``: the subject is the pool's ``decode_responses``."""

PIPELINE = _client(_serve_pipeline, _observe_pipeline)
"""Pipeline ``execute``: the subject is ``(queued commands, decode_responses)``."""


def install_redis(patcher: Patcher) -> None:
    """Wrap ``execute_command`` and pipeline ``execute`` of the sync and asyncio clients."""
    registry = patcher.registry

    def lookup(pool: Any) -> tuple[Patcher, Entry | None, bool]:
        """Classify the pool's address once; the answer is kept on the pool."""
        kwargs = getattr(pool, "connection_kwargs", {})
        decode = bool(kwargs.get("decode_responses", False))
        attributes: dict[str, Any] = {"db.system": "redis"}
        if "path" in kwargs:
            attributes["server.address"] = kwargs["path"]
        else:
            attributes["server.address"] = kwargs.get("host", "localhost")
            attributes["server.port"] = kwargs.get("port", 6379)
        name = registry.classify(attributes)
        cached = (patcher, None if name is None else patcher.entry(name), decode)
        if pool is not None:
            with contextlib.suppress(AttributeError):  # a pool with __slots__: each time
                setattr(pool, _CACHE_ATTRIBUTE, cached)
        return cached

    def dependency_of(instance: Any) -> tuple[Patcher, Entry | None, bool]:
        pool = getattr(instance, "connection_pool", None)
        cached = getattr(pool, _CACHE_ATTRIBUTE, None)
        if cached is None or cached[0] is not patcher:
            return lookup(pool)
        return cached  # type: ignore[no-any-return]

    def queued(instance: Any) -> list[tuple[Any, ...]]:
        return [tuple(cmd_args) for cmd_args, _ in instance.command_stack]

    # -- sync ------------------------------------------------------------------------

    def execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        guard_current_span(entry.name)
        return guarded_call(entry, COMMAND, wrapped, args, kwargs, decode)

    def pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        try:
            guard_current_span(entry.name)
            return guarded_call(entry, PIPELINE, wrapped, args, kwargs, (queued(instance), decode))
        finally:
            if instance.command_stack:  # not executed (rejected): reset as execute would
                instance.reset()

    # -- asyncio ---------------------------------------------------------------------

    async def async_execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        guard_current_span(entry.name)
        return await guarded_acall(entry, COMMAND, wrapped, args, kwargs, decode)

    async def async_pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        try:
            guard_current_span(entry.name)
            return await guarded_acall(
                entry, PIPELINE, wrapped, args, kwargs, (queued(instance), decode)
            )
        finally:
            if instance.command_stack:
                await instance.reset()

    patcher.wrap(redis.client.Redis, "execute_command", execute_command)
    patcher.wrap(redis.client.Pipeline, "execute", pipeline_execute)
    patcher.wrap(redis.asyncio.client.Redis, "execute_command", async_execute_command)
    patcher.wrap(redis.asyncio.client.Pipeline, "execute", async_pipeline_execute)
