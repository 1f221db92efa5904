"""Guards for redis-py: sync and asyncio clients and pipelines.

Imported only when redis-py is installed (``instrumentation.install``). A declaration on
the guarded-call path of ``_guard.py``: the dependency of a client is looked up once per
connection pool; error replies are answers, not failures; the rejection error is also a
``redis.exceptions.ConnectionError``; an optional dependency's fallback (the ``memory``
cache, or a callable) answers per command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from .._addresses import Address
from .._errors import CircuitOpenError
from .._guard import (
    DEPENDENCY_ATTRIBUTE,
    NOT_SERVED,
    Client,
    Entry,
    KeptDependency,
    guarded_acall,
    guarded_call,
)
from .._health import learn_address
from .._memory_cache import MemoryCache, UnsupportedCommand, redis_operation
from ._common import Patcher

__all__ = ["RedisCircuitOpenError", "install_redis", "pool_attributes"]

# The dependency of a client is kept on its connection pool itself, tagged with the
# install that looked it up, so the hot path is one attribute read:
# (patcher, entry or None, decode_responses).
_CACHE_ATTRIBUTE = DEPENDENCY_ATTRIBUTE


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
            results = fallback.serve(commands, decode=decode, reason=reason)
        else:
            results = [fallback(*args) for args in commands]
    except UnsupportedCommand:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason, redis_operation(commands))  # type: ignore[call-arg]
    return results


def _serve_command(entry: Entry, reason: str, decode: bool, args: Any, kwargs: Any) -> Any:
    served = serve(entry, [tuple(args)], decode, reason)
    return served if served is NOT_SERVED else served[0]


def _serve_pipeline(
    entry: Entry, reason: str, subject: tuple[list[tuple[Any, ...]], bool], args: Any, kwargs: Any
) -> Any:
    commands, decode = subject
    return serve(entry, commands, decode, reason)


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
        marks_span=True,
        leaf=True,  # no guarded call inside a command: a success may be left to its span
        open_error=RedisCircuitOpenError,
        fault=redis.exceptions.ConnectionError,
        is_failure=_is_failure,
        serve=serve,
        observe=observe,
        observes_fallback=observe is None,
        timeout_errors=(redis.exceptions.TimeoutError,),
    )


COMMAND = _client(_serve_command, None)
"""``execute_command``: the subject is the pool's ``decode_responses``; a memory cache
fallback sees each command that worked (``MemoryCache.observe``)."""

_COMMAND_KEPT = KeptDependency(COMMAND, "connection_pool")
"""The sync ``execute_command``'s dependency is kept on the client's pool: its layer takes
the success path of a closed breaker itself (``_guard.guarded_method``)."""

PIPELINE = _client(_serve_pipeline, _observe_pipeline)
"""Pipeline ``execute``: the subject is ``(queued commands, decode_responses)``."""


# What an asyncio pool's connection settings and a sync pool's have in common (for replay).
_SYNC_KWARGS = frozenset(
    {"host", "port", "path", "db", "username", "password", "socket_timeout"}
    | {"socket_connect_timeout", "client_name"}
)


def _replay_client(patcher: Patcher, pool: Any) -> Callable[..., Any]:
    """``execute_command`` of a sync client for the Redis of ``pool``, whose own pool is
    tagged as no dependency: replayed writes go around the guard (and its fallback)."""
    if isinstance(pool, redis.ConnectionPool):
        replay_pool = redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        )
    else:  # an asyncio pool: the same server through a sync connection
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _SYNC_KWARGS}
        if "path" in kwargs:
            kwargs["connection_class"] = redis.UnixDomainSocketConnection
        replay_pool = redis.ConnectionPool(**kwargs)
    setattr(replay_pool, _CACHE_ATTRIBUTE, (patcher, None, False))
    execute: Callable[..., Any] = redis.Redis(connection_pool=replay_pool).execute_command
    return execute


def pool_attributes(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The attributes a command's dependency is classified by, from its pool's
    ``connection_kwargs``: those the redis instrumentation's span of the command carries,
    with the same values (``_scopes.EXACT_CLIENT_KEYS``)."""
    attributes: dict[str, Any] = {"db.system": "redis"}
    if "path" in kwargs:
        attributes["server.address"] = kwargs["path"]
    else:
        attributes["server.address"] = kwargs.get("host", "localhost")
        attributes["server.port"] = kwargs.get("port", 6379)
    return attributes


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

    def lookup(pool: Any) -> tuple[Patcher, Entry | None, bool]:
        """Classify the pool's address once; the answer is kept on the pool."""
        kwargs = getattr(pool, "connection_kwargs", {})
        decode = bool(kwargs.get("decode_responses", False))
        name = registry.classify(pool_attributes(kwargs))
        if name is not None:  # once per pool: where the health check finds this Redis
            learn_address(registry, name, _pool_address(pool, kwargs))
        cached = (patcher, None if name is None else patcher.entry(name), decode)
        if pool is not None:
            with contextlib.suppress(AttributeError):  # a pool with __slots__: each time
                setattr(pool, _CACHE_ATTRIBUTE, cached)
            entry = cached[1]
            if entry is not None and isinstance(entry.fallback, MemoryCache):
                entry.fallback.set_replay_client(lambda: _replay_client(patcher, pool))
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
        # What the layer does not take itself (_COMMAND_KEPT): a pool's first command, a
        # joined call, a breaker that is not closed, an entry with hooks.
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, COMMAND, wrapped, args, kwargs, decode)

    def pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        try:
            return guarded_call(entry, PIPELINE, wrapped, args, kwargs, (queued(instance), decode))
        finally:
            if instance.command_stack:  # not executed (rejected): reset as execute would
                instance.reset()

    # -- asyncio ---------------------------------------------------------------------

    async def async_execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        return await guarded_acall(entry, COMMAND, wrapped, args, kwargs, decode)

    async def async_pipeline_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _, entry, decode = dependency_of(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        try:
            return await guarded_acall(
                entry, PIPELINE, wrapped, args, kwargs, (queued(instance), decode)
            )
        finally:
            if instance.command_stack:
                await instance.reset()

    patcher.wrap(redis.client.Redis, "execute_command", execute_command, kept=_COMMAND_KEPT)
    patcher.wrap(redis.client.Pipeline, "execute", pipeline_execute)
    patcher.wrap(redis.asyncio.client.Redis, "execute_command", async_execute_command)
    patcher.wrap(redis.asyncio.client.Pipeline, "execute", async_pipeline_execute)
