"""The memory cache's in-place refresh of a repeated GET behaves as its general path."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand
from tests.conftest import FakeClock


class GeneralPathOnly(MemoryCache):
    """The same cache with the in-place refresh switched off."""

    def observe(self, args: Any, result: Any) -> None:
        self._observe_general(args, result)


KEYS = st.sampled_from(["a", "b", "c", b"a"])
VALUES = st.sampled_from([b"1", b"2", "1"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("observe GET"), KEYS, VALUES),
        st.tuples(st.just("observe GET missing"), KEYS, st.none()),
        st.tuples(st.just("observe SET EX"), KEYS, VALUES),
        st.tuples(st.just("observe DEL"), KEYS, st.none()),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 4.0, 20.0]), st.none()),
        st.tuples(st.just("serve GET"), KEYS, st.none()),
        st.tuples(st.just("serve TTL"), KEYS, st.none()),
        st.tuples(st.just("serve SET"), KEYS, VALUES),
    ),
    max_size=40,
)


def run(cache: MemoryCache, clock: FakeClock, operations: list[tuple[str, Any, Any]]) -> list[Any]:
    answers: list[Any] = []
    for operation, subject, value in operations:
        if operation == "observe GET":
            cache.observe(("GET", subject), value)
        elif operation == "observe GET missing":
            cache.observe(("GET", subject), None)
        elif operation == "observe SET EX":
            cache.observe(("SET", subject, value, "EX", 10), True)
        elif operation == "observe DEL":
            cache.observe(("DEL", subject), 1)
        elif operation == "advance":
            clock.advance(subject)
        else:
            command = operation.split()[1]
            try:
                answers.append(cache.execute((command, subject, *([value] if value else []))))
            except UnsupportedCommand:
                answers.append("unsupported")
    # Every entry as kept, in LRU order (expired ones too: the clocks run alike).
    for key, item in cache._data.items():
        expiry = item.redis_expires_at
        known = expiry is None or isinstance(expiry, (int, float))
        answers.append((key, item.value, item.expires_at, expiry if known else "unknown"))
        answers.append((item.complete, item.size))
    return answers


@settings(max_examples=400)
@given(OPERATIONS)
@example([("observe GET", "a", b"1"), ("advance", 4.0, None), ("observe GET", "a", "1")])
@example([("observe SET EX", "a", b"1"), ("advance", 20.0, None), ("observe GET", b"a", b"1")])
@example([("observe GET", "a", b"1"), ("observe GET", "b", b"2"), ("observe GET", "a", b"1")])
def test_refreshing_a_repeated_get_in_place_equals_the_general_path(
    operations: list[tuple[str, Any, Any]],
) -> None:
    """Every answer, expiry and the LRU order match a cache that always takes the general path."""
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = MemoryCache(max_entries=2, default_ttl_seconds=30, clock=fast_clock)
    general = GeneralPathOnly(max_entries=2, default_ttl_seconds=30, clock=general_clock)
    assert run(fast, fast_clock, operations) == run(general, general_clock, operations)


def test_a_repeated_get_refreshes_age_and_recency(clock: FakeClock) -> None:
    """A GET answering the value already kept makes the entry young and most recently used."""
    cache = MemoryCache(max_entries=2, default_ttl_seconds=30, clock=clock)
    cache.observe(("GET", "a"), b"1")
    cache.observe(("GET", "b"), b"2")
    clock.advance(20)
    cache.observe(("GET", "a"), b"1")  # the in-place refresh
    cache.observe(("GET", "c"), b"3")  # evicts the least recently used: b
    clock.advance(20)
    assert cache.execute(("GET", "a")) == b"1"  # 20 s after its refresh, within 30
    assert cache.execute(("GET", "b")) is None
    assert cache.execute(("GET", "c")) == b"3"


def test_a_repeated_get_keeps_a_known_redis_expiry(clock: FakeClock) -> None:
    """A key written with an expiry still expires then, however often it is read again."""
    cache = MemoryCache(default_ttl_seconds=300, clock=clock)
    cache.observe(("SET", "k", "v", "EX", 10), True)
    for _ in range(3):
        clock.advance(3)
        cache.observe(("GET", "k"), b"v")
    assert cache.execute(("GET", "k")) == b"v"
    clock.advance(1)  # 10 s after the write
    assert cache.execute(("GET", "k")) is None
