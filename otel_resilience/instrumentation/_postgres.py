"""What the PostgreSQL DB-API guards (psycopg, psycopg2) share: identity and failures."""

from __future__ import annotations

import os
from typing import Any

from .._addresses import Address

__all__ = ["UNAVAILABLE_SQLSTATES", "address", "attributes", "health_address", "is_failure"]

# SQLSTATE classes that mean the server is unavailable rather than that it answered:
# connection exceptions, insufficient resources, operator intervention, system errors.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")


def is_failure(exc: BaseException, unavailable: tuple[type[BaseException], ...]) -> bool:
    """Whether a driver error means PostgreSQL is unavailable (not that it answered).

    An error with a SQLSTATE is the server's answer unless its class says it is going
    away; one without is a client-side error, except the driver's ``unavailable`` types
    (OperationalError, InterfaceError: refused, reset, timed out, closed) and the
    network's own errors (``OSError``, ``TimeoutError``).
    """
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    if isinstance(exc, unavailable):
        return True
    return isinstance(exc, (OSError, TimeoutError))


def address(host: Any, port: Any) -> tuple[str, int]:
    """The server a connection goes to, with libpq's defaults (PGHOST, PGPORT, localhost)."""
    host = host or os.environ.get("PGHOST") or "localhost"
    if isinstance(host, str) and "," in host:  # several hosts: the first names the dependency
        host = host.split(",", 1)[0]
    port = port or os.environ.get("PGPORT") or 5432
    if isinstance(port, str) and "," in port:
        port = port.split(",", 1)[0]
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = 5432
    return str(host), port


def attributes(host: str, port: int) -> dict[str, Any]:
    """The attributes a PostgreSQL client span carries, for classification."""
    return {"db.system": "postgresql", "server.address": host, "server.port": port}


def health_address(key: tuple[str, int], params: Any) -> Address:
    """Where a PostgreSQL connection goes, for the ``sql`` health check: the server, and
    the database, user and password of the connection's own parameters (a mapping or a
    connection's ``info``)."""
    host, port = key

    def param(*names: str) -> str | None:
        for name in names:
            value = params.get(name) if hasattr(params, "get") else getattr(params, name, None)
            if isinstance(value, str) and value:
                return value
        return None

    return Address(
        host,
        port,
        param("dbname", "database"),
        param("user"),
        "unix" if host.startswith("/") else None,
        param("password"),
    )
