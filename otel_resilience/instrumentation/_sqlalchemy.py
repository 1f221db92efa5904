"""SQLAlchemy: guarded through its driver's guard, each call counted once.

A SQLAlchemy engine on psycopg, psycopg2 or asyncpg makes its calls through the driver,
whose guard admits and records them (connecting included). What is left here:

- SQLAlchemy's own spans must not count a second time. Its statement span ends after
  the driver's call (in ``after_cursor_execute`` / ``handle_error``), outside the
  guarded call, so class-level listeners, which SQLAlchemy runs before the
  instrumentation's engine-level ones, make it end as part of the guarded call
  (``end_guarded``: nothing is added to the span). Its pool-checkout ``connect`` span
  (``Engine.connect``) too: a checkout is not a call to the database, and a real
  connect inside it is the driver guard's to record.
- asyncio engines on asyncpg prepare and run a statement with asyncpg calls that the
  asyncpg guard does not see (``prepare``, prepared-statement fetches), so the adapted
  cursor's ``_prepare_and_execute`` and ``_executemany`` are guarded here, and a
  rejection goes through SQLAlchemy's own error translation: the application gets
  ``sqlalchemy.exc.DBAPIError`` whose ``.orig.__cause__`` is the guard's error.

This applies only to engines whose driver is guarded and whose address matches a
declared dependency. Imported only when SQLAlchemy is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import sqlalchemy
import sqlalchemy.engine
from opentelemetry.trace import SpanKind
from sqlalchemy import event

from .._guard import Client, Entry, guarded_acall
from .._sdk import context_span
from . import _postgres
from ._clientcall import Dependencies, end_guarded, never_serve
from ._install import Installer

__all__ = ["install_sqlalchemy"]

_CACHE_ATTRIBUTE = "_otel_resilience_dependency"

# SQLAlchemy driver names whose DB-API calls an otel_resilience guard covers.
_GUARDED_DRIVERS = frozenset({"psycopg", "psycopg_async", "psycopg2", "asyncpg"})


def _asyncpg_is_failure(exc: BaseException) -> bool:
    import asyncpg

    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, asyncpg.PostgresError):
        cause = cause.__cause__
    if isinstance(cause, asyncpg.PostgresError):
        sqlstate = getattr(cause, "sqlstate", None) or ""
        return sqlstate.startswith(_postgres.UNAVAILABLE_SQLSTATES)
    return isinstance(cause, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)) or (
        type(cause).__module__.startswith("sqlalchemy")
        and type(cause).__name__ in ("OperationalError", "InterfaceError")
    )


def install_sqlalchemy(installer: Installer) -> None:
    """Count SQLAlchemy's spans of guarded engines once (through the driver guard);
    guard asyncpg-adapted cursors."""
    dependencies = Dependencies(installer)

    def of_engine(engine: Any) -> Entry | None:
        """The entry of a guarded engine's dependency (kept on the engine), else None."""
        cached = getattr(engine, _CACHE_ATTRIBUTE, None)
        if cached is not None and cached[0] is installer:
            return cached[1]  # type: ignore[no-any-return]
        entry = None
        dialect = engine.dialect
        if dialect.driver in _GUARDED_DRIVERS and dialect.name == "postgresql":
            key = _postgres.address(engine.url.host, engine.url.port)
            entry = dependencies.entry(key, lambda: _postgres.attributes(*key))
        with contextlib.suppress(AttributeError):
            setattr(engine, _CACHE_ATTRIBUTE, (installer, entry))
        return entry

    def after_execute(conn: Any, cursor: Any, statement: Any, *rest: Any) -> None:
        try:
            context = rest[-2] if len(rest) >= 2 else None
            entry = of_engine(conn.engine) if installer.active() else None
            if entry is not None:
                end_guarded(getattr(context, "_otel_span", None), entry.name)
        except Exception:  # pragma: no cover - bookkeeping never fails the application's query
            pass

    def handle_error(exception_context: Any) -> None:
        try:
            engine = exception_context.engine
            entry = of_engine(engine) if installer.active() and engine is not None else None
            if entry is not None:
                span = getattr(exception_context.execution_context, "_otel_span", None)
                end_guarded(span, entry.name)
        except Exception:  # pragma: no cover - as in after_execute
            pass

    def engine_connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # Under the instrumentation's wrapper, its "connect" span is the current span.
        span: Any = context_span()
        if (
            getattr(span, "kind", None) is SpanKind.CLIENT
            and getattr(span, "name", None) == "connect"
        ):
            entry = of_engine(instance)
            if entry is not None:
                end_guarded(span, entry.name)
        return wrapped(*args, **kwargs)

    event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", after_execute)
    event.listen(sqlalchemy.engine.Engine, "handle_error", handle_error)
    installer.on_uninstall(
        lambda: event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", after_execute)
    )
    installer.on_uninstall(
        lambda: event.remove(sqlalchemy.engine.Engine, "handle_error", handle_error)
    )
    installer.wrap(sqlalchemy.engine.Engine, "connect", engine_connect)
    _install_asyncpg_adapter(installer, dependencies)


def _install_asyncpg_adapter(installer: Installer, dependencies: Dependencies) -> None:
    try:
        from sqlalchemy.dialects.postgresql import asyncpg as adapter

        from ._asyncpg import PostgresCircuitOpenError
    except ImportError:
        return
    # None in an SQLAlchemy without it: nothing has the methods guarded below.
    cursor_class = getattr(adapter, "AsyncAdapt_asyncpg_cursor", None)
    client = Client(
        "sqlalchemy-asyncpg",
        marks_span=True,
        open_error=PostgresCircuitOpenError,
        fault=ConnectionRefusedError,
        is_failure=_asyncpg_is_failure,
        serve=never_serve,
    )

    def of_cursor(cursor: Any) -> Entry | None:
        connection = getattr(getattr(cursor, "_adapt_connection", None), "_connection", None)
        addr = getattr(connection, "_addr", None)
        host, port = addr if isinstance(addr, tuple) else (addr, None)
        key = _postgres.address(host, port)
        return dependencies.entry(key, lambda: _postgres.attributes(*key))

    async def execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_cursor(instance)
        if entry is None:
            return await wrapped(*args, **kwargs)
        try:
            return await guarded_acall(entry, client, wrapped, args, kwargs, None)
        except PostgresCircuitOpenError as error:
            # Rejected before the cursor ran: make of it the DB-API error SQLAlchemy makes
            # of any asyncpg error (raised from this one), as the cursor itself would.
            instance._handle_exception(error)
            raise  # pragma: no cover - _handle_exception raises the translated error

    for method in ("_prepare_and_execute", "_executemany"):
        if hasattr(cursor_class, method):
            installer.wrap(cursor_class, method, execute)
