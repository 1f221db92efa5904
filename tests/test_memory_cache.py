"""The memory fallback for Redis: commands, TTL, LRU bound, write-through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand
from tests.conftest import FakeClock


def test_strings_and_expiry(clock: FakeClock) -> None:
    """SET/GET/SETEX/TTL/EXPIRE/DEL behave as Redis does, on the injected clock."""
    cache = MemoryCache(default_ttl_seconds=100, clock=clock)
    assert cache.execute(("SET", "k", "v", "EX", 10)) is True
    assert cache.execute(("GET", "k")) == b"v"
    assert cache.execute(("TTL", "k")) == 10
    assert cache.execute(("SET", "k", "w", "NX")) is None
    assert cache.execute(("SET", "other", "w", "XX")) is None
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
    assert cache.execute(("HSET", "h", "a", 1, "b", 2)) == 2
    assert cache.execute(("HGETALL", "h"), decode=True) == {"a": "1", "b": "2"}
    assert cache.execute(("HMGET", "h", "a", "z"), decode=True) == ["1", None]
    assert cache.execute(("HDEL", "h", "a")) == 1
    assert cache.execute(("HLEN", "h")) == 1
    assert cache.execute(("INCRBY", "n", 5)) == 5
    assert cache.execute(("DECR", "n")) == 4
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
