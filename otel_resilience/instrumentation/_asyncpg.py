"""Guards for asyncpg: connection query methods and connecting (which has no span).

Imported only when asyncpg is installed (``instrumentation.install``). A declaration on
the guarded-call path of ``_guard.py``: the dependency is looked up once per server
address; server errors other than "unavailable" are answers; the rejection error is also
an ``InterfaceError`` and a ``ConnectionError``; a fallback is called with the method
name and the arguments.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import asyncpg.connection

from .._addresses import Address
from .._errors import CircuitOpenError
from .._guard import NOT_SERVED, Client, Entry, guarded_acall
from .._health import learn_address
from ._common import Patcher

__all__ = ["PostgresCircuitOpenError", "install_asyncpg"]

_QUERY_METHODS = (
    "execute",
    "executemany",
    "fetch",
    "fetchval",
    "fetchrow",
    "copy_from_query",
    "copy_from_table",
    "copy_to_table",
    "copy_records_to_table",
)

# SQLSTATE classes that mean the server is unavailable rather than that it answered:
# connection exceptions, insufficient resources, operator intervention, system errors.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")


class PostgresCircuitOpenError(
    CircuitOpenError,
    asyncpg.exceptions.InterfaceError,  # type: ignore[misc]  # asyncpg is untyped
    ConnectionError,
):
    """The PostgreSQL breaker is open: raised before any network I/O.

    Also an ``asyncpg.exceptions.InterfaceError`` and a ``ConnectionError`` (an ``OSError``,
    what asyncpg raises when it cannot connect), so existing ``except`` clauses still work.
    """

    def __init__(self, dependency: str, retry_after: float) -> None:
        CircuitOpenError.__init__(self, dependency, retry_after)


def _is_failure(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.exceptions.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return True


def _serve(entry: Entry, reason: str, method: str, args: Any, kwargs: Any) -> Any:
    fallback = entry.fallback
    if fallback is None:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason)
    return fallback(method, *args)


ASYNCPG = Client(
    "asyncpg",
    marks_span=True,
    open_error=PostgresCircuitOpenError,
    fault=ConnectionRefusedError,
    is_failure=_is_failure,
    serve=_serve,
)
"""Queries and connecting: the subject is the method name (``"connect"`` for connecting)."""


def _connect_address(host: Any, port: Any, dsn: Any, kwargs: dict[str, Any]) -> Address | None:
    """Where an ``asyncpg.connect`` call goes, with the database and credentials it uses."""
    database, user, password = kwargs.get("database"), kwargs.get("user"), kwargs.get("password")
    if isinstance(dsn, str):
        try:
            parts = urlsplit(dsn)
            database = database or (parts.path.lstrip("/") or None)
            user = user or parts.username
            password = password or parts.password
        except ValueError:
            pass
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        port_number = None
    if not isinstance(host, str) or not host:
        return None
    return Address(
        host,
        port_number,
        database if isinstance(database, str) else None,
        user if isinstance(user, str) else None,
        "unix" if host.startswith("/") else None,
        password if isinstance(password, str) else None,
    )


def install_asyncpg(patcher: Patcher) -> None:
    """Wrap the query methods of ``asyncpg.Connection`` and ``asyncpg.connect``."""
    registry = patcher.registry
    entries: dict[Any, Entry | None] = {}

    def classify(address: Any, host: Any, port: Any) -> Entry | None:
        try:
            return entries[address]
        except KeyError:
            pass
        attributes: dict[str, Any] = {"db.system": "postgresql", "server.address": host}
        if port is not None:
            attributes["server.port"] = port
        name = registry.classify(attributes)
        entry = None if name is None else patcher.entry(name)
        if len(entries) < 1024:
            entries[address] = entry
        return entry

    def query_wrapper(method: str) -> Any:
        async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            # The connection's address, a (host, port) tuple or a socket path: the key.
            addr = getattr(instance, "_addr", None)
            try:
                entry = entries[addr]
            except KeyError:
                host, port = addr if isinstance(addr, tuple) else (addr, None)
                entry = classify(addr, host, port)
            if entry is None:
                return await wrapped(*args, **kwargs)
            return await guarded_acall(entry, ASYNCPG, wrapped, args, kwargs, method)

        return wrapper

    async def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        dsn = args[0] if args else kwargs.get("dsn")
        host, port = kwargs.get("host"), kwargs.get("port")
        if dsn and (host is None or port is None):
            try:
                parts = urlsplit(dsn)
                host = host or parts.hostname
                port = port or parts.port
            except ValueError:
                pass
        host = host or os.environ.get("PGHOST") or "localhost"
        port = port or os.environ.get("PGPORT") or 5432
        if isinstance(host, list):  # several hosts: classify by the first
            host = host[0]
        if isinstance(port, list):  # and its port (libpq's rule, as the psycopg guards)
            port = port[0]
        entry = classify((str(host), str(port)), host, port)
        if entry is None:
            return await wrapped(*args, **kwargs)
        # Connecting has no span: the health check learns the address from here.
        learn_address(registry, entry.name, _connect_address(host, port, dsn, kwargs))
        return await guarded_acall(entry, ASYNCPG, wrapped, args, kwargs, "connect")

    for method in _QUERY_METHODS:
        patcher.wrap(asyncpg.connection.Connection, method, query_wrapper(method))
    patcher.wrap(asyncpg.connection, "connect", connect)
    # ``asyncpg.connect`` is the same function under the package's name.
    patcher.wrap(asyncpg, "connect", connect)
