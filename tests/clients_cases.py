"""The clients of docs/clients.md as test cases: how to call each one against a real server.

Shared by tests/test_clients_*.py and benchmarks/client_guards.py. Every case makes one
call per ``call()`` through the real client library, so a test can count what a call
adds to a breaker and what reaches the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

# Imported before any instrumentation: the SQLAlchemy instrumentation wraps
# ``sqlalchemy.engine.create_engine``, and the asyncio module keeps its own reference to
# it from import time, which ``uninstrument()`` would then never unwrap.
import sqlalchemy.ext.asyncio  # noqa: F401

from tests.support.client_servers import SERVICE, CountingProxy, GrpcServer, HttpServer

__all__ = ["CASES", "Case", "LoopThread"]


class LoopThread:
    """An event loop in a thread, so async clients keep one loop across calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# A channel retries a refused server after a backoff of a second or more; the tests'
# servers come back within a second, so the channel should try again sooner.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 100),
]


def _identity(value: bytes) -> bytes:
    return value


class Caller:
    """One client, ready to call the server.

    Database callers keep a small pool: ``call()`` uses the first connection that is not
    closed, and opens a new one only when none is left and ``reconnect`` is set.
    ``prime(n)`` opens ``n`` connections ahead (queries on open, pooled connections).
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.reconnect = True
        self.conns: list[Any] = []

    def prime(self, count: int) -> None:
        pass

    def closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def pick(self, connect: Callable[[], Any]) -> Any:
        for conn in self.conns:
            if not self.closed(conn):
                return conn
        if self.conns and not self.reconnect:
            return self.conns[-1]  # a broken one: the call fails as the application's would
        conn = connect()
        self.conns.append(conn)
        return conn

    def call(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- PostgreSQL ------------------------------------------------------------------------


def _dsn(proxy: CountingProxy) -> str:
    return f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres connect_timeout=2"


class PoolCaller(Caller):
    """A database caller with a pool of its own connections (``connect`` makes one)."""

    def connect(self) -> Any:
        raise NotImplementedError

    def prime(self, count: int) -> None:
        self.conns += [self.connect() for _ in range(count)]

    def call(self) -> Any:
        with self.pick(self.connect).cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class PsycopgCaller(PoolCaller):
    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(_dsn(self.server), autocommit=True)


class Psycopg2Caller(PoolCaller):
    def connect(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(_dsn(self.server))
        conn.autocommit = True
        return conn


class AsyncPsycopgCaller(PoolCaller):
    def __init__(self, server: CountingProxy) -> None:
        super().__init__(server)
        self.loop = LoopThread()

    def connect(self) -> Any:
        import psycopg

        return self.loop.run(psycopg.AsyncConnection.connect(_dsn(self.server), autocommit=True))

    async def _call(self, conn: Any) -> Any:
        cursor = await conn.execute("SELECT 1")
        return await cursor.fetchone()

    def call(self) -> Any:
        return self.loop.run(self._call(self.pick(self.connect)))

    def close(self) -> None:
        for conn in self.conns:
            self.loop.run(conn.close())
        self.loop.close()


class SQLAlchemyCaller(Caller):
    driver = "psycopg"

    def __init__(self, server: CountingProxy) -> None:
        super().__init__(server)
        import sqlalchemy

        self.sqlalchemy = sqlalchemy
        self.engine = sqlalchemy.create_engine(
            f"postgresql+{self.driver}://postgres@127.0.0.1:{server.port}/test",
            connect_args={"connect_timeout": 2},
            pool_size=1,
        )

    def call(self) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(self.sqlalchemy.text("SELECT 1")).scalar()

    def close(self) -> None:
        self.engine.dispose()


class SQLAlchemyPsycopg2Caller(SQLAlchemyCaller):
    driver = "psycopg2"


class AsyncSQLAlchemyCaller(Caller):
    driver = "asyncpg"

    def __init__(self, server: CountingProxy) -> None:
        super().__init__(server)
        import sqlalchemy
        from sqlalchemy.ext.asyncio import create_async_engine

        self.sqlalchemy = sqlalchemy
        self.loop = LoopThread()
        connect_args = {"timeout": 2} if self.driver == "asyncpg" else {"connect_timeout": 2}

        async def make() -> Any:
            return create_async_engine(
                f"postgresql+{self.driver}://postgres@127.0.0.1:{server.port}/test",
                connect_args=connect_args,
                pool_size=1,
            )

        self.engine = self.loop.run(make())

    async def _call(self) -> Any:
        async with self.engine.connect() as connection:
            return (await connection.execute(self.sqlalchemy.text("SELECT 1"))).scalar()

    def call(self) -> Any:
        return self.loop.run(self._call())

    def close(self) -> None:
        self.loop.run(self.engine.dispose())
        self.loop.close()


class AsyncSQLAlchemyPsycopgCaller(AsyncSQLAlchemyCaller):
    driver = "psycopg"


class AsyncpgCaller(PoolCaller):
    def __init__(self, server: CountingProxy) -> None:
        super().__init__(server)
        self.loop = LoopThread()

    def connect(self) -> Any:
        import asyncpg

        dsn = f"postgresql://postgres@127.0.0.1:{self.server.port}/test"
        return self.loop.run(asyncpg.connect(dsn, timeout=2))

    def closed(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    def call(self) -> Any:
        return self.loop.run(self.pick(self.connect).fetchval("SELECT 1"))

    def close(self) -> None:
        for conn in self.conns:
            try:
                self.loop.run(conn.close(timeout=1))
            except Exception:
                conn.terminate()
        self.loop.close()


# -- Redis -----------------------------------------------------------------------------


class RedisCaller(Caller):
    def __init__(self, server: CountingProxy) -> None:
        super().__init__(server)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.client = redis.Redis(
            port=server.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def call(self) -> Any:
        return self.client.get("otel-resilience-clients-test")

    def close(self) -> None:
        self.client.close()


# -- HTTP ------------------------------------------------------------------------------


class HttpxCaller(Caller):
    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        import httpx

        self.client = httpx.Client(timeout=2)

    def call(self) -> Any:
        return self.client.get(self.server.url)

    def close(self) -> None:
        self.client.close()


class RequestsCaller(Caller):
    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        import requests

        self.session = requests.Session()

    def call(self) -> Any:
        return self.session.get(self.server.url, timeout=2)

    def close(self) -> None:
        self.session.close()


class Urllib3Caller(Caller):
    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        import urllib3

        self.pool = urllib3.PoolManager(retries=False, timeout=2)

    def call(self) -> Any:
        return self.pool.request("GET", self.server.url)

    def close(self) -> None:
        self.pool.clear()


class AiohttpCaller(Caller):
    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        import aiohttp

        self.aiohttp = aiohttp
        self.loop = LoopThread()

        async def make() -> Any:
            return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))

        self.session = self.loop.run(make())

    async def _call(self) -> Any:
        async with self.session.get(self.server.url) as response:
            await response.read()
            return response

    def call(self) -> Any:
        return self.loop.run(self._call())

    def close(self) -> None:
        self.loop.run(self.session.close())
        self.loop.close()


# -- grpc ------------------------------------------------------------------------------


class GrpcCaller(Caller):
    kind = "unary"

    def __init__(self, server: GrpcServer) -> None:
        super().__init__(server)
        import grpc

        self.channel = grpc.insecure_channel(server.target, options=_FAST_RECONNECT)

    def call(self) -> Any:
        if self.kind == "unary":
            method = self.channel.unary_unary(
                f"/{SERVICE}/Unary",
                request_serializer=_identity,
                response_deserializer=_identity,
            )
            return method(b"x", timeout=2)
        if self.kind == "collect":
            method = self.channel.stream_unary(
                f"/{SERVICE}/Collect",
                request_serializer=_identity,
                response_deserializer=_identity,
            )
            return method(iter([b"a", b"b"]), timeout=2)
        method = self.channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
        )
        return list(method(b"x", timeout=2))

    def close(self) -> None:
        self.channel.close()


class GrpcStreamCaller(GrpcCaller):
    kind = "stream"


class GrpcCollectCaller(GrpcCaller):
    kind = "collect"


class GrpcAioCaller(Caller):
    kind = "unary"

    def __init__(self, server: GrpcServer) -> None:
        super().__init__(server)
        import grpc.aio

        self.loop = LoopThread()

        async def make() -> Any:
            return grpc.aio.insecure_channel(server.target, options=_FAST_RECONNECT)

        self.channel = self.loop.run(make())

    async def _call(self) -> Any:
        if self.kind == "unary":
            method = self.channel.unary_unary(
                f"/{SERVICE}/Unary",
                request_serializer=_identity,
                response_deserializer=_identity,
            )
            return await method(b"x", timeout=2)
        method = self.channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
        )
        return [response async for response in method(b"x", timeout=2)]

    def call(self) -> Any:
        return self.loop.run(self._call())

    def close(self) -> None:
        self.loop.run(self.channel.close())
        self.loop.close()


class GrpcAioStreamCaller(GrpcAioCaller):
    kind = "stream"


# -- the table -------------------------------------------------------------------------


def _instrumentors(*names: str) -> Callable[[], list[Any]]:
    def make() -> list[Any]:
        import importlib

        made = []
        for name in names:
            module_name, _, class_name = name.rpartition(".")
            made.append(getattr(importlib.import_module(module_name), class_name)())
        return made

    return make


_REDIS = "opentelemetry.instrumentation.redis.RedisInstrumentor"
_HTTPX = "opentelemetry.instrumentation.httpx.HTTPXClientInstrumentor"
_PSYCOPG = "opentelemetry.instrumentation.psycopg.PsycopgInstrumentor"
_PSYCOPG2 = "opentelemetry.instrumentation.psycopg2.Psycopg2Instrumentor"
_ASYNCPG = "opentelemetry.instrumentation.asyncpg.AsyncPGInstrumentor"
_SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy.SQLAlchemyInstrumentor"
_REQUESTS = "opentelemetry.instrumentation.requests.RequestsInstrumentor"
_URLLIB3 = "opentelemetry.instrumentation.urllib3.URLLib3Instrumentor"
_AIOHTTP = "opentelemetry.instrumentation.aiohttp_client.AioHttpClientInstrumentor"
_GRPC = "opentelemetry.instrumentation.grpc.GrpcInstrumentorClient"
_GRPC_AIO = "opentelemetry.instrumentation.grpc.GrpcAioInstrumentorClient"


@dataclass(frozen=True)
class Case:
    """One client: its server kind, how to call it, what its rejection must be."""

    id: str
    client: str  # the row of docs/clients.md
    server: str  # "postgres", "redis", "http" or "grpc"
    caller: Callable[[Any], Caller]
    instrumentors: Callable[[], list[Any]]
    rejected: str  # dotted names (space-separated) of the error classes a rejection may be
    failures: tuple[str, ...] = field(default=("refused",))
    successes_per_call: int = 1  # what one good call adds to the breaker
    span_successes_per_call: int | None = None  # the same with spans alone, when it differs

    def rejected_classes(self) -> tuple[type[BaseException], ...]:
        import importlib

        found = []
        for name in self.rejected.split():
            module_name, _, class_name = name.rpartition(".")
            found.append(getattr(importlib.import_module(module_name), class_name))
        return tuple(found)


CASES: tuple[Case, ...] = (
    Case(
        "redis",
        "redis-py",
        "redis",
        RedisCaller,
        _instrumentors(_REDIS),
        "redis.exceptions.ConnectionError",
    ),
    Case(
        "asyncpg",
        "asyncpg",
        "postgres",
        AsyncpgCaller,
        _instrumentors(_ASYNCPG),
        "asyncpg.exceptions.InterfaceError",
    ),
    Case(
        "psycopg",
        "psycopg",
        "postgres",
        PsycopgCaller,
        _instrumentors(_PSYCOPG),
        "psycopg.OperationalError",
    ),
    Case(
        "psycopg-async",
        "psycopg",
        "postgres",
        AsyncPsycopgCaller,
        _instrumentors(_PSYCOPG),
        "psycopg.OperationalError",
    ),
    Case(
        "psycopg2",
        "psycopg2",
        "postgres",
        Psycopg2Caller,
        _instrumentors(_PSYCOPG2),
        "psycopg2.OperationalError",
    ),
    Case(
        "sqlalchemy-psycopg",
        "sqlalchemy",
        "postgres",
        SQLAlchemyCaller,
        _instrumentors(_SQLALCHEMY, _PSYCOPG),
        "sqlalchemy.exc.DBAPIError",
    ),
    Case(
        "sqlalchemy-psycopg2",
        "sqlalchemy",
        "postgres",
        SQLAlchemyPsycopg2Caller,
        _instrumentors(_SQLALCHEMY, _PSYCOPG2),
        "sqlalchemy.exc.DBAPIError",
    ),
    Case(
        "sqlalchemy-asyncio-asyncpg",
        "sqlalchemy",
        "postgres",
        AsyncSQLAlchemyCaller,
        _instrumentors(_SQLALCHEMY, _ASYNCPG),
        # SQLAlchemy passes asyncpg's connect errors through unmapped, rejections too.
        "sqlalchemy.exc.DBAPIError asyncpg.exceptions.InterfaceError",
        # The statement, and the ROLLBACK SQLAlchemy sends through asyncpg when the
        # connection goes back to the pool (psycopg's rollback is no query).
        successes_per_call=2,
        # Spans alone also see the BEGIN that asyncpg's instrumentation traces.
        span_successes_per_call=3,
    ),
    Case(
        "sqlalchemy-asyncio-psycopg",
        "sqlalchemy",
        "postgres",
        AsyncSQLAlchemyPsycopgCaller,
        _instrumentors(_SQLALCHEMY, _PSYCOPG),
        "sqlalchemy.exc.DBAPIError",
    ),
    Case(
        "httpx",
        "httpx",
        "http",
        HttpxCaller,
        _instrumentors(_HTTPX),
        "httpx.TransportError",
        failures=("refused", "503"),
    ),
    Case(
        "requests",
        "requests",
        "http",
        RequestsCaller,
        _instrumentors(_REQUESTS, _URLLIB3),
        "requests.exceptions.ConnectionError",
        failures=("refused", "503"),
    ),
    Case(
        "urllib3",
        "urllib3",
        "http",
        Urllib3Caller,
        _instrumentors(_URLLIB3),
        "urllib3.exceptions.HTTPError",
        failures=("refused", "503"),
    ),
    Case(
        "aiohttp",
        "aiohttp",
        "http",
        AiohttpCaller,
        _instrumentors(_AIOHTTP),
        "aiohttp.ClientConnectionError",
        failures=("refused", "503"),
    ),
    Case(
        "grpc-unary",
        "grpc",
        "grpc",
        GrpcCaller,
        _instrumentors(_GRPC),
        "grpc.RpcError",
        failures=("refused", "unavailable"),
    ),
    Case(
        "grpc-stream",
        "grpc",
        "grpc",
        GrpcStreamCaller,
        _instrumentors(_GRPC),
        "grpc.RpcError",
        failures=("unavailable",),
    ),
    Case(
        "grpc-client-stream",
        "grpc",
        "grpc",
        GrpcCollectCaller,
        _instrumentors(_GRPC),
        "grpc.RpcError",
        failures=("unavailable",),
    ),
    Case(
        "grpc-aio-unary",
        "grpc",
        "grpc",
        GrpcAioCaller,
        _instrumentors(_GRPC_AIO),
        "grpc.RpcError",
        failures=("refused", "unavailable"),
    ),
    Case(
        "grpc-aio-stream",
        "grpc",
        "grpc",
        GrpcAioStreamCaller,
        _instrumentors(_GRPC_AIO),
        "grpc.RpcError",
        failures=("unavailable",),
    ),
)
