"""The memory cache's GETs refreshed without the lock behave as its general path under it."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_resilience import _memory_cache
from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand
from tests.conftest import FakeClock


class GeneralPathOnly(MemoryCache):
    """The same cache taking every command the general way, under the lock."""

    def observe(self, args: Any, result: Any) -> None:
        self._observe_general(args, result)


KEYS = st.sampled_from(["a", "b", "c", b"a"])
VALUES = st.sampled_from([b"1", b"2", "1", b"x" * 20_000])
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
    for key, item in cache._data.items():
        expiry = item.redis_expires_at
        known = expiry is None or isinstance(expiry, (int, float))
        answers.append((key, item.value, item.expires_at, expiry if known else "unknown"))
        answers.append((item.complete, item.size))
    return answers


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
def test_gets_refreshed_without_the_lock_equal_the_general_path(
    operations: list[tuple[str, Any, Any]],
) -> None:
    """Every answer, expiry, size and the LRU order match a cache that takes every GET the
    general way under its lock."""
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = MemoryCache(max_entries=2, default_ttl_seconds=30, clock=fast_clock)
    general = GeneralPathOnly(max_entries=2, default_ttl_seconds=30, clock=general_clock)
    assert run(fast, fast_clock, operations) == run(general, general_clock, operations)


def test_a_get_that_changes_nothing_takes_no_lock(clock: FakeClock) -> None:
    """A GET answering the value kept, or nothing for a key not kept, is done without the
    lock (held here by another thread); one that changes what is kept waits for it."""
    cache = MemoryCache(clock=clock)
    cache.observe(("GET", "k"), b"v")
    refreshed = threading.Event()
    with cache._lock:
        worker = threading.Thread(
            target=lambda: (
                cache.observe(("GET", "k"), b"v"),
                cache.observe(("GET", b"k"), "v"),
                cache.observe(("GET", "missing"), None),
                refreshed.set(),
                cache.observe(("GET", "k"), b"changed"),
            )
        )
        worker.start()
        assert refreshed.wait(10)
        worker.join(0.2)
        assert worker.is_alive()  # the changing GET waits for the lock
    worker.join(10)
    assert not worker.is_alive()
    assert cache.execute(("GET", "k")) == b"changed"


def test_a_get_of_a_memoryview_key_is_kept_as_read(clock: FakeClock) -> None:
    """A key that may change later (a ``memoryview``) goes the general way, as bytes."""
    cache = MemoryCache(clock=clock)
    key = bytearray(b"view")
    cache.observe(("GET", memoryview(key)), b"v")
    cache.observe(("GET", memoryview(key)), b"v")
    key[:] = b"else"
    assert cache.execute(("GET", "view")) == b"v"
    assert len(cache) == 1


def _threads(*targets: Any) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def run_one(target: Any) -> None:
        try:
            start.wait()
            target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run_one, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)


def test_gets_from_many_threads_end_with_the_last_value_each_saw(clock: FakeClock) -> None:
    """Threads reading keys (most GETs answering the value kept, refreshed without the
    lock) while another serves: every key ends with the last value its thread saw, and a
    key deleted after it was read does not come back."""
    cache = MemoryCache(max_entries=10_000, clock=clock)
    rounds, writers = 2000, 8

    def note(thread: int) -> None:
        for index in range(rounds):
            cache.observe(("GET", f"t{thread}:{index % 50}"), f"{index // 200}".encode())
            if index % 97 == 0:
                cache.observe(("DEL", f"t{thread}:gone"), 1)
                cache.observe(("GET", f"t{thread}:gone"), b"back")
                cache.observe(("GET", f"t{thread}:gone"), b"back")
                cache.observe(("DEL", f"t{thread}:gone"), 1)

    def serve() -> None:
        for index in range(rounds):
            cache.execute(("GET", f"t{index % writers}:{index % 50}"))

    _threads(*[lambda thread=thread: note(thread) for thread in range(writers)], serve)
    for thread in range(writers):
        for slot in range(50):
            last = max(index for index in range(rounds) if index % 50 == slot)
            assert cache.execute(("GET", f"t{thread}:{slot}")) == f"{last // 200}".encode()
        assert cache.execute(("GET", f"t{thread}:gone")) is None
    assert len(cache) == writers * 50


def test_refreshes_racing_evictions_keep_the_cache_within_its_bounds(clock: FakeClock) -> None:
    """Threads refreshing keys without the lock while others write new ones, so that
    entries are evicted under them: the cache stays within ``max_entries``, its byte count
    is that of the entries it holds, and each key it holds has the value last read."""
    cache = MemoryCache(max_entries=40, clock=clock)
    rounds = 3000

    def reader(thread: int) -> None:
        for index in range(rounds):
            cache.observe(("GET", f"r{thread}:{index % 30}"), f"{thread}:{index % 30}".encode())

    def writer(thread: int) -> None:
        for index in range(rounds):
            cache.observe(("SET", f"w{thread}:{index}", b"x" * (index % 40)), True)
            if index % 50 == 0:
                cache.observe(("FLUSHALL",), True)

    _threads(*[lambda n=n: reader(n) for n in range(4)], *[lambda n=n: writer(n) for n in range(2)])
    with cache._lock:
        held = dict(cache._data)
        assert len(held) <= cache.max_entries
        assert cache._bytes == sum(
            _memory_cache._size(key, item.value) for key, item in held.items()
        )
    for key, item in held.items():
        if key.startswith(b"r"):
            assert item.value == key[1:]  # r<thread>:<slot> holds <thread>:<slot>


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
