"""The memory cache's noted GETs, applied later, behave as its general path applied at once.

Each test runs against both twins in one process: the C accelerator (``_cmemory``, a
``GetNoter`` and ``apply_pending``) and the Python code (``_observe_py``,
``_apply_pending_py``). A cache takes ``_memory_cache._CMEMORY`` when it is made (``make``).
The C case skips when the module was not built, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_resilience import _memory_cache
from otel_resilience._memory_cache import MemoryCache, UnsupportedCommand
from tests.conftest import FakeClock


class GeneralPathOnly(MemoryCache):
    """The same cache applying every command at once (no GET noted for later)."""

    def observe(self, args: Any, result: Any) -> None:  # type: ignore[override]
        self._observe_general(args, result)


TWINS = ("c", "python")
both_twins = pytest.mark.parametrize("twin", TWINS)


def c_module() -> ModuleType:
    """``otel_resilience._cmemory`` (whatever ``OTEL_RESILIENCE_PURE_PYTHON`` says: these
    tests compare the twins), or a skip; under ``CI=true`` a failure, since CI builds it."""
    try:
        return importlib.import_module("otel_resilience._cmemory")
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the C accelerator _cmemory is not built: {exc}")
        pytest.skip(f"the C accelerator _cmemory is not built: {exc}")


@contextmanager
def twin_made(twin: str) -> Iterator[None]:
    """Caches made inside use ``twin``: ``c`` or ``python``."""
    before = _memory_cache._CMEMORY
    _memory_cache._CMEMORY = c_module() if twin == "c" else None
    try:
        yield
    finally:
        _memory_cache._CMEMORY = before


def make(twin: str, cls: type[MemoryCache] = MemoryCache, **kwargs: Any) -> Any:
    with twin_made(twin):
        cache = cls(**kwargs)
    noter = cache.observe
    if twin == "c" and cls.observe is MemoryCache.observe:
        assert type(noter).__name__ == "GetNoter", noter
        assert noter.cache is cache  # type: ignore[attr-defined]
    elif cls.observe is MemoryCache.observe:
        assert noter == cache._observe_py
    return cache


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


@both_twins
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
    twin: str, noted: int, operations: list[tuple[str, Any, Any]]
) -> None:
    """Every answer, expiry, size and the LRU order match a cache that applies every GET at
    once, whether the noted GETs are applied by what reads the cache or because ``noted``
    of them wait."""
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = make(twin, max_entries=2, default_ttl_seconds=30, clock=fast_clock)
    general = make(
        "python", GeneralPathOnly, max_entries=2, default_ttl_seconds=30, clock=general_clock
    )
    before = _memory_cache._PENDING_GETS
    _memory_cache._PENDING_GETS = noted
    try:
        assert run(fast, fast_clock, operations) == run(general, general_clock, operations)
    finally:
        _memory_cache._PENDING_GETS = before


@both_twins
def test_noted_gets_are_bounded_in_number_and_size(twin: str, clock: FakeClock) -> None:
    """At most ``_PENDING_GETS`` GETs wait, and a long answer never waits: the cache's memory
    stays within its bounds plus a few small answers."""
    cache = make(twin, clock=clock)
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


@both_twins
def test_noted_gets_from_many_threads_are_applied_once_each(twin: str, clock: FakeClock) -> None:
    """Threads noting GETs while others serve and write: every key ends with the last value
    its thread saw, none is lost or comes back after a later write."""
    cache = make(twin, max_entries=10_000, clock=clock)
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


@both_twins
def test_a_repeated_get_refreshes_age_and_recency(twin: str, clock: FakeClock) -> None:
    """A GET answering the value already kept makes the entry young and most recently used."""
    cache = make(twin, max_entries=2, default_ttl_seconds=30, clock=clock)
    cache.observe(("GET", "a"), b"1")
    cache.observe(("GET", "b"), b"2")
    clock.advance(20)
    cache.observe(("GET", "a"), b"1")  # the in-place refresh
    cache.observe(("GET", "c"), b"3")  # evicts the least recently used: b
    clock.advance(20)
    assert cache.execute(("GET", "a")) == b"1"  # 20 s after its refresh, within 30
    assert cache.execute(("GET", "b")) is None
    assert cache.execute(("GET", "c")) == b"3"


@both_twins
def test_a_repeated_get_keeps_a_known_redis_expiry(twin: str, clock: FakeClock) -> None:
    """A key written with an expiry still expires then, however often it is read again."""
    cache = make(twin, default_ttl_seconds=300, clock=clock)
    cache.observe(("SET", "k", "v", "EX", 10), True)
    for _ in range(3):
        clock.advance(3)
        cache.observe(("GET", "k"), b"v")
    assert cache.execute(("GET", "k")) == b"v"
    clock.advance(1)  # 10 s after the write
    assert cache.execute(("GET", "k")) is None


# -- the C twin's own hazards: each compared with the Python twin on the same steps --------


def state(cache: MemoryCache) -> list[Any]:
    """What the cache holds, in LRU order, and the GETs still waiting (nothing applied)."""
    kept = [
        (key, item.value, item.expires_at, item.redis_expires_at, item.complete, item.size)
        for key, item in cache._data.items()
    ]
    return [kept, cache._bytes, list(cache._pending), cache._away]


def outcome(step: Any) -> Any:
    """What ``step()`` returned, or the type and text of what it raised."""
    try:
        return ("returned", step())
    except Exception as exc:
        return ("raised", type(exc), str(exc))


class Str(str):
    pass


class Bytes(bytes):
    pass


class Seq:
    """A sequence that is neither a tuple nor a list (``args[0]`` through ``__getitem__``)."""

    def __init__(self, *items: Any) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class Recording(MemoryCache):
    """A cache that records what takes the general path."""

    __slots__ = ("general",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.general: list[tuple[Any, Any]] = []

    def _observe_general(self, args: Any, result: Any) -> None:
        self.general.append((args, result))
        super()._observe_general(args, result)


EXOTIC = [
    (("GET", "k"), b"v"),
    (["GET", "list"], b"v"),
    (Seq("GET", "seq"), "v"),
    (("GET", "k"), None),
    (("GET",), b"v"),
    (("GET", "k", "x"), b"v"),
    ((b"GET", "k"), b"v"),
    (("get", "k"), b"v"),
    ((Str("GET"), "sub-command"), b"v"),
    (("GET", Str("sub-key")), b"v"),
    (("GET", Bytes(b"sub-key")), b"v"),
    (("GET", "sub-result"), Bytes(b"v")),
    (("GET", "str-sub-result"), Str("v")),
    (("GET", memoryview(b"view")), b"v"),
    (("GET", 7), b"v"),
    (("GET", "int"), 5),
    (("GET", "list-result"), [b"v"]),
    (("GET", "exact-limit"), b"x" * _memory_cache._PENDING_VALUE_BYTES),
    (("GET", "over-limit"), b"x" * (_memory_cache._PENDING_VALUE_BYTES + 1)),
    (("GET", "str-limit"), "é" * _memory_cache._PENDING_VALUE_BYTES),
    (("GET", "text"), "ünïcode"),
    ((), None),
    (42, b"v"),
    (None, None),
    (("SET", "k", "v2"), True),
    (("GET", "k"), b"v2"),
    (("GET", b"k"), "v2"),
]


@both_twins
def test_exotic_commands_take_the_same_path_with_the_same_outcome(twin: str) -> None:
    """Each command, odd or not, is noted or taken by the general path exactly as the
    Python twin does (exact types only: a subclass of str or bytes is not noted), with the
    same result or exception, leaving the same notes and data."""
    reference = make("python", Recording, clock=FakeClock(), max_entries=100)
    cache = make(twin, Recording, clock=FakeClock(), max_entries=100)
    noted = []
    for args, result in EXOTIC:
        expected = outcome(lambda args=args, result=result: reference.observe(args, result))
        general = len(cache.general)
        actual = outcome(lambda args=args, result=result: cache.observe(args, result))
        assert actual == expected, args
        assert state(cache) == state(reference), args
        assert len(cache.general) == len(reference.general), args
        if actual[0] == "returned" and len(cache.general) == general:
            noted.append(args[1])
    for seen, ref_seen in zip(cache.general, reference.general, strict=True):
        assert seen[0] is ref_seen[0]
        assert seen[1] is ref_seen[1]
    # Noted: the plain GETs in a tuple, a list or another sequence, and a str subclass
    # equal to GET as the command; everything else went the general way (or raised).
    assert noted == [
        "k", "list", "seq", "k", "sub-command", "exact-limit", "str-limit", "text", "k", b"k"
    ]  # fmt: skip
    assert len(cache) == len(reference)
    assert state(cache) == state(reference)


@both_twins
def test_subclasses_of_str_and_bytes_take_the_general_path(twin: str) -> None:
    """A key or answer whose type is a subclass of str or bytes is applied at once by the
    general path, never noted; a command name that is a str subclass equal to GET is noted."""
    cache = make(twin, Recording, clock=FakeClock())
    for args, result in [
        (("GET", Str("a")), b"1"),
        (("GET", Bytes(b"b")), b"2"),
        (("GET", "c"), Bytes(b"3")),
        (("GET", "d"), Str("4")),
    ]:
        cache.observe(args, result)
        assert cache.general[-1] == (args, result)
        assert not cache._pending
    cache.observe((Str("GET"), "e"), b"5")
    assert len(cache.general) == 4
    assert [note[:2] for note in cache._pending] == [("e", b"5")]
    assert [cache.execute(("GET", key)) for key in "abcde"] == [b"1", b"2", b"3", b"4", b"5"]


@both_twins
def test_keyword_arguments_and_wrong_calls_as_the_method(twin: str) -> None:
    """``observe(args=..., result=...)`` works like the method; a wrong call raises TypeError."""
    cache = make(twin, clock=FakeClock())
    cache.observe(args=("GET", "a"), result=b"1")
    cache.observe(("GET", "b"), result=b"2")
    assert [note[:2] for note in cache._pending] == [("a", b"1"), ("b", b"2")]
    for call in (
        lambda: cache.observe(("GET", "a")),
        lambda: cache.observe(("GET", "a"), b"1", b"2"),
        lambda: cache.observe(("GET", "a"), b"1", result=b"2"),
        lambda: cache.observe(("GET", "a"), b"1", other=1),
    ):
        with pytest.raises(TypeError):
            call()
    assert len(cache._pending) == 2


@both_twins
def test_a_key_that_cannot_be_encoded_fails_as_in_python(twin: str) -> None:
    """A str key (or answer) with a lone surrogate is noted, and applying it raises
    UnicodeEncodeError as ``str.encode()`` does: the notes before it are applied, it is
    dropped, the ones after it wait for the next caller, as in the Python twin."""
    caches = {name: make(name, clock=FakeClock(), max_entries=100) for name in ("python", twin)}
    outcomes = {}
    for name, cache in caches.items():
        cache.observe(("GET", "before"), b"1")
        cache.observe(("GET", "bad\ud800"), b"2")
        cache.observe(("GET", "after"), "3")
        cache.observe(("GET", "bad value"), "\udc80")
        cache.observe(("GET", "last"), b"4")
        first = outcome(lambda cache=cache: len(cache))  # type: ignore[misc]
        middle = state(cache)
        second = outcome(lambda cache=cache: len(cache))  # type: ignore[misc]
        third = outcome(lambda cache=cache: len(cache))  # type: ignore[misc]
        outcomes[name] = (first, middle, second, third, state(cache))
    assert outcomes[twin] == outcomes["python"]
    first, middle, second, third, end = outcomes[twin]
    assert first[:2] == ("raised", UnicodeEncodeError)
    assert [note[0] for note in middle[2]] == ["after", "bad value", "last"]
    assert second[:2] == ("raised", UnicodeEncodeError)
    assert third == ("returned", 3)
    assert [key for key, *_ in end[0]] == [b"before", b"after", b"last"]


class FailingPut(MemoryCache):
    """A cache whose ``_put`` of one key raises (as a MemoryError might, anywhere)."""

    def _put(self, key: bytes, value: Any, **kwargs: Any) -> None:
        if key == b"boom":
            raise RuntimeError("no room")
        super()._put(key, value, **kwargs)


@both_twins
def test_the_notes_stay_consistent_after_an_exception_in_put(twin: str) -> None:
    """An exception while applying a note leaves the deque as the Python twin leaves it:
    the failing note gone, the later ones still waiting and applied by the next caller,
    none twice; the error reaches the caller (the guard catches it)."""
    outcomes = {}
    for name in ("python", twin):
        clock = FakeClock()
        cache = make(name, FailingPut, clock=clock, max_entries=100)
        cache.observe(("GET", "a"), b"1")
        cache.observe(("GET", "a"), b"1")  # a refresh
        clock.advance(1)
        cache.observe(("GET", "boom"), b"2")
        cache.observe(("GET", "c"), b"3")
        cache.observe(("GET", "a"), None)
        with pytest.raises(RuntimeError, match="no room"):
            cache._settle()
        middle = state(cache)
        assert not cache._lock.locked()
        for index in range(_memory_cache._PENDING_GETS - 2):  # fills up: applied by observe
            cache.observe(("GET", f"k{index % 5}"), b"v")
        outcomes[name] = (middle, state(cache), len(cache), state(cache))
    assert outcomes[twin] == outcomes["python"]
    middle, full, size, end = outcomes[twin]
    assert [note[0] for note in middle[2]] == ["c", "a"]
    assert [key for key, *_ in middle[0]] == [b"a"]
    assert full[2] == []
    assert size == 6
    assert end[2] == []


@both_twins
def test_an_exception_from_the_clock_or_settle_propagates(twin: str) -> None:
    """A clock that fails, or a failing ``_settle``, raises out of observe as in Python,
    and nothing half-noted stays behind."""

    def broken() -> float:
        raise OSError("no clock")

    cache = make(twin, clock=broken)
    with pytest.raises(OSError, match="no clock"):
        cache.observe(("GET", "a"), b"1")
    assert not cache._pending

    class FailingSettle(MemoryCache):
        def _settle(self) -> None:
            raise RuntimeError("cannot settle")

    cache = make(twin, FailingSettle, clock=FakeClock())
    for index in range(_memory_cache._PENDING_GETS - 1):
        cache.observe(("GET", f"k{index}"), b"v")
    with pytest.raises(RuntimeError, match="cannot settle"):
        cache.observe(("GET", "last"), b"v")
    assert len(cache._pending) == _memory_cache._PENDING_GETS  # noted, then settling failed


@both_twins
def test_a_changed_class_is_read_the_generic_way(twin: str) -> None:
    """The C noter reads the cache's slots in place only while its class is unchanged: an
    attribute that shadows a slot afterwards is honoured, as getattr honours it."""

    class Changing(MemoryCache):
        pass

    cache = make(twin, Changing, clock=FakeClock())
    observe = cache.observe  # taken before the class changes, as the guard does
    observe(("GET", "a"), b"1")
    assert len(cache._pending) == 1
    Changing._away = property(lambda self: True, lambda self, value: None)  # type: ignore[assignment]
    try:
        observe(("GET", "b"), b"2")  # away: the general path, which starts afresh
        assert not cache._pending
        assert [bytes(key) for key in cache._data] == [b"b"]
    finally:
        del Changing._away
    observe(("GET", "c"), b"3")
    assert len(cache._pending) == 1


@both_twins
def test_many_threads_noting_while_another_serves(twin: str) -> None:
    """Eight threads note distinct GETs (with a clock in Python, so the GIL changes hands
    inside a note), while another serves, counts and clears nothing: every GET is applied
    exactly once, in its thread's order, and nothing waits at the end."""
    lock = threading.Lock()
    ticks = [0.0]

    def clock() -> float:
        with lock:
            ticks[0] += 1e-6
            return 1000.0 + ticks[0]

    cache = make(twin, clock=clock, max_entries=1_000_000, max_bytes=1 << 30)
    writers, rounds = 8, 3000
    start = threading.Barrier(writers + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    served = [0]

    def note(thread: int) -> None:
        try:
            observe = cache.observe
            start.wait()
            for index in range(rounds):
                observe(("GET", f"t{thread}:{index}"), f"{index}".encode())
                observe(("GET", f"t{thread}:last"), f"{index}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def serve() -> None:
        try:
            start.wait()
            while not done.is_set():
                cache.execute(("GET", "t0:last"))
                len(cache)
                served[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=note, args=(n,)) for n in range(writers)]
        server = threading.Thread(target=serve)
        for thread in [*threads, server]:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        done.set()
        server.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    assert served[0] > 0
    assert len(cache) == writers * (rounds + 1)
    assert not cache._pending
    for thread in range(writers):
        assert cache.execute(("GET", f"t{thread}:last")) == f"{rounds - 1}".encode()
        for index in range(0, rounds, 97):
            assert cache.execute(("GET", f"t{thread}:{index}")) == f"{index}".encode()


class NotingPut(MemoryCache):
    """A cache whose ``_put`` of one key notes another GET, as another thread may meanwhile."""

    def _put(self, key: bytes, value: Any, **kwargs: Any) -> None:
        if key == b"trigger":
            self._pending.append(("late", b"x", self._clock()))
        super()._put(key, value, **kwargs)


@both_twins
def test_a_get_noted_while_applying_waits_for_the_next_caller(twin: str) -> None:
    """Applying takes exactly the notes there when it starts: one noted meanwhile waits."""
    cache = make(twin, NotingPut, clock=FakeClock())
    cache.observe(("GET", "trigger"), b"1")
    cache.observe(("GET", "after"), b"2")
    cache._settle()
    assert [note[:2] for note in cache._pending] == [("late", b"x")]
    assert list(cache._data) == [b"trigger", b"after"]
    assert len(cache) == 3


@both_twins
def test_noting_and_applying_leak_no_reference(twin: str) -> None:
    """The objects a note holds (its args, key, answer, time) are released once it is
    applied, on every path (refresh, new value, missing key, the general path)."""
    clock = FakeClock()
    cache = make(twin, clock=clock, max_entries=4)
    key, text_key, value, text = "k" * 30, "t" * 30, b"v" * 20, "w" * 20
    commands = [
        (("GET", key), value),  # new, then refreshed
        (("GET", text_key), text),  # str key and answer, encoded when applied
        (("GET", b"gone"), None),
        (("GET", key), b"other" * 5000),  # the general path
        (("GET", key), value),
    ]
    watched = [key, text_key, value, text, clock.now, *(args for args, _ in commands)]
    watched += [cache, clock, cache._pending, cache._data, cache._lock]
    observe = cache.observe

    def rounds(count: int) -> None:
        for _ in range(count):
            for args, result in commands:
                observe(args, result)
        cache._settle()

    rounds(100)
    before = [sys.getrefcount(obj) for obj in watched]
    rounds(1000)
    assert [sys.getrefcount(obj) for obj in watched] == before
    # The floats a refresh makes (its new expiry) are released when replaced.
    tracemalloc.start()
    try:
        rounds(1000)
        start, _ = tracemalloc.get_traced_memory()
        rounds(5000)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 20_000, end - start
