"""The redis-py guards on the paths around the breaker: pipelines and asyncio clients of
a Redis no dependency names (the shared Redis, read-only commands), and a Redis reached
over a unix socket (an own redis-server)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import CircuitOpenError, Registry, load_config
from otel_resilience._guard import DEPENDENCY_ATTRIBUTE
from otel_resilience._health import health_monitor
from tests.support.guards import guarded
from tests.support.health_servers import need_tool


def registry_for(**match: Any) -> Registry:
    return load_config({"dependencies": {"cache": {"match": {"db.system": "redis", **match}}}})


def totals(registry: Registry) -> tuple[int, int, int]:
    snapshot = registry.breaker("cache").snapshot()
    return snapshot.total_successes, snapshot.total_failures, snapshot.total_rejected


@pytest.fixture
def elsewhere() -> Iterator[Registry]:
    """Guards with one dependency, ``cache``, on a port no Redis listens on, forced open:
    a command the guard took for ``cache`` would be rejected."""
    registry = registry_for(**{"server.port": 1})
    registry.breaker("cache").force_open()
    yield from guarded(registry)


def test_pipeline_to_an_undeclared_redis_goes_straight_through(elsewhere: Registry) -> None:
    """A sync pipeline to a Redis no dependency names runs, with the only declared breaker
    forced open, and counts nowhere."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        pipeline = client.pipeline()
        pipeline.ping()
        pipeline.exists("otel-resilience-test:absent")
        assert pipeline.execute() == [True, 0]
    finally:
        client.close()
    assert totals(elsewhere) == (0, 0, 0)


async def test_asyncio_commands_and_pipelines_to_an_undeclared_redis_go_straight_through(
    elsewhere: Registry,
) -> None:
    """asyncio commands and pipelines to a Redis no dependency names run, with the only
    declared breaker forced open, and count nowhere."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        assert await client.ping() is True
        pipeline = client.pipeline()
        pipeline.ping()
        pipeline.exists("otel-resilience-test:absent")
        assert await pipeline.execute() == [True, 0]
    finally:
        await client.aclose()
    assert totals(elsewhere) == (0, 0, 0)


@pytest.fixture
def socket_redis(tmp_path: Path) -> Iterator[Path]:
    """An own redis-server listening on a unix socket only."""
    socket = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [
            need_tool("redis-server"),
            *("--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not listen"
            time.sleep(0.02)
        yield socket
    finally:
        process.kill()
        process.wait(5)


def test_redis_on_a_unix_socket_is_guarded_by_its_socket_path(socket_redis: Path) -> None:
    """A client on a unix socket belongs to the dependency matching the socket path: its
    commands count there, its health check learns the socket, and while the breaker is
    open the commands are rejected before any I/O."""
    registry = registry_for(**{"server.address": str(socket_redis)})
    for _ in guarded(registry):
        client = redis.Redis(unix_socket_path=str(socket_redis), socket_timeout=2)
        try:
            assert client.set("k", "v") is True
            assert totals(registry) == (1, 0, 0)
            learned = health_monitor(registry).addresses.get("cache")
            assert learned is not None
            assert (learned.host, learned.scheme) == (str(socket_redis), "unix")
            registry.breaker("cache").force_open()
            with pytest.raises(redis.exceptions.ConnectionError) as error:
                client.get("k")
            assert isinstance(error.value, CircuitOpenError)
        finally:
            client.close()


def test_health_checks_own_redis_commands_pass_an_open_breaker() -> None:
    """A health check that pings through the application's own (guarded) redis-py client
    is not stopped by that Redis's open breaker: the check's commands bypass the guard,
    and it passes, while the application's own command is rejected."""
    from otel_resilience import HealthProber
    from otel_resilience.instrumentation import install
    from tests.support import health_checks_helpers

    registry = Registry.from_config(
        {
            "dependencies": {
                "cache": {"match": {"db.system": "redis", "server.port": 6379}},
                "app": {"health_check": "tests.support.health_checks_helpers:redis_client_ping"},
            }
        }
    )
    uninstall = install(registry)
    client = redis.Redis(port=6379, socket_timeout=5)
    health_checks_helpers.redis_clients[:] = [client]
    try:
        registry.breaker("cache").force_open()
        with pytest.raises(CircuitOpenError):
            health_checks_helpers.redis_client_ping()
        with HealthProber(registry, interval_seconds=0.05):
            deadline = time.monotonic() + 10
            while (
                registry.health()
                .to_dict()["dependencies"]["app"]
                .get("health_check", {})
                .get("status")
                != "passing"
            ):
                assert time.monotonic() < deadline, registry.health().to_dict()
                time.sleep(0.02)
    finally:
        health_checks_helpers.redis_clients.clear()
        client.close()
        uninstall()


def test_sync_commands_on_a_closed_breaker_count_once_each_and_fail_into_it() -> None:
    """The command layer takes a closed breaker's calls itself once the pool keeps its
    dependency: successes count once each, failures there open the breaker, and the next
    command is rejected before any I/O, then the guards of a second install count alone."""
    registry = load_config(
        {
            "dependencies": {
                "cache": {"match": {"db.system": "redis", "server.port": 6379}},
                "down": {
                    "match": {"db.system": "redis", "server.port": 1},
                    "breaker": {"consecutive_failures": 2, "open_seconds": 60},
                },
            }
        }
    )
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    unreachable = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        for _ in guarded(registry):
            for _ in range(3):
                assert client.get("otel-resilience-test:absent") is None
            for _ in range(2):
                with pytest.raises(redis.exceptions.ConnectionError) as refused:
                    unreachable.get("k")
                assert not isinstance(refused.value, CircuitOpenError)
            with pytest.raises(CircuitOpenError):
                unreachable.get("k")
        assert totals(registry) == (3, 0, 0)
        down = registry.breaker("down").snapshot()
        assert (down.total_failures, down.total_rejected) == (2, 1)
        again = registry_for(**{"server.port": 6379})
        for _ in guarded(again):
            client.get("otel-resilience-test:absent")
        assert totals(again) == (1, 0, 0)
        assert totals(registry) == (3, 0, 0)
    finally:
        client.close()
        unreachable.close()


class _ForgetfulPool(redis.ConnectionPool):
    """A pool on which nothing can be kept (as one with ``__slots__``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == DEPENDENCY_ATTRIBUTE:
            raise AttributeError(name)
        super().__setattr__(name, value)


def test_a_pool_that_keeps_no_dependency_is_guarded_on_every_command() -> None:
    """Each command looks the dependency up again: counted while closed, rejected open."""
    registry = registry_for(**{"server.port": 6379})
    pool = _ForgetfulPool(host="127.0.0.1", port=6379, socket_timeout=2)
    client = redis.Redis(connection_pool=pool)
    try:
        for _ in guarded(registry):
            for _ in range(3):
                client.get("otel-resilience-test:absent")
            registry.breaker("cache").force_open()
            with pytest.raises(CircuitOpenError):
                client.get("otel-resilience-test:absent")
        assert not hasattr(pool, DEPENDENCY_ATTRIBUTE)
        assert totals(registry) == (3, 0, 1)
    finally:
        client.close()
