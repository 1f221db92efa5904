"""Guards for psycopg 3: connecting and queries, sync and async.

Connecting has no span in OpenTelemetry's psycopg instrumentation, so the guard records
connect outcomes itself. Queries are guarded at the base cursor classes' ``execute``,
``executemany`` and ``stream``, which every cursor (the instrumentation's traced cursor
subclasses included) calls: queries on connections opened before ``configure()`` or kept
in a pool are guarded too. Imported only when psycopg is installed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors

from .._errors import CircuitOpenError
from .._guard import Client, Entry, guarded_acall, guarded_call
from . import _postgres
from ._clientcall import Dependencies, never_serve
from ._install import Installer

__all__ = ["PsycopgCircuitOpenError", "install_psycopg"]

_CACHE_ATTRIBUTE = "_otel_resilience_dependency"
# Keyword arguments of ``connect`` that are not connection parameters.
_CONNECT_OPTIONS = frozenset(
    ("conninfo", "autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory")
)


class PsycopgCircuitOpenError(CircuitOpenError, psycopg.OperationalError):
    """The PostgreSQL breaker is open: raised before any network I/O.

    Also a ``psycopg.OperationalError``, what psycopg raises when the server cannot be
    reached, so existing ``except`` clauses keep working.
    """

    __reduce__ = CircuitOpenError.__reduce__


def _is_failure(exc: BaseException) -> bool:
    return _postgres.is_failure(exc, (psycopg.OperationalError, psycopg.InterfaceError))


PSYCOPG = Client(
    "psycopg",
    marks_span=True,
    open_error=PsycopgCircuitOpenError,
    fault=psycopg.OperationalError,
    is_failure=_is_failure,
    serve=never_serve,
    timeout_errors=(psycopg.errors.ConnectionTimeout,),
)
"""Connecting and queries; no fallback (a rejected call raises)."""


def install_psycopg(installer: Installer) -> None:
    """Guard ``Connection.connect`` (and ``psycopg.connect``), async too, and cursor queries."""
    dependencies = Dependencies(installer)

    def classify(host: Any, port: Any, params: Any) -> Entry | None:
        key = _postgres.address(host, port)
        return dependencies.entry(
            key, lambda: _postgres.attributes(*key), lambda: _postgres.health_address(key, params)
        )

    def of_connect(args: Any, kwargs: Any) -> Entry | None:
        conninfo = args[0] if args else kwargs.get("conninfo", "")
        params = {key: value for key, value in kwargs.items() if key not in _CONNECT_OPTIONS}
        try:
            parsed = psycopg.conninfo.conninfo_to_dict(conninfo, **params)
        except Exception:
            parsed = {}
        return classify(parsed.get("host") or parsed.get("hostaddr"), parsed.get("port"), parsed)

    def of_cursor(cursor: Any) -> Entry | None:
        # No connection (None) fails ``connection.info`` below: not guarded.
        connection: Any = getattr(cursor, "_conn", None) or getattr(cursor, "connection", None)
        cached = getattr(connection, _CACHE_ATTRIBUTE, None)
        if cached is not None and cached[0] is installer:
            return cached[1]  # type: ignore[no-any-return]
        try:
            info = connection.info
            entry = classify(info.host, info.port, info)
        except Exception:
            return None
        with contextlib.suppress(AttributeError):  # a connection class with __slots__
            setattr(connection, _CACHE_ATTRIBUTE, (installer, entry))
        return entry

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_connect(args, kwargs)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, PSYCOPG, wrapped, args, kwargs, None)

    async def aconnect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_connect(args, kwargs)
        if entry is None:
            return await wrapped(*args, **kwargs)
        return await guarded_acall(entry, PSYCOPG, wrapped, args, kwargs, None)

    def execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_cursor(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, PSYCOPG, wrapped, args, kwargs, None)

    async def aexecute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_cursor(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        return await guarded_acall(entry, PSYCOPG, wrapped, args, kwargs, None)

    installer.wrap(psycopg.Connection, "connect", connect)
    installer.wrap(psycopg.AsyncConnection, "connect", aconnect)
    # ``psycopg.connect`` is the method bound at import: a path of its own to the original.
    installer.wrap(psycopg, "connect", connect)
    for method in ("execute", "executemany"):
        installer.wrap(psycopg.Cursor, method, execute)
        installer.wrap(psycopg.AsyncCursor, method, aexecute)
    # Server-side cursors (``conn.cursor(name=...)``) declare themselves in their own
    # ``execute``.
    installer.wrap(psycopg.ServerCursor, "execute", execute)
    installer.wrap(psycopg.AsyncServerCursor, "execute", aexecute)
