"""Guards for psycopg2: connecting and queries.

psycopg2's connection and cursor are C types that cannot be patched, and connecting has
no span in OpenTelemetry's instrumentation. So ``psycopg2.connect`` is guarded (the guard
records connect outcomes itself) and makes its connection an instance of a guarded
subclass of the requested connection class, whose cursors are guarded subclasses of the
requested cursor class: ``execute``, ``executemany`` and ``callproc`` go through the
breaker on every cursor of a connection made after ``configure()``, the instrumentation's
traced cursors and ``psycopg2.extras`` cursors included. Imported only when psycopg2 is
installed.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from .._errors import CircuitOpenError
from .._guard import Client, Entry, guarded_call
from . import _postgres
from ._clientcall import Current, Dependencies, never_serve
from ._install import Installer

__all__ = ["Psycopg2CircuitOpenError", "install_psycopg2"]

_GUARDED_CLASS = "_otel_resilience_guarded"
_SUBCLASS = "_otel_resilience_guarded_subclass"
_CACHE_ATTRIBUTE = "_otel_resilience_dependency"
# Keyword arguments of ``connect`` that are not connection parameters.
_CONNECT_OPTIONS = frozenset(("dsn", "connection_factory", "cursor_factory", "async", "async_"))


class Psycopg2CircuitOpenError(CircuitOpenError, psycopg2.OperationalError):  # type: ignore[misc]
    """The PostgreSQL breaker is open: raised before any network I/O.

    Also a ``psycopg2.OperationalError``, what psycopg2 raises when the server cannot be
    reached, so existing ``except`` clauses keep working.
    """

    __reduce__ = CircuitOpenError.__reduce__


def _is_failure(exc: BaseException) -> bool:
    return _postgres.is_failure(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))


PSYCOPG2 = Client(
    "psycopg2",
    marks_span=True,
    open_error=Psycopg2CircuitOpenError,
    fault=psycopg2.OperationalError,
    is_failure=_is_failure,
    serve=never_serve,
)
"""Connecting and queries; no fallback (a rejected call raises)."""


_current = Current()
# Guarded subclasses of C types (which take no attributes); Python classes keep theirs.
_guarded_c_types: dict[type[Any], type[Any]] = {}
_guarded_connections: dict[type[Any], type[Any]] = {}


def _entry_of(connection: Any) -> Entry | None:
    """The entry of a connection's dependency under the current install (kept on it)."""
    dependencies = _current.dependencies()
    if dependencies is None:
        return None
    cached = connection.__dict__.get(_CACHE_ATTRIBUTE)
    if cached is not None and cached[0] is dependencies:
        return cached[1]  # type: ignore[no-any-return]
    try:
        info = connection.info
        key = _postgres.address(info.host, info.port)
    except Exception:  # pragma: no cover - psycopg2's info answers None once closed
        return None
    entry = dependencies.entry(
        key, lambda: _postgres.attributes(*key), lambda: _postgres.health_address(key, info)
    )
    connection.__dict__[_CACHE_ATTRIBUTE] = (dependencies, entry)
    return entry


def _guarded_cursor(factory: type[Any]) -> type[Any]:
    """The guarded subclass of cursor class ``factory`` (made once per class)."""
    if factory.__dict__.get(_GUARDED_CLASS):
        return factory
    known = factory.__dict__.get(_SUBCLASS) or _guarded_c_types.get(factory)
    if known is not None:
        return known

    class GuardedCursor(factory):  # type: ignore[misc]
        def _guarded(self, method: Any, args: Any, kwargs: Any) -> Any:
            entry = _entry_of(self.connection)
            if entry is None:
                return method(*args, **kwargs)
            return guarded_call(entry, PSYCOPG2, method, args, kwargs, None)

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            return self._guarded(super().execute, args, kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return self._guarded(super().executemany, args, kwargs)

        def callproc(self, *args: Any, **kwargs: Any) -> Any:
            return self._guarded(super().callproc, args, kwargs)

    setattr(GuardedCursor, _GUARDED_CLASS, True)
    GuardedCursor.__name__ = GuardedCursor.__qualname__ = factory.__name__
    GuardedCursor.__module__ = factory.__module__
    # Kept on the class itself (the instrumentation makes a cursor class per connection,
    # so a table would grow); C types cannot take attributes: they go in the table.
    try:
        setattr(factory, _SUBCLASS, GuardedCursor)
    except TypeError:
        _guarded_c_types[factory] = GuardedCursor
    return GuardedCursor


def _guarded_connection(base: type[Any]) -> type[Any]:
    """The guarded subclass of connection class ``base``: its cursors are guarded."""
    known = _guarded_connections.get(base)
    if known is not None:
        return known

    class GuardedConnection(base):  # type: ignore[misc]
        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            if len(args) >= 2 and args[1] is not None:
                args = (args[0], _guarded_cursor(args[1]), *args[2:])
            else:
                factory = (
                    kwargs.get("cursor_factory")
                    or self.cursor_factory
                    or psycopg2.extensions.cursor
                )
                kwargs["cursor_factory"] = _guarded_cursor(factory)
            return super().cursor(*args, **kwargs)

    GuardedConnection.__name__ = GuardedConnection.__qualname__ = base.__name__
    GuardedConnection.__module__ = base.__module__
    _guarded_connections[base] = GuardedConnection
    return GuardedConnection


def _of_connect(dependencies: Dependencies, args: Any, kwargs: Any) -> Entry | None:
    dsn = args[0] if args else kwargs.get("dsn")
    params = {key: value for key, value in kwargs.items() if key not in _CONNECT_OPTIONS}
    try:
        parsed = psycopg2.extensions.parse_dsn(psycopg2.extensions.make_dsn(dsn, **params))
    except Exception:
        parsed = {}
    key = _postgres.address(parsed.get("host") or parsed.get("hostaddr"), parsed.get("port"))
    return dependencies.entry(
        key, lambda: _postgres.attributes(*key), lambda: _postgres.health_address(key, parsed)
    )


def install_psycopg2(installer: Installer) -> None:
    """Guard ``psycopg2.connect`` and the cursors of the connections it makes.

    The guarded classes are made once per process; they ask the current install (the
    last ``configure()``) on each call, so connections made earlier follow it.
    """
    _current.activate(installer)

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        factory = kwargs.get("connection_factory")
        if factory is None or isinstance(factory, type):
            kwargs = {
                **kwargs,
                "connection_factory": _guarded_connection(
                    factory or psycopg2.extensions.connection
                ),
            }
        dependencies = _current.dependencies()
        entry = None if dependencies is None else _of_connect(dependencies, args, kwargs)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, PSYCOPG2, wrapped, args, kwargs, None)

    installer.wrap(psycopg2, "connect", connect)
