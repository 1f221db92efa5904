"""The memory cache's noted GETs, applied later, behave as its general path applied at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_resilience import _memory_cache
from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand
from tests.conftest import FakeClock


class GeneralPathOnly(MemoryCache):
    """The same cache applying every command at once (no GET noted for later)."""

    def observe(self, args: Any, result: Any) -> None:
        self._observe_general(args, result)


KEYS = st.sampled_from(["a", "b", "c", b"a"])
VALUES = st.sampled_from([b"1", b"2", "1", b"x" * (_memory_cache._PENDING_VALUE_BYTES + 1)])
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
        st.tuples(st.just("len"), st.none(), st.none()),
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
        elif operation == "len":
            answers.append((len(cache), cache.size_bytes))
        else:
            command = operation.split()[1]
            try:
                answers.append(cache.execute((command, subject, *([value] if value else []))))
            except UnsupportedCommand:
                answers.append("unsupported")
    # Every entry as kept, in LRU order (expired ones too: the clocks run alike).
    cache._settle()
    for key, item in cache._data.items():
        expiry = item.redis_expires_at
        known = expiry is None or isinstance(expiry, (int, float))
        answers.append((key, item.value, item.expires_at, expiry if known else "unknown"))
        answers.append((item.complete, item.size))
    return answers


@pytest.mark.parametrize("noted", [2, _memory_cache._PENDING_GETS])
@settings(max_examples=300)
@given(operations=OPERATIONS)
@example(operations=[("observe GET", "a", b"1"), ("advance", 4.0, None), ("observe GET", "a", "1")])
@example(
    operations=[("observe SET EX", "a", b"1"), ("advance", 20.0, None), ("observe GET", b"a", b"1")]
)
@example(
    operations=[("observe GET", "a", b"1"), ("observe GET", "b", b"2"), ("observe GET", "a", b"1")]
)
@example(
    operations=[
        ("observe GET", "a", b"1"),
        ("observe GET", "a", b"1"),
        ("advance", 4.0, None),
        ("serve TTL", "a", None),
    ]
)
def test_noted_gets_applied_later_equal_the_general_path(
    noted: int, operations: list[tuple[str, Any, Any]]
) -> None:
    """Every answer, expiry, size and the LRU order match a cache that applies every GET at
    once, whether the noted GETs are applied by what reads the cache or because ``noted``
    of them wait."""
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = MemoryCache(max_entries=2, default_ttl_seconds=30, clock=fast_clock)
    general = GeneralPathOnly(max_entries=2, default_ttl_seconds=30, clock=general_clock)
    before = _memory_cache._PENDING_GETS
    _memory_cache._PENDING_GETS = noted
    try:
        assert run(fast, fast_clock, operations) == run(general, general_clock, operations)
    finally:
        _memory_cache._PENDING_GETS = before


def test_noted_gets_are_bounded_in_number_and_size(clock: FakeClock) -> None:
    """At most ``_PENDING_GETS`` GETs wait, and a long answer never waits: the cache's memory
    stays within its bounds plus a few small answers."""
    cache = MemoryCache(clock=clock)
    for index in range(1000):
        cache.observe(("GET", f"k{index % 7}"), b"v" * 10)
        assert len(cache._pending) < _memory_cache._PENDING_GETS
    long = b"L" * (_memory_cache._PENDING_VALUE_BYTES + 1)
    waiting = len(cache._pending)
    cache.observe(("GET", "long"), long)
    assert len(cache._pending) == 0  # applied at once, the GETs before it first
    assert waiting > 0
    assert cache.execute(("GET", "long")) == long
    cache.observe(("GET", memoryview(b"view")), b"v")  # a key that may change later
    assert len(cache._pending) == 0
    assert cache.execute(("GET", "view")) == b"v"


def test_noted_gets_from_many_threads_are_applied_once_each(clock: FakeClock) -> None:
    """Threads noting GETs while others serve and write: every key ends with the last value
    its thread saw, none is lost or comes back after a later write."""
    cache = MemoryCache(max_entries=10_000, clock=clock)
    rounds, writers = 2000, 8
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)

    def note(thread: int) -> None:
        try:
            start.wait()
            for index in range(rounds):
                cache.observe(("GET", f"t{thread}:{index % 50}"), f"{index}".encode())
                if index % 97 == 0:
                    cache.observe(("DEL", f"t{thread}:gone"), 1)
                    cache.observe(("GET", f"t{thread}:gone"), b"back")
                    cache.observe(("DEL", f"t{thread}:gone"), 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def serve() -> None:
        start.wait()
        for index in range(rounds):
            cache.execute(("GET", f"t{index % writers}:{index % 50}"))

    threads = [threading.Thread(target=note, args=(n,)) for n in range(writers)]
    threads.append(threading.Thread(target=serve))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    for thread in range(writers):
        for slot in range(50):
            last = max(index for index in range(rounds) if index % 50 == slot)
            assert cache.execute(("GET", f"t{thread}:{slot}")) == f"{last}".encode()
        assert cache.execute(("GET", f"t{thread}:gone")) is None
    assert len(cache) == writers * 50
    assert not cache._pending


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
