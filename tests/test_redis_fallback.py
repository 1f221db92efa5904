"""The Redis memory fallback against a real redis-server of its own: never stale after
writes it does not model, never a partial hash served whole, writes counted and replayed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import Registry, State, load_config
from otel_resilience._memory_cache import MemoryCache
from otel_resilience.instrumentation import install
from tests.support.health_servers import RedisServer, redis_server

OPEN_SECONDS = 0.3
ERROR = "error"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as own:  # our own instance: the tests kill, pause and restart it
        yield own


@pytest.fixture
def guarded(server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Registry]:
    fallback: Any = getattr(request, "param", "memory")
    registry = load_config(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis", "server.port": server.port},
                    "breaker": {"consecutive_failures": 2, "open_seconds": OPEN_SECONDS},
                    "fallback": fallback,
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        yield registry
    finally:
        uninstall()


def client_for(server: RedisServer) -> redis.Redis:
    return redis.Redis(
        port=server.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


def raw(server: RedisServer, *args: str) -> bytes:
    """One command over a plain socket: a writer this process's cache never sees."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def served(call: Any) -> Any:
    """What the client answers while Redis is down: a value, or ERROR when rejected."""
    try:
        return call()
    except redis.exceptions.ConnectionError:
        return ERROR


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("command", "key", "stale"),
    [
        (("FLUSHALL",), "a", b"old"),
        (("FLUSHDB",), "a", b"old"),
        (("RENAME", "a", "b"), "b", b"x"),
        (("RENAME", "a", "b"), "a", b"old"),
        (("COPY", "a", "b", "REPLACE"), "b", b"x"),
        (("EVAL", "return redis.call('SET', KEYS[1], 'new')", 1, "a"), "a", b"old"),
        (("EVAL", "return redis.call('DEL', 'b')", 0), "b", b"x"),
        (("SET", "a", "new"), "a", b"old"),
        (("APPEND", "a", "+"), "a", b"old"),
        (("SETRANGE", "a", 0, "O"), "a", b"old"),
    ],
)
def test_no_stale_value_after_a_write(
    server: RedisServer, guarded: Registry, command: tuple[Any, ...], key: str, stale: bytes
) -> None:
    """After a command that changed a cached key, the next outage never serves the old
    value: it serves the new one or nothing."""
    client = client_for(server)
    client.set("a", "old")
    client.set("b", "x")
    assert (client.get("a"), client.get("b")) == (b"old", b"x")
    client.execute_command(*command)
    current = client.get(key) if command[0] in ("SET", "APPEND", "SETRANGE") else None
    server.stop()
    answer = served(lambda: client.get(key))
    assert answer != stale
    assert answer in (None, current, ERROR)


def test_msetnx_after_another_writer_deleted(server: RedisServer, guarded: Registry) -> None:
    """MSETNX that succeeded (the key was deleted by another process meanwhile) forgets
    the cached value."""
    client = client_for(server)
    client.set("a", "old")
    assert client.get("a") == b"old"
    raw(server, "DEL", "a")
    assert client.msetnx({"a": "new", "c": "1"})
    server.stop()
    assert served(lambda: client.get("a")) in (None, ERROR)


def test_hset_alone_is_not_a_whole_hash(server: RedisServer, guarded: Registry) -> None:
    """A hash written with HSET but never read whole is not served by HGETALL as complete,
    nor a field it does not know; the fields it wrote are served."""
    client = client_for(server)
    raw(server, "HSET", "user", "plan", "pro")
    client.hset("user", "name", "alice")
    server.stop()
    assert served(lambda: client.hgetall("user")) == ERROR
    assert served(lambda: client.hget("user", "plan")) == ERROR
    assert served(lambda: client.hget("user", "name")) == b"alice"


def test_writes_are_counted_as_writes(server: RedisServer, guarded: Registry) -> None:
    """Fallbacks are counted with fallback.operation: read or write."""
    client = client_for(server)
    client.set("k", "v")
    server.stop()
    assert served(lambda: client.get("k")) == b"v"  # error, read
    assert served(lambda: client.set("k", "w")) is True  # error, write
    assert guarded.breaker("cache").state is State.OPEN
    assert served(lambda: client.get("k")) == b"w"  # open, read
    pipe = client.pipeline(transaction=False)
    pipe.get("k").set("k", "z")
    assert pipe.execute() == [b"w", True]  # open, write
    counts = guarded.fallback_operation_counts()
    assert counts == {
        ("cache", "error", "read"): 1,
        ("cache", "error", "write"): 1,
        ("cache", "open", "read"): 1,
        ("cache", "open", "write"): 1,
    }


def test_sigstop_then_resume(server: RedisServer, guarded: Registry) -> None:
    """Hung Redis (SIGSTOP): a write that timed out is answered from memory and counted as a
    write; Redis applies it when it resumes, and after recovery reads come from Redis."""
    client = client_for(server)
    client.set("k", "v1")
    server.pause()
    try:
        assert client.set("k", "v2") is True  # timed out, answered from memory
        assert client.get("k") == b"v2"
        assert guarded.breaker("cache").state is State.OPEN
        counts = guarded.fallback_operation_counts()
        assert counts[("cache", "timeout", "write")] == 1
    finally:
        server.resume()
    time.sleep(OPEN_SECONDS + 0.05)
    assert client.get("k") == b"v2"  # from Redis: it applied the queued SET
    assert guarded.breaker("cache").state is State.CLOSED
    assert raw(server, "GET", "k") == b"$2\r\nv2\r\n"


def test_restart_empty_forgets_the_old_values(server: RedisServer, guarded: Registry) -> None:
    """Redis killed and restarted empty: during the outage the cache answers, but once the
    breaker has closed it has forgotten what Redis lost, so a second outage serves none of it."""
    client = client_for(server)
    client.set("k", "v")
    assert client.get("k") == b"v"
    server.stop()
    assert served(lambda: client.get("k")) == b"v"
    server.start()  # empty: no persistence
    time.sleep(OPEN_SECONDS + 0.05)
    assert client.ping()
    assert guarded.breaker("cache").state is State.CLOSED
    server.stop()
    assert served(lambda: client.get("k")) in (None, ERROR)


REPLAY = {"type": "memory", "replay_writes": True}


@pytest.mark.parametrize("guarded", [REPLAY], indirect=True)
def test_replay_in_order_after_restart(server: RedisServer, guarded: Registry) -> None:
    """With replay_writes, writes made while Redis was down reach it, in order, once the
    breaker closes (here after a restart empty); the replayed count says how many."""
    client = client_for(server)
    client.set("c", "10")
    assert client.get("c") == b"10"
    client.hgetall("h")  # read whole (empty): HSET may then serve it whole
    server.stop()
    assert served(lambda: client.set("a", "1")) is True
    assert served(lambda: client.set("a", "2")) is True
    assert guarded.breaker("cache").state is State.OPEN
    assert client.delete("a") == 1
    assert client.set("a", "3") is True
    assert client.incrby("c", 5) == 15
    assert client.hset("h", "f", "v") == 1
    assert client.expire("a", 100) is True
    pipe = client.pipeline(transaction=False)
    pipe.mset({"x": "1", "y": "2"}).get("x")
    assert pipe.execute() == [True, b"1"]
    assert client.get("a") == b"3"
    fallback = guarded["cache"].fallback
    assert isinstance(fallback, MemoryCache)
    assert fallback.journal_length == 8
    server.start()
    time.sleep(OPEN_SECONDS + 0.05)
    assert client.ping()
    wait_for(lambda: fallback.journal_length == 0)
    assert raw(server, "GET", "a") == b"$1\r\n3\r\n"
    assert raw(server, "GET", "c") == b"$1\r\n5\r\n"  # INCRBY replayed on the empty Redis
    assert raw(server, "HGET", "h", "f") == b"$1\r\nv\r\n"
    assert raw(server, "MGET", "x", "y") == b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    ttl = int(raw(server, "TTL", "a")[1:].strip())
    assert 90 < ttl <= 100
    assert fallback.replay_counts() == {"replayed": 8, "dropped": 0}
    snapshot = guarded.breaker("cache").snapshot()
    assert snapshot.state is State.CLOSED


@pytest.mark.parametrize("guarded", [REPLAY], indirect=True)
def test_replay_without_restart_keeps_newer_direct_writes_order(
    server: RedisServer, guarded: Registry
) -> None:
    """Replay goes around the guard: no replayed write is served by the fallback again or
    counted as a call of the dependency."""
    client = client_for(server)
    server.stop()
    for index in range(3):
        served(lambda index=index: client.set(f"k{index}", str(index)))
    calls_before = guarded.breaker("cache").snapshot()
    server.start()
    time.sleep(OPEN_SECONDS + 0.05)
    assert client.ping()
    fallback = guarded["cache"].fallback
    assert isinstance(fallback, MemoryCache)
    wait_for(lambda: fallback.journal_length == 0)
    after = guarded.breaker("cache").snapshot()
    assert after.total_successes == calls_before.total_successes + 1  # the PING only
    assert raw(server, "MGET", "k0", "k1", "k2") == (b"*3\r\n$1\r\n0\r\n$1\r\n1\r\n$1\r\n2\r\n")


@pytest.mark.parametrize("guarded", [REPLAY], indirect=True)
def test_a_cache_replaced_by_a_reload_still_replays(server: RedisServer, guarded: Registry) -> None:
    """A reload that changes the memory fallback's settings gives a new cache, and writes it
    serves while Redis is down still reach Redis when it is back, through the same client."""
    client = client_for(server)
    assert client.ping()  # the guard now knows how to reach this Redis for a replay
    before = guarded["cache"].fallback
    guarded.reload(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis", "server.port": server.port},
                    "breaker": {"consecutive_failures": 2, "open_seconds": OPEN_SECONDS},
                    "fallback": {**REPLAY, "max_entries": 500},
                }
            }
        }
    )
    fallback = guarded["cache"].fallback
    assert isinstance(fallback, MemoryCache)
    assert fallback is not before
    assert fallback.max_entries == 500
    server.stop()
    for value in ("1", "2"):
        assert served(lambda value=value: client.set("r", value)) is True
    assert guarded.breaker("cache").state is State.OPEN
    server.start()
    time.sleep(OPEN_SECONDS + 0.05)
    assert client.ping()
    wait_for(lambda: fallback.journal_length == 0)
    assert raw(server, "GET", "r") == b"$1\r\n2\r\n"


@pytest.mark.parametrize("guarded", [REPLAY], indirect=True)
async def test_asyncio_client_writes_are_replayed(server: RedisServer, guarded: Registry) -> None:
    """redis.asyncio: writes served while Redis was down are replayed once it is back."""
    import redis.asyncio

    client = redis.asyncio.Redis(
        port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=None
    )
    try:
        await client.ping()
        server.stop()
        for value in ("1", "2"):
            try:
                await client.set("ak", value)
            except redis.exceptions.ConnectionError:
                pytest.fail("a SET while Redis is down is answered by the memory fallback")
        server.start()
        await asyncio.sleep(OPEN_SECONDS + 0.05)
        assert await client.ping()
        fallback = guarded["cache"].fallback
        assert isinstance(fallback, MemoryCache)
        deadline = time.monotonic() + 10
        while fallback.journal_length and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert raw(server, "GET", "ak") == b"$1\r\n2\r\n"
    finally:
        await client.aclose()
