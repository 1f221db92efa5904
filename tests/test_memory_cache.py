"""The memory fallback for Redis: commands, TTL, LRU bound, write-through."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_resilience import BreakerPolicy, CircuitBreaker
from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand, redis_operation
from tests.conftest import FakeClock


def test_strings_and_expiry(clock: FakeClock) -> None:
    """SET/GET/SETEX/TTL/EXPIRE/DEL behave as Redis does, on the injected clock."""
    cache = MemoryCache(default_ttl_seconds=100, clock=clock)
    assert cache.execute(("SET", "k", "v", "EX", 10)) is True
    assert cache.execute(("GET", "k")) == b"v"
    assert cache.execute(("TTL", "k")) == 10
    assert cache.execute(("SET", "k", "w", "NX")) is None
    with pytest.raises(UnsupportedCommand):  # whether Redis has it is not known here
        cache.execute(("SET", "other", "w", "XX"))
    clock.advance(10)
    assert cache.execute(("GET", "k")) is None
    assert cache.execute(("TTL", "k")) == -2
    cache.execute(("SETEX", "s", 5, "x"))
    assert cache.execute(("EXPIRE", "s", 50)) is True
    assert cache.execute(("EXISTS", "s", "nope")) == 1
    assert cache.execute(("DEL", "s", "nope")) == 1
    assert cache.execute(("EXPIRE", "s", 5)) is False


def test_default_ttl_bounds_the_age_of_data(clock: FakeClock) -> None:
    """Entries without an expiry still vanish after default_ttl_seconds."""
    cache = MemoryCache(default_ttl_seconds=30, clock=clock)
    cache.execute(("SET", "k", "v"))
    clock.advance(29)
    assert cache.execute(("GET", "k")) == b"v"
    clock.advance(1)
    assert cache.execute(("GET", "k")) is None


def test_lru_bound(clock: FakeClock) -> None:
    """At most max_entries keys; the least recently used go first."""
    cache = MemoryCache(max_entries=3, clock=clock)
    for key in "abc":
        cache.execute(("SET", key, key))
    cache.execute(("GET", "a"))
    cache.execute(("SET", "d", "d"))
    assert len(cache) == 3
    assert cache.execute(("MGET", "a", "b", "c", "d")) == [b"a", None, b"c", b"d"]


def test_hashes_counters_and_decoding(clock: FakeClock) -> None:
    """Hash commands and counters, with decode_responses-style results."""
    cache = MemoryCache(clock=clock)
    cache.observe(("HGETALL", "h"), {b"a": b"0"})  # read whole: every field is known
    assert cache.execute(("HSET", "h", "a", 1, "b", 2)) == 1
    assert cache.execute(("HGETALL", "h"), decode=True) == {"a": "1", "b": "2"}
    assert cache.execute(("HMGET", "h", "a", "z"), decode=True) == ["1", None]
    assert cache.execute(("HDEL", "h", "a")) == 1
    assert cache.execute(("HLEN", "h")) == 1
    cache.observe(("GET", "n"), b"5")
    assert cache.execute(("INCRBY", "n", 5)) == 10
    assert cache.execute(("DECR", "n")) == 9
    assert cache.execute(("PING",)) is True
    with pytest.raises(UnsupportedCommand):
        cache.execute(("LPUSH", "l", "x"))
    with pytest.raises(UnsupportedCommand):
        cache.execute(("HGET", "n", "f"))  # WRONGTYPE


def test_write_through(clock: FakeClock) -> None:
    """Results of successful commands keep the cache current; unknown writes forget the key."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "k"), b"remote")
    cache.observe(("HGETALL", "h"), {b"f": b"v"})
    cache.observe(("INCR", "n"), 7)
    assert cache.execute(("GET", "k")) == b"remote"
    assert cache.execute(("HGET", "h", "f")) == b"v"
    assert cache.execute(("GET", "n")) == b"7"
    cache.observe(("GET", "k"), None)
    assert cache.execute(("GET", "k")) is None
    cache.observe(("APPEND", "n", "x"), 2)
    assert cache.execute(("GET", "n")) is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SET", "GET", "DEL"]),
            st.sampled_from(["a", "b", "c"]),
            st.text(max_size=3),
        ),
        max_size=40,
    )
)
def test_matches_a_dict_model(operations: list[tuple[str, str, str]]) -> None:
    """Without expiry or eviction, SET/GET/DEL agree with a plain dict."""
    cache = MemoryCache(max_entries=10)
    model: dict[str, bytes] = {}
    for command, key, value in operations:
        if command == "SET":
            assert cache.execute(("SET", key, value)) is True
            model[key] = value.encode()
        elif command == "GET":
            assert cache.execute(("GET", key)) == model.get(key)
        else:
            assert cache.execute(("DEL", key)) == int(model.pop(key, None) is not None)


def test_partial_hash_is_never_served_whole(clock: FakeClock) -> None:
    """A hash written with HSET (or read field by field) but never read whole answers only
    for the fields it knows; HGETALL, HLEN and unknown fields are refused."""
    cache = MemoryCache(clock=clock)
    cache.observe(("HSET", "h", "a", "1"), 1)
    cache.observe(("HGET", "g", "x"), b"9")
    assert cache.execute(("HGET", "h", "a")) == b"1"
    assert cache.execute(("HGET", "g", "x")) == b"9"
    for command in (("HGETALL", "h"), ("HLEN", "h"), ("HGET", "h", "b"), ("HMGET", "g", "x", "y")):
        with pytest.raises(UnsupportedCommand):
            cache.execute(command)
    cache.observe(("HGETALL", "h"), {b"a": b"1", b"b": b"2"})
    assert cache.execute(("HGETALL", "h")) == {b"a": b"1", b"b": b"2"}
    assert cache.execute(("HGET", "h", "zz")) is None  # complete: a missing field is missing
    assert cache.execute(("HSET", "fresh", "f", "v")) == 1  # served while away: partial too
    with pytest.raises(UnsupportedCommand):
        cache.execute(("HGETALL", "fresh"))


def test_unknown_counters_and_conditions_are_refused(clock: FakeClock) -> None:
    """A counter, an NX/XX condition or a TTL whose state in Redis is unknown is not made up."""
    cache = MemoryCache(clock=clock)
    for command in (("INCR", "n"), ("SET", "lock", "me", "NX"), ("SET", "k", "v", "XX")):
        with pytest.raises(UnsupportedCommand):
            cache.execute(command)
    cache.observe(("GET", "k"), b"v")
    with pytest.raises(UnsupportedCommand):
        cache.execute(("TTL", "k"))  # seen by GET: its expiry in Redis is not known
    cache.observe(("SET", "lock", "me", "NX"), True)  # happened in Redis
    assert cache.execute(("GET", "lock")) == b"me"
    assert cache.execute(("TTL", "lock")) == -1


def test_bytes_are_bounded(clock: FakeClock) -> None:
    """max_bytes bounds keys plus values: big values evict the least recently used, and a
    value bigger than the whole budget is not kept at all."""
    cache = MemoryCache(max_bytes=10_000, clock=clock)
    for index in range(10):
        cache.execute(("SET", f"k{index}", "x" * 2000))
    assert cache.size_bytes <= 10_000
    assert len(cache) == 4
    assert cache.execute(("GET", "k9")) == b"x" * 2000
    assert cache.execute(("GET", "k0")) is None
    cache.observe(("GET", "huge"), b"y" * 20_000)
    assert cache.execute(("GET", "huge")) is None
    cache.observe(("HGETALL", "h"), {b"f%d" % i: b"v" * 100 for i in range(50)})
    assert cache.size_bytes <= 10_000


@pytest.mark.parametrize(
    ("command", "gone", "kept"),
    [
        (("FLUSHALL",), ["a", "b", "h"], []),
        (("FLUSHDB", "ASYNC"), ["a", "b", "h"], []),
        (("SWAPDB", 0, 1), ["a", "b", "h"], []),
        (("RENAME", "a", "b"), ["a", "b"], ["h"]),
        (("RENAMENX", "a", "z"), ["a"], ["b", "h"]),
        (("COPY", "a", "b", "REPLACE"), ["b"], ["h"]),
        (("MSETNX", "a", "1", "h", "2"), ["a", "h"], ["b"]),
        (("EVAL", "return redis.call('SET', 'b', 'x')", 0), ["a", "b", "h"], []),
        (("EVALSHA", "abc", 1, "a"), ["a", "b", "h"], []),
        (("FCALL", "f", 0), ["a", "b", "h"], []),
        (("BITOP", "AND", "b", "a"), ["b"], ["a", "h"]),
        (("APPEND", "a", "x"), ["a"], ["b", "h"]),
        (("HINCRBY", "h", "f", 1), ["h"], ["a", "b"]),
        (("PERSIST", "a"), ["a"], ["b", "h"]),
        (("SUNIONSTORE", "b", "s1", "s2"), ["b"], ["a", "h"]),
        (("JSON.SET", "a", "$", "1"), ["a"], ["b", "h"]),
        (("SCRIPT LOAD", "return 1"), [], ["a", "b", "h"]),
        (("EVAL_RO", "return 1", 0), [], ["a", "b", "h"]),
        (("LRANGE", "a", 0, -1), [], ["a", "b", "h"]),
    ],
)
def test_unmodelled_writes_forget_what_they_touch(
    clock: FakeClock, command: tuple[object, ...], gone: list[str], kept: list[str]
) -> None:
    """A successful command the cache does not model forgets every key it may change (all
    of them for flushes and scripts); reads and administration forget nothing."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "a"), b"1")
    cache.observe(("GET", "b"), b"2")
    cache.observe(("HGETALL", "h"), {b"f": b"v"})
    cache.observe(command, 1)
    for key in gone:
        assert not cache.execute(("EXISTS", key)), key
    for key in kept:
        assert cache.execute(("EXISTS", key)), key


def test_read_or_write() -> None:
    """Commands that may change data are writes, the rest reads (for fallback.operation)."""
    assert redis_operation([("GET", "k"), ("HGETALL", "h")]) == "read"
    assert redis_operation([("GET", "k"), ("SET", "k", "v")]) == "write"
    assert redis_operation([("LPUSH", "q", "x")]) == "write"
    assert redis_operation([("PING",)]) == "read"


def test_journal_replays_in_order_and_counts(clock: FakeClock) -> None:
    """Writes served while away are journaled (reads are not) and replayed oldest first; a
    write Redis refuses is dropped and counted; a connection failure pauses the replay."""
    cache = MemoryCache(replay_writes=True, clock=clock)
    cache.serve([("SET", "a", "1"), ("GET", "a")])
    cache.serve([("SET", "a", "2")], reason="error")
    cache.serve([("DEL", "a")])
    cache.serve([("SET", "b", "3")], reason="timeout")  # may have reached Redis: not replayed
    assert cache.journal_length == 3
    sent: list[tuple[object, ...]] = []
    failures = [ConnectionError("refused")]

    def execute(*args: object) -> object:
        if failures:
            raise failures.pop()
        if args[0] == "DEL":
            raise type("ResponseError", (Exception,), {})("WRONGTYPE")
        sent.append(args)
        return True

    cache.set_replay_client(lambda: execute)
    cache.replay()
    assert sent == []
    assert cache.journal_length == 3  # paused: Redis is away again
    cache.replay()
    assert sent == [("SET", b"a", b"1"), ("SET", b"a", b"2")]
    assert cache.journal_length == 0
    assert cache.replay_counts() == {"replayed": 2, "dropped": 2}


def test_full_journal_drops_the_newest(clock: FakeClock) -> None:
    """When the journal is full, later writes are still served but not journaled: dropped."""
    cache = MemoryCache(replay_writes=True, max_replay_writes=2, clock=clock)
    for value in "123":
        assert cache.serve([("SET", "k", value)]) == [True]
    assert cache.execute(("GET", "k")) == b"3"
    assert cache.journal_length == 2
    assert cache.replay_counts() == {"replayed": 0, "dropped": 1}


def test_recovery_empties_the_cache(clock: FakeClock) -> None:
    """When the breaker closes after an outage, what was cached before is forgotten: Redis
    may have changed, or restarted empty, meanwhile."""
    cache = MemoryCache(clock=clock)
    breaker = CircuitBreaker(
        "cache", BreakerPolicy(consecutive_failures=1, open_seconds=1), clock=clock
    )
    cache.bind_breaker(breaker)
    cache.bind_breaker(breaker)  # once only
    cache.observe(("GET", "k"), b"v")
    breaker.record_failure()
    assert cache.execute(("GET", "k")) == b"v"
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success()
    assert cache.execute(("GET", "k")) is None
    assert len(cache) == 0


def test_pipeline_served_whole_or_not_at_all(clock: FakeClock) -> None:
    """When one command of a pipeline cannot be answered, the writes before it are undone."""
    cache = MemoryCache(replay_writes=True, clock=clock)
    cache.observe(("GET", "k"), b"old")
    cache.observe(("HSET", "h", "f", "v"), 1)  # partial hashes
    cache.observe(("HSET", "h2", "f", "v"), 1)
    with pytest.raises(UnsupportedCommand):
        cache.serve([("SET", "k", "new"), ("DEL", "h"), ("SET", "n", "1"), ("HGETALL", "h2")])
    assert cache.execute(("GET", "k")) == b"old"
    assert cache.execute(("HGET", "h", "f")) == b"v"
    assert cache.execute(("GET", "n")) is None
    assert cache.journal_length == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_entries": 0}, "max_entries must be >= 1, got 0"),
        ({"default_ttl_seconds": 0}, "default_ttl_seconds must be > 0, got 0"),
        ({"max_bytes": 0}, "max_bytes must be >= 1, got 0"),
        ({"max_replay_writes": 0}, "max_replay_writes must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_refused_naming_them(arguments: dict[str, int], message: str) -> None:
    """Each bound of the cache refuses a value out of range, naming it and the value."""
    with pytest.raises(ValueError, match=message):
        MemoryCache(**arguments)  # type: ignore[arg-type]


def test_called_as_a_fallback_it_answers_the_command(clock: FakeClock) -> None:
    """Called as a fallback, ``cache(command, *args)`` answers from memory, decoded when the
    client decodes responses; clear() forgets everything; its repr shows its bounds."""
    cache = MemoryCache(max_entries=5, default_ttl_seconds=60, replay_writes=True, clock=clock)
    cache.observe(("GET", "k"), b"v")
    assert cache("GET", "k") == b"v"
    assert cache("GET", "k", decode_responses=True) == "v"
    assert repr(cache) == f"memory (max 5 entries, {64 << 20} bytes, ttl 60s, replay_writes)"
    cache.clear()
    assert len(cache) == 0
    assert cache.size_bytes == 0
    assert cache("GET", "k") is None


def test_arguments_are_encoded_as_redis_py_does(clock: FakeClock) -> None:
    """Keys and values given as memoryview, int or float are stored as redis-py sends them;
    a bool, which redis-py refuses, is refused too."""
    cache = MemoryCache(clock=clock)
    cache.execute(("SET", memoryview(b"k"), 1.5))
    cache.execute(("SET", "n", 7))
    assert cache.execute(("MGET", "k", "n")) == [b"1.5", b"7"]
    with pytest.raises(UnsupportedCommand, match="bool"):
        cache.execute(("SET", "k", True))


def test_a_write_it_cannot_read_makes_it_forget_everything(clock: FakeClock) -> None:
    """A successful write whose arguments cannot be encoded (what it changed is unknown)
    empties the cache; a read with such arguments forgets nothing."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "a"), b"1")
    cache.observe(("EXISTS", True), 0)
    assert cache.execute(("GET", "a")) == b"1"
    cache.observe(("SET", "b", True), True)
    assert cache.execute(("GET", "a")) is None


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (("GET", "h"), "WRONGTYPE"),
        (("HGET", "s", "f"), "WRONGTYPE"),
        (("MSET", "a", "1", "b"), "MSET takes key value pairs"),
        (("HSET", "h", "f"), "HSET takes a key and field value pairs"),
        (("SET", "s", "v", "KEEPTTL"), "SET option KEEPTTL"),
        (("INCR", "nothing"), "the counter's value in Redis is not known here"),
        ((), "empty command"),
    ],
)
def test_what_it_cannot_answer_is_refused(
    clock: FakeClock, command: tuple[object, ...], reason: str
) -> None:
    """A command of the wrong type for its key, with malformed arguments, or about data the
    cache does not know is refused (the caller then gets the usual error), never guessed."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "s"), b"v")
    cache.observe(("HGETALL", "h"), {b"f": b"v"})
    with pytest.raises(UnsupportedCommand, match=reason):
        cache.execute(command)
    assert cache.execute(("HGET", "missing", "f")) is None
    assert cache.execute(("HDEL", "missing", "f")) == 0


def test_write_through_follows_what_redis_answered(clock: FakeClock) -> None:
    """Kept values follow Redis's answers: MGET refreshes and forgets, HMGET learns fields,
    an EXPIRE Redis answered 0 forgets the key, a SET NX that did not happen changes
    nothing, and a field gone from Redis is forgotten."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "gone"), b"1")
    cache.observe(("MGET", "a", "gone"), [b"A", None])
    assert cache.execute(("GET", "a")) == b"A"
    assert cache.execute(("EXISTS", "gone")) == 0
    cache.observe(("HMGET", "h", "f", "g"), [b"1", None])
    assert cache.execute(("HGET", "h", "f")) == b"1"
    cache.observe(("HGET", "h", "f"), None)
    assert cache.execute(("EXISTS", "h")) == 0  # no field left that is known
    cache.observe(("GET", "e"), b"v")
    cache.observe(("EXPIRE", "e", 10), 0)
    assert cache.execute(("EXISTS", "e")) == 0
    cache.observe(("GET", "k"), b"kept")
    cache.observe(("SET", "k", "other", "NX"), None)
    assert cache.execute(("GET", "k")) == b"kept"


def test_write_through_of_odd_answers(clock: FakeClock) -> None:
    """A field read from a key kept as a string replaces it with a partial hash; a successful
    write with an option the cache does not model forgets that key; an expired counter
    is not incremented from memory; HEXISTS answers from known fields."""
    cache = MemoryCache(default_ttl_seconds=10, clock=clock)
    cache.observe(("GET", "k"), b"string")
    cache.observe(("HGET", "k", "f"), b"1")
    assert cache.execute(("HEXISTS", "k", "f")) is True
    with pytest.raises(UnsupportedCommand, match="only some fields"):
        cache.execute(("HGETALL", "k"))  # one field known, not the whole hash
    cache.observe(("GET", "s"), b"v")
    cache.observe(("SET", "s", "w", "KEEPTTL"), True)
    assert cache.execute(("EXISTS", "s")) == 0
    cache.observe(("INCR", "n"), 5)
    assert cache.execute(("INCR", "n")) == 6
    clock.advance(10)
    with pytest.raises(UnsupportedCommand, match="counter"):
        cache.execute(("INCR", "n"))
    cache.observe((), None)  # nothing to learn from an empty command


def test_replay_without_a_way_to_redis_keeps_the_journal(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With no replay client yet, or one that cannot be made, replay keeps the journaled
    writes for the next recovery; the second case logs a warning."""
    cache = MemoryCache(replay_writes=True, clock=clock)
    cache.serve([("SET", "a", "1")])
    cache.replay()
    assert cache.journal_length == 1

    def unreachable() -> Any:
        raise ConnectionError("pool closed")

    cache.set_replay_client(unreachable)
    cache.replay()
    assert cache.journal_length == 1
    assert cache.replay_counts() == {"replayed": 0, "dropped": 0}
    assert "could not replay" in caplog.text
