"""Guards for redis-py: sync and asyncio clients and pipelines.

Imported only when redis-py is installed (``instrumentation.install``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from .._errors import CircuitOpenError
from .._memory_cache import MemoryCache, UnsupportedCommand, redis_operation
from ._common import Call, Patcher

__all__ = ["RedisCircuitOpenError", "install_redis"]

# What an asyncio pool's connection settings and a sync pool's have in common (for replay).
_SYNC_KWARGS = frozenset(
    {"host", "port", "path", "db", "username", "password", "socket_timeout"}
    | {"socket_connect_timeout", "client_name"}
)


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


def install_redis(patcher: Patcher) -> None:
    """Wrap ``execute_command`` and pipeline ``execute`` of the sync and asyncio clients."""
    registry = patcher.registry
    # The answer is kept on the connection pool itself, tagged with this install, so the
    # hot path is one attribute read.
    cache_attribute = "_otel_resilience_dependency"

    def dependency_of(instance: Any) -> tuple[str | None, bool]:
        pool = getattr(instance, "connection_pool", None)
        if pool is None:
            return None, False
        cached = getattr(pool, cache_attribute, None)
        if cached is not None and cached[0] is patcher:
            return cached[1], cached[2]
        kwargs = getattr(pool, "connection_kwargs", {})
        decode = bool(kwargs.get("decode_responses", False))
        attributes: dict[str, Any] = {"db.system": "redis"}
        if "path" in kwargs:
            attributes["server.address"] = kwargs["path"]
        else:
            attributes["server.address"] = kwargs.get("host", "localhost")
            attributes["server.port"] = kwargs.get("port", 6379)
        name = registry.classify(attributes)
        with contextlib.suppress(AttributeError):  # a pool with __slots__: classify each time
            setattr(pool, cache_attribute, (patcher, name, decode))
        fallback = registry[name].fallback if name is not None and name in registry else None
        if isinstance(fallback, MemoryCache) and fallback.replay_writes:
            fallback.set_replay_client(lambda: replay_client(pool))
        return name, decode

    def replay_client(pool: Any) -> Callable[..., Any]:
        """``execute_command`` of a sync client for the Redis of ``pool`` whose own pool is
        tagged as no dependency, so replayed writes bypass the guard (and its fallback)."""
        if isinstance(pool, redis.ConnectionPool):
            replay_pool = redis.ConnectionPool(
                connection_class=pool.connection_class, **pool.connection_kwargs
            )
        else:  # an asyncio pool: the same server through a sync connection
            kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _SYNC_KWARGS}
            if "path" in kwargs:
                kwargs["connection_class"] = redis.UnixDomainSocketConnection
            replay_pool = redis.ConnectionPool(**kwargs)
        setattr(replay_pool, cache_attribute, (patcher, None, False))
        execute: Callable[..., Any] = redis.Redis(connection_pool=replay_pool).execute_command
        return execute

    def serve(
        call: Call, commands: list[tuple[Any, ...]], decode: bool, reason: str
    ) -> list[Any] | None:
        """Answer ``commands`` from the fallback (counted under ``reason``), or None."""
        entry = call.entry
        fallback = entry.fallback
        if fallback is None:
            return None
        try:
            if isinstance(fallback, MemoryCache):
                results = fallback.serve(commands, decode=decode, reason=reason)
            else:
                results = [fallback(*args) for args in commands]
        except UnsupportedCommand:
            return None
        registry._count_fallback(entry.name, reason, redis_operation(commands))
        return results

    def rejected(call: Call, commands: list[tuple[Any, ...]], decode: bool) -> list[Any]:
        """Serve ``commands`` from the fallback, or raise the open-circuit error."""
        served = serve(call, commands, decode, "open")
        if served is None:
            entry = call.entry
            raise RedisCircuitOpenError(entry.name, entry.breaker.retry_after())
        return served

    def failed_over(
        call: Call, exc: BaseException, commands: list[tuple[Any, ...]], decode: bool
    ) -> list[Any] | None:
        """After a failed call: fallback results, or None to re-raise."""
        reason = "timeout" if isinstance(exc, redis.exceptions.TimeoutError) else "error"
        return serve(call, commands, decode, reason)

    def observe(call: Call, commands: list[tuple[Any, ...]], results: list[Any]) -> None:
        fallback = call.entry.fallback
        if isinstance(fallback, MemoryCache):
            for args, result in zip(commands, results, strict=False):
                if not isinstance(result, Exception):
                    fallback.observe(args, result)

    def start(instance: Any) -> tuple[Call | None, bool]:
        name, decode = dependency_of(instance)
        if name is None:
            return None, decode
        return Call(patcher.entry(name), _is_failure), decode

    # -- sync ------------------------------------------------------------------------

    def execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        call, decode = start(instance)
        if call is None:
            return wrapped(*args, **kwargs)
        if not call.admit():
            return rejected(call, [tuple(args)], decode)[0]
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.raised(exc) and (served := failed_over(call, exc, [tuple(args)], decode)):
                return served[0]
            raise
        call.succeeded()
        fallback = call.entry.fallback
        if isinstance(fallback, MemoryCache):
            fallback.observe(args, result)
        return result

    def pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        call, decode = start(instance)
        if call is None:
            return wrapped(*args, **kwargs)
        commands = [tuple(cmd_args) for cmd_args, _ in instance.command_stack]
        if not call.admit():
            try:
                return rejected(call, commands, decode)
            finally:
                instance.reset()
        try:
            results = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.raised(exc) and (served := failed_over(call, exc, commands, decode)):
                return served
            raise
        call.succeeded()
        observe(call, commands, results)
        return results

    # -- asyncio ---------------------------------------------------------------------

    async def async_execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        call, decode = start(instance)
        if call is None:
            return await wrapped(*args, **kwargs)
        commands = [tuple(args)]
        if not call.admit():
            return rejected(call, commands, decode)[0]
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.raised(exc) and (served := failed_over(call, exc, commands, decode)):
                return served[0]
            raise
        call.succeeded()
        observe(call, commands, [result])
        return result

    async def async_pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        call, decode = start(instance)
        if call is None:
            return await wrapped(*args, **kwargs)
        commands = [tuple(cmd_args) for cmd_args, _ in instance.command_stack]
        if not call.admit():
            try:
                return rejected(call, commands, decode)
            finally:
                await instance.reset()
        try:
            results = await wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.raised(exc) and (served := failed_over(call, exc, commands, decode)):
                return served
            raise
        call.succeeded()
        observe(call, commands, results)
        return results

    patcher.wrap(redis.client.Redis, "execute_command", execute_command)
    patcher.wrap(redis.client.Pipeline, "execute", pipeline_execute)
    patcher.wrap(redis.asyncio.client.Redis, "execute_command", async_execute_command)
    patcher.wrap(redis.asyncio.client.Pipeline, "execute", async_pipeline_execute)
