"""One call, one count, when SQLAlchemy's instrumentation and its driver's both make spans.

SQLAlchemy's OpenTelemetry instrumentation makes a CLIENT span for each statement, and
the driver's instrumentation (psycopg, psycopg2, asyncpg) makes another one for the same
call; it also makes a ``connect`` span for every pool checkout, most of which reach no
server. Spans alone would count one statement twice and every checkout as a success.
So, by the span's instrumentation scope:

- a driver span is counted, and notes its start in the current context;
- a SQLAlchemy statement span is not counted when a driver span started after it in the
  same context (the driver's span of the same call, which ended first);
- a SQLAlchemy ``connect`` span counts only when it failed: a refused connection is a
  failed call that has no other span, a checkout that worked is no call of its own.

The role of a scope is cached by the scope object (a tracer keeps one), and the span
processor remembers the last scope of no role, so most spans pay one identity check.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = [
    "DRIVER",
    "DRIVER_STARTED",
    "EXACT_CLIENT_KEYS",
    "EXACT_CLIENT_SCOPE",
    "OTHER",
    "SQLALCHEMY",
    "answers_http",
    "scope_role",
]

OTHER = 0
SQLALCHEMY = 1
DRIVER = 2

_SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
_DRIVER_SCOPES = frozenset(
    {
        "opentelemetry.instrumentation.psycopg",
        "opentelemetry.instrumentation.psycopg2",
        "opentelemetry.instrumentation.asyncpg",
    }
)

# Instrumentations of database and cache clients: their spans carry no HTTP status.
_NO_HTTP_SCOPES = frozenset(
    {
        "opentelemetry.instrumentation.redis",
        "opentelemetry.instrumentation.pymongo",
        "opentelemetry.instrumentation.pymysql",
        "opentelemetry.instrumentation.mysql",
        "opentelemetry.instrumentation.mysqlclient",
        "opentelemetry.instrumentation.aiopg",
        "opentelemetry.instrumentation.pymemcache",
        "opentelemetry.instrumentation.cassandra",
        _SQLALCHEMY_SCOPE,
    }
    | _DRIVER_SCOPES
)

# The leaf client whose guard hands its successes to its spans (instrumentation/_redis.py):
# its instrumentation's span of a command carries, for these canonical attributes, the very
# values from which the guard classified the command's dependency (the pool's
# ``connection_kwargs``: the ``path``, or ``host`` and ``port`` with redis-py's defaults).
# A classifier reading no others answers that same dependency for the span, so the span
# processor need not classify it again (``_processor._FAST_ON_END``);
# tests/test_handed_successes.py holds the two to it, in both semantic conventions.
EXACT_CLIENT_SCOPE = "opentelemetry.instrumentation.redis"
EXACT_CLIENT_KEYS = frozenset({"db.system", "server.address", "server.port"})

DRIVER_STARTED: ContextVar[int] = ContextVar("otel_resilience_driver_started", default=-1)
"""Start time (ns) of the last driver span that ended in this context."""

# id(scope) -> (scope, role); the scope is kept so that a reused id is never mistaken.
_roles: dict[int, tuple[Any, int]] = {}


def scope_role(scope: Any) -> int:
    """``OTHER``, ``SQLALCHEMY`` or ``DRIVER``: which instrumentation made a span."""
    entry = _roles.get(id(scope))
    if entry is not None and entry[0] is scope:
        return entry[1]
    name = getattr(scope, "name", None)
    if name == _SQLALCHEMY_SCOPE:
        role = SQLALCHEMY
    elif name in _DRIVER_SCOPES:
        role = DRIVER
    else:
        role = OTHER
    if len(_roles) >= 256:
        _roles.clear()
    _roles[id(scope)] = (scope, role)
    return role


def answers_http(scope: Any) -> bool:
    """Whether spans of this instrumentation scope may carry an HTTP response status
    (False only for the database and cache client instrumentations)."""
    return getattr(scope, "name", None) not in _NO_HTTP_SCOPES
