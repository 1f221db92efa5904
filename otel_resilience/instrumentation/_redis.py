"""Guards for redis-py: sync and asyncio clients and pipelines.

Imported only when redis-py is installed (``instrumentation.install``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from .._addresses import Address
from .._errors import CircuitOpenError
from .._health import learn_address
from .._memory_cache import MemoryCache, UnsupportedCommand
from ._common import Call, Patcher

__all__ = ["RedisCircuitOpenError", "install_redis"]


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


def _pool_address(pool: Any, kwargs: dict[str, Any]) -> Address | None:
    """Where a redis-py connection pool connects, with its credentials."""
    if "path" in kwargs:
        return Address(str(kwargs["path"]), scheme="unix", password=kwargs.get("password"))
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    if not isinstance(host, str) or not str(port).isdigit():
        return None
    tls = "SSL" in getattr(getattr(pool, "connection_class", None), "__name__", "")
    return Address(
        host,
        int(port),
        user=kwargs.get("username"),
        scheme="rediss" if tls else None,
        password=kwargs.get("password"),
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
        if name is not None:  # once per pool: where the health check finds this Redis
            learn_address(registry, name, _pool_address(pool, kwargs))
        with contextlib.suppress(AttributeError):  # a pool with __slots__: classify each time
            setattr(pool, cache_attribute, (patcher, name, decode))
        return name, decode

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
                results = [fallback.execute(args, decode=decode) for args in commands]
            else:
                results = [fallback(*args) for args in commands]
        except UnsupportedCommand:
            return None
        entry.on_fallback(entry.name, reason)
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
