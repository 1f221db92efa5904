"""The psycopg and psycopg2 guards on the paths around the breaker, against the shared
PostgreSQL (127.0.0.1:5432, trust auth, database ``test``): calls to servers no dependency
names, connection strings the driver rejects, connections closed or made before an
uninstall, and every cursor method and cursor class psycopg2 offers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

from otel_resilience import CircuitOpenError, HealthProber, Registry, load_config
from otel_resilience.instrumentation import install
from tests.support import health_checks_helpers

DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=2"


def registry_for_port(port: int) -> Registry:
    return load_config(
        {"dependencies": {"db": {"match": {"db.system": "postgresql", "server.port": port}}}}
    )


@pytest.fixture
def guarded_5432() -> Iterator[Registry]:
    """Guards installed with dependency ``db`` naming PostgreSQL on port 5432."""
    registry = registry_for_port(5432)
    uninstall = install(registry)
    try:
        yield registry
    finally:
        uninstall()


@pytest.fixture
def guarded_elsewhere() -> Iterator[Registry]:
    """Guards installed with dependency ``db`` naming a port no test connects to, its
    breaker forced open: a call that the guard took for ``db`` would be rejected."""
    registry = registry_for_port(1)
    uninstall = install(registry)
    registry.breaker("db").force_open()
    try:
        yield registry
    finally:
        uninstall()


def calls(registry: Registry) -> int:
    snapshot = registry.breaker("db").snapshot()
    return snapshot.total_successes + snapshot.total_failures + snapshot.total_rejected


# -- calls to a server no dependency names ---------------------------------------------


def test_psycopg_calls_to_an_undeclared_server_go_straight_through(
    guarded_elsewhere: Registry,
) -> None:
    """psycopg connects and queries (sync) to a server no dependency names are not guarded:
    they run, with the only declared breaker forced open, and count nowhere."""
    with psycopg.connect(DSN) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    with psycopg.Connection.connect(DSN) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert calls(guarded_elsewhere) == 0


async def test_async_psycopg_calls_to_an_undeclared_server_go_straight_through(
    guarded_elsewhere: Registry,
) -> None:
    """psycopg's async connect and queries to a server no dependency names are not
    guarded: they run, with the only declared breaker forced open, and count nowhere."""
    conn = await psycopg.AsyncConnection.connect(DSN)
    try:
        cursor = await conn.execute("SELECT 1")
        assert await cursor.fetchone() == (1,)
    finally:
        await conn.close()
    assert calls(guarded_elsewhere) == 0


def test_psycopg2_calls_to_an_undeclared_server_go_straight_through(
    guarded_elsewhere: Registry,
) -> None:
    """psycopg2 connects and queries to a server no dependency names are not guarded:
    they run, with the only declared breaker forced open, and count nowhere."""
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        conn.close()
    assert calls(guarded_elsewhere) == 0


# -- what the driver rejects before connecting -------------------------------------------


def test_a_malformed_connection_string_is_the_drivers_error_and_no_failure(
    guarded_5432: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection string the driver cannot parse still names libpq's default server
    (localhost:5432): the call goes through that dependency's guard, raises the driver's
    own ProgrammingError, and counts as an answer, not as a failure."""
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    with pytest.raises(psycopg.ProgrammingError) as by_psycopg:
        psycopg.connect("nonsense without equals")
    with pytest.raises(psycopg2.ProgrammingError) as by_psycopg2:
        psycopg2.connect("nonsense without equals")
    assert not isinstance(by_psycopg.value, CircuitOpenError)
    assert not isinstance(by_psycopg2.value, CircuitOpenError)
    snapshot = guarded_5432.breaker("db").snapshot()
    assert (snapshot.total_successes, snapshot.total_failures) == (2, 0)


def test_psycopg_query_on_a_connection_closed_before_use_gets_psycopgs_error(
    guarded_5432: Registry,
) -> None:
    """A query on a connection the application closed before its first query (whose
    server can no longer be read from it) gets psycopg's own "connection is closed"
    error, even with the breaker open, and the breaker counts nothing."""
    conn = psycopg.connect(DSN)
    cursor = conn.cursor()
    conn.close()
    before = calls(guarded_5432)
    guarded_5432.breaker("db").force_open()
    with pytest.raises(psycopg.OperationalError, match="closed") as error:
        cursor.execute("SELECT 1")
    assert not isinstance(error.value, CircuitOpenError)
    assert calls(guarded_5432) == before


# -- connections that outlive an install -------------------------------------------------


def test_psycopg2_connection_made_while_guarded_is_unguarded_after_uninstall() -> None:
    """A psycopg2 connection (and its cursor) made while guarded runs its queries
    unguarded once the guards are uninstalled: the forced-open breaker no longer rejects
    them and counts nothing more."""
    registry = registry_for_port(5432)
    uninstall = install(registry)
    conn = psycopg2.connect(DSN)
    try:
        cursor = conn.cursor()
        registry.breaker("db").force_open()
        with pytest.raises(CircuitOpenError):
            cursor.execute("SELECT 1")
        uninstall()
        before = calls(registry)
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        assert calls(registry) == before
    finally:
        uninstall()
        conn.close()


# -- every cursor method and class -------------------------------------------------------


def test_psycopg2_executemany_and_callproc_are_guarded(guarded_5432: Registry) -> None:
    """psycopg2's ``executemany`` and ``callproc`` run through the breaker: each is one
    call while closed, and rejected with an OperationalError while open."""
    conn = psycopg2.connect(DSN)
    try:
        cursor = conn.cursor()
        cursor.execute("CREATE TEMP TABLE t (x int)")
        before = calls(guarded_5432)
        cursor.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,)])
        cursor.callproc("abs", (-3,))
        assert cursor.fetchone() == (3,)
        assert calls(guarded_5432) == before + 2
        guarded_5432.breaker("db").force_open()
        with pytest.raises(psycopg2.OperationalError) as many:
            cursor.executemany("INSERT INTO t VALUES (%s)", [(3,)])
        with pytest.raises(psycopg2.OperationalError) as proc:
            cursor.callproc("abs", (-3,))
        assert isinstance(many.value, CircuitOpenError)
        assert isinstance(proc.value, CircuitOpenError)
    finally:
        conn.close()


def test_psycopg2_cursor_classes_given_any_way_are_guarded_once(guarded_5432: Registry) -> None:
    """A cursor class passed positionally (``cursor(None, RealDictCursor)``) is guarded
    and keeps its behaviour; a guarded cursor's own class passed again is used as it is,
    not subclassed a second time."""
    conn = psycopg2.connect(DSN)
    try:
        named: Any = conn.cursor(None, psycopg2.extras.RealDictCursor)
        assert isinstance(named, psycopg2.extras.RealDictCursor)
        named.execute("SELECT 1 AS one")
        assert named.fetchone() == {"one": 1}
        again = conn.cursor(cursor_factory=type(named))
        assert type(again) is type(named)
        guarded_5432.breaker("db").force_open()
        for cursor in (named, again):
            with pytest.raises(CircuitOpenError):
                cursor.execute("SELECT 1")
    finally:
        conn.close()


def test_health_checks_own_psycopg2_queries_pass_an_open_breaker() -> None:
    """A health check that queries through the application's own (guarded) psycopg2
    connection is not stopped by that database's open breaker: the check's calls bypass
    the guards, and it passes."""
    registry = Registry.from_config(
        {
            "dependencies": {
                "db": {"match": {"db.system": "postgresql", "server.port": 5432}},
                "app": {
                    "health_check": "tests.support.health_checks_helpers:psycopg2_pool_select_1"
                },
            }
        }
    )
    uninstall = install(registry)
    conn = psycopg2.connect(DSN)
    health_checks_helpers.psycopg2_pool[:] = [conn]
    try:
        registry.breaker("db").force_open()
        with pytest.raises(CircuitOpenError):  # the application's own query is rejected
            health_checks_helpers.psycopg2_pool_select_1()
        with HealthProber(registry, interval_seconds=0.05):
            deadline = time.monotonic() + 10
            while check_status(registry, "app") != "passing":
                assert time.monotonic() < deadline, registry.health().to_dict()
                time.sleep(0.02)
    finally:
        health_checks_helpers.psycopg2_pool.clear()
        conn.close()
        uninstall()


def check_status(registry: Registry, name: str) -> Any:
    entry = registry.health().to_dict()["dependencies"][name]
    return (entry.get("health_check") or {}).get("status")
