"""The asyncpg guard and SQLAlchemy's asyncpg adapter guard on the paths around the
breaker, against the shared PostgreSQL (through a fault proxy where a connection is cut):
several hosts, DSNs asyncpg cannot parse, servers no dependency names, a cut connection,
and SQLAlchemy without asyncpg or without the adapter cursor it guards."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy
import sqlalchemy.dialects.postgresql.asyncpg as adapter
from sqlalchemy.ext.asyncio import create_async_engine

from otel_resilience import CircuitOpenError, Registry, load_config
from otel_resilience.instrumentation._install import Installer, guard_layer
from otel_resilience.instrumentation._sqlalchemy import install_sqlalchemy
from tests.support.client_servers import CountingProxy
from tests.support.guards import guarded


def registry_for(**match: Any) -> Registry:
    return load_config({"dependencies": {"db": {"match": {"db.system": "postgresql", **match}}}})


def recorded(registry: Registry) -> int:
    snapshot = registry.breaker("db").snapshot()
    return snapshot.total_successes + snapshot.total_failures


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    """A fault proxy in front of the shared PostgreSQL."""
    made = CountingProxy(5432)
    made.start()
    try:
        yield made
    finally:
        made.close()


# -- asyncpg ---------------------------------------------------------------------------------


async def test_asyncpg_connect_to_several_hosts_is_the_first_hosts_call() -> None:
    """``asyncpg.connect(host=[...], port=[...])`` belongs to the dependency of the first
    host and port (libpq's rule, as for psycopg): rejected while it is open, before any
    connection is made."""
    registry = registry_for(**{"server.address": "127.0.0.1", "server.port": 5432})
    for _ in guarded(registry):
        registry.breaker("db").force_open()
        with pytest.raises(CircuitOpenError):
            await asyncpg.connect(
                host=["127.0.0.1", "127.0.0.2"], port=[5432, 5433], user="postgres", timeout=2
            )
        registry.breaker("db").reset()
        conn = await asyncpg.connect(
            host=["127.0.0.1", "127.0.0.2"], port=[5432, 5433], user="postgres", database="test"
        )
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        assert registry.breaker("db").snapshot().total_successes == 2  # connect, fetchval


async def test_asyncpg_dsn_it_cannot_parse_gets_asyncpgs_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DSN that cannot be parsed (a broken IPv6 host) still names libpq's default server
    for the guard, which records the call once; the application gets asyncpg's own
    ValueError, not a guard's error."""
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    registry = registry_for(**{"server.address": "localhost", "server.port": 5432})
    for _ in guarded(registry):
        with pytest.raises(ValueError, match="IPv6") as error:
            await asyncpg.connect("postgresql://[::1/test", timeout=2)
    assert not isinstance(error.value, CircuitOpenError)
    assert recorded(registry) == 1


# -- SQLAlchemy on asyncpg ---------------------------------------------------------------------


async def test_async_sqlalchemy_on_asyncpg_to_an_undeclared_server_goes_straight_through() -> None:
    """An asyncio engine on asyncpg whose server no dependency names runs its statements
    unguarded: the only declared breaker, forced open, rejects none and counts nothing."""
    registry = registry_for(**{"server.port": 1})
    registry.breaker("db").force_open()
    for _ in guarded(registry):
        engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
        try:
            async with engine.connect() as connection:
                result = await connection.execute(sqlalchemy.text("SELECT 1"))
                assert result.scalar() == 1
        finally:
            await engine.dispose()
    assert recorded(registry) == 0


async def test_async_sqlalchemy_on_asyncpg_hung_statement_is_a_failure(
    proxy: CountingProxy,
) -> None:
    """A statement on a pooled asyncpg connection whose server stopped answering runs into
    asyncpg's ``command_timeout``: the application gets the timeout (SQLAlchemy passes it
    on untranslated), and with no server error in it, it is a failure of the dependency."""
    registry = registry_for(**{"server.port": proxy.port})
    for _ in guarded(registry):
        engine = create_async_engine(
            f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test",
            connect_args={"command_timeout": 0.2},
            pool_size=1,
        )
        try:
            async with engine.connect() as connection:
                assert (await connection.execute(sqlalchemy.text("SELECT 1"))).scalar() == 1
                before = registry.breaker("db").snapshot().total_failures
                proxy.blackhole()
                with pytest.raises(asyncio.TimeoutError) as error:
                    await connection.execute(sqlalchemy.text("SELECT 2"))
                assert not isinstance(error.value, CircuitOpenError)
                assert registry.breaker("db").snapshot().total_failures == before + 1
                proxy.fail()  # cut the hung connection so the pool can let it go
        finally:
            await engine.dispose()


@pytest.mark.parametrize("missing", ["asyncpg", "the adapter cursor"])
def test_sqlalchemy_guards_install_without_asyncpg_or_its_adapter_cursor(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Without asyncpg installed, or with an SQLAlchemy whose asyncpg dialect has no
    adapter cursor class, SQLAlchemy's guards still install (span bookkeeping,
    ``Engine.connect``) and the adapter is left as it is."""
    if missing == "asyncpg":
        monkeypatch.setitem(sys.modules, "asyncpg", None)
        monkeypatch.delitem(sys.modules, "otel_resilience.instrumentation._asyncpg")
    else:
        monkeypatch.delattr(adapter, "AsyncAdapt_asyncpg_cursor")
    installer = Installer(registry_for())
    install_sqlalchemy(installer)
    try:
        assert guard_layer(inspect.getattr_static(sqlalchemy.engine.Engine, "connect"))
        cursor_class: Any = getattr(adapter, "AsyncAdapt_asyncpg_cursor", None)
        if cursor_class is not None:
            method = inspect.getattr_static(cursor_class, "_prepare_and_execute")
            assert guard_layer(method) is None
    finally:
        installer.uninstall()
    assert guard_layer(inspect.getattr_static(sqlalchemy.engine.Engine, "connect")) is None
