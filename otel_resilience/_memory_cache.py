"""The ``memory`` fallback for Redis: a bounded, in-process TTL + LRU cache.

While Redis is up, the Redis guard shows this cache each successful command and its
result (write-through), so it holds what this process last read or wrote; any other
command that may change data forgets what it may have touched (the key, both keys of a
RENAME or COPY, or everything for FLUSHALL, FLUSHDB, SWAPDB, SELECT and scripts). While
the Redis breaker is open, the common string, hash and expiry commands are served from it
(docs/clients.md says exactly how): reads return the last value seen, and a hash is
served whole only when it was read whole. Writes change this process's copy; with
``replay_writes`` they are also journaled (bounded) and replayed to Redis, in order, once
the breaker closes. When the breaker closes the cache is emptied, since Redis may have
changed (or restarted empty) during the outage. Commands it cannot answer truthfully are
rejected as if there were no fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.context import attach, detach, set_value

from ._sdk import SUPPRESS_INSTRUMENTATION_KEY

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker, State

__all__ = ["MemoryCache", "UnsupportedCommand", "redis_operation"]

_log = logging.getLogger(__name__)


class UnsupportedCommand(LookupError):
    """The memory fallback cannot answer this command (truthfully)."""


Value = bytes | dict[bytes, bytes]
_UNKNOWN: Any = object()  # a key's Redis expiry when this process never saw it
_ITEM_OVERHEAD = 64  # bytes counted per key on top of its key and value bytes
_FIELD_OVERHEAD = 16


class _Item:
    __slots__ = ("complete", "expires_at", "redis_expires_at", "size", "value")

    def __init__(
        self,
        value: Value,
        expires_at: float,
        redis_expires_at: Any,
        complete: bool,
        size: int,
    ) -> None:
        self.value = value
        self.expires_at = expires_at  # the cache's own bound on the age of the data
        self.redis_expires_at = redis_expires_at  # None: persistent; _UNKNOWN: not seen
        self.complete = complete  # False for a hash of which only some fields are known
        self.size = size


def _b(value: Any) -> bytes:
    """Encode an argument the way redis-py does."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("redis-py refuses bool arguments")
    return repr(value).encode() if isinstance(value, float) else str(value).encode()


def _decode(value: Any, decode: bool) -> Any:
    if not decode:
        return value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {k.decode(): v.decode() for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(item, decode) for item in value]
    return value


def _name(args: Sequence[Any]) -> str:
    """The command's name, upper case (``"SCRIPT LOAD"`` gives ``SCRIPT``)."""
    first = args[0]
    text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return text.split(" ", 1)[0].upper()


def _size(key: bytes, value: Value) -> int:
    if isinstance(value, bytes):
        return _ITEM_OVERHEAD + len(key) + len(value)
    return (
        _ITEM_OVERHEAD + len(key) + sum(len(f) + len(v) + _FIELD_OVERHEAD for f, v in value.items())
    )


class MemoryCache:
    """A bounded key-value cache speaking a subset of Redis (strings, hashes, expiry).

    ``max_entries`` and ``max_bytes`` bound memory (least recently used keys go first);
    every entry also expires ``default_ttl_seconds`` after it was last written, or at its
    Redis expiry if sooner, so an outage is served recent data, never data of unbounded
    age. With ``replay_writes``, writes served while Redis is away are journaled (at most
    ``max_replay_writes`` of them, and ``max_bytes`` of arguments) and replayed in order
    when the breaker closes.
    """

    # Slots: the guard shows this cache every GET that worked (``observe``), and between
    # two real calls each object it reads costs a cache miss; an attribute read from the
    # instance itself touches less memory than one through its ``__dict__``.
    __slots__ = (
        "_away",
        "_bound",
        "_bytes",
        "_clock",
        "_data",
        "_dropped",
        "_journal",
        "_journal_bytes",
        "_lock",
        "_replay_client",
        "_replayed",
        "_replaying",
        "default_ttl_seconds",
        "max_bytes",
        "max_entries",
        "max_replay_writes",
        "replay_writes",
    )

    observes_commands = True
    """Guards hand this cache each command that worked, with its result (``observe``):
    ``Client(observes_fallback=True)`` in ``_guard``."""

    def __init__(
        self,
        max_entries: int = 10_000,
        default_ttl_seconds: float = 300.0,
        *,
        max_bytes: int = 64 << 20,
        replay_writes: bool = False,
        max_replay_writes: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        if not default_ttl_seconds > 0:
            raise ValueError(f"default_ttl_seconds must be > 0, got {default_ttl_seconds!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        if max_replay_writes < 1:
            raise ValueError(f"max_replay_writes must be >= 1, got {max_replay_writes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.default_ttl_seconds = default_ttl_seconds
        self.replay_writes = replay_writes
        self.max_replay_writes = max_replay_writes
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, _Item] = OrderedDict()
        self._bytes = 0
        self._away = False  # served while Redis was away, and not answered by it since
        # The replay journal: writes served while Redis was away, oldest first.
        self._journal: deque[tuple[bytes, ...]] = deque()
        self._journal_bytes = 0
        self._replayed = 0
        self._dropped = 0
        self._replay_client: Callable[[], Callable[..., Any]] | None = None
        self._replaying = False
        self._bound: list[CircuitBreaker] = []

    def __repr__(self) -> str:
        replay = ", replay_writes" if self.replay_writes else ""
        return (
            f"memory (max {self.max_entries} entries, {self.max_bytes} bytes, "
            f"ttl {self.default_ttl_seconds:g}s{replay})"
        )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes of keys and values held (as counted against ``max_bytes``)."""
        return self._bytes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As a fallback: ``cache(command, *args)`` answers a Redis command from memory."""
        return self.execute(args, decode=bool(kwargs.get("decode_responses", False)))

    def clear(self) -> None:
        with self._lock:
            self._forget_all()

    def _forget_all(self) -> None:
        self._data.clear()
        self._bytes = 0
        self._away = False

    # -- storage -------------------------------------------------------------------

    def _get(self, key: bytes) -> _Item | None:
        item = self._data.get(key)
        if item is None:
            return None
        now = self._clock()
        redis_expiry = item.redis_expires_at
        if now >= item.expires_at or (
            redis_expiry is not None and redis_expiry is not _UNKNOWN and now >= redis_expiry
        ):
            self._pop(key)
            return None
        self._data.move_to_end(key)
        return item

    def _pop(self, key: bytes) -> _Item | None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item.size
        return item

    def _put(
        self,
        key: bytes,
        value: Value,
        *,
        redis_ttl: Any = _UNKNOWN,
        complete: bool = True,
    ) -> None:
        """Keep ``value``; ``redis_ttl``: seconds, None (persistent) or ``_UNKNOWN``."""
        now = self._clock()
        self._pop(key)
        size = _size(key, value)
        if size > self.max_bytes:
            return  # too big to keep: the key is simply not cached
        redis_expires_at = (
            redis_ttl if redis_ttl is None or redis_ttl is _UNKNOWN else now + redis_ttl
        )
        self._data[key] = _Item(
            value, now + self.default_ttl_seconds, redis_expires_at, complete, size
        )
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._data.popitem(last=False)
            self._bytes -= evicted.size

    def _resize(self, key: bytes, item: _Item) -> None:
        """Recount ``item`` after fields were removed from its hash in place (HDEL): it
        only shrinks, so nothing needs evicting."""
        size = _size(key, item.value)
        self._bytes += size - item.size
        item.size = size

    def _string(self, key: bytes) -> bytes | None:
        item = self._get(key)
        if item is None:
            return None
        if not isinstance(item.value, bytes):
            raise UnsupportedCommand("WRONGTYPE in the memory fallback")
        return item.value

    def _hash(self, key: bytes, *, whole: bool = False) -> _Item | None:
        """The hash at ``key``; with ``whole``, refused unless every field is known."""
        item = self._get(key)
        if item is None:
            return None
        if not isinstance(item.value, dict):
            raise UnsupportedCommand("WRONGTYPE in the memory fallback")
        if whole and not item.complete:
            raise UnsupportedCommand("only some fields of this hash are known")
        return item

    def _field(self, key: bytes, field: bytes) -> bytes | None:
        item = self._hash(key)
        if item is None:
            return None
        assert isinstance(item.value, dict)
        if field in item.value:
            return item.value[field]
        if not item.complete:
            raise UnsupportedCommand("this field of the hash is not known")
        return None

    # -- serving commands while Redis is away --------------------------------------

    def execute(self, args: Sequence[Any], *, decode: bool = False) -> Any:
        """The result redis-py would return for command ``args`` (bytes unless ``decode``)."""
        command, rest = _parse(args)
        with self._lock:
            return self._run(command, rest, decode)

    def _run(self, command: str, rest: list[bytes], decode: bool) -> Any:
        try:
            return _decode(_COMMANDS[command](self, rest), decode)
        except (ValueError, IndexError) as exc:
            raise UnsupportedCommand(f"{command}: {exc}") from None

    def serve(
        self, commands: Sequence[Sequence[Any]], *, decode: bool = False, reason: str = "open"
    ) -> list[Any]:
        """Answer ``commands`` (a pipeline, or one) while Redis is away, all or none: when
        one cannot be answered, the writes before it are undone and none is answered.

        Writes among them are journaled for replay (with ``replay_writes``), except after
        a timeout: a timed-out write may still reach Redis, and replaying it could apply
        it twice, so it is counted as dropped instead.
        """
        # Redis could not be reached: what is cached may be out of date once it answers
        # again (it may have restarted empty, or others wrote meanwhile).
        self._away = True
        parsed = [_parse(args) for args in commands]
        with self._lock:
            saved: dict[bytes, _Item | None] = {}
            try:
                results = []
                for command, rest in parsed:
                    for key in _written_keys(command, rest):
                        if key not in saved:
                            saved[key] = _copy(self._data.get(key))
                    results.append(self._run(command, rest, decode))
            except UnsupportedCommand:
                for key, item in saved.items():
                    self._pop(key)
                    if item is not None:
                        self._data[key] = item
                        self._bytes += item.size
                raise
        if self.replay_writes:
            for args, (command, _) in zip(commands, parsed, strict=True):
                if command in _WRITES:
                    self._journal_write(args, replayable=reason != "timeout")
        return results

    def _journal_write(self, args: Sequence[Any], *, replayable: bool) -> None:
        entry = tuple(_b(a) for a in args)  # serve() has parsed them: they encode
        size = sum(len(a) for a in entry)
        with self._lock:
            full = (
                len(self._journal) >= self.max_replay_writes
                or self._journal_bytes + size > self.max_bytes
            )
            if not replayable or full:
                self._dropped += 1
                return
            self._journal.append(entry)
            self._journal_bytes += size

    # -- write-through while Redis is up --------------------------------------------

    def observe(self, args: Sequence[Any], result: Any) -> None:
        """Keep what a successful command read or wrote; forget what it may have changed.

        A GET (the hot case of a read-mostly cache: it runs for every one) that answers the
        value already kept, or answers nothing for a key not kept, changes nothing but the
        entry's age and recency, and is done here without the lock: the entry is made
        young and the most recently used, a known Redis expiry keeping its deadline, as
        ``_observe`` does it. Each step is one operation that another thread cannot split
        (a read of the dict, a store of an attribute, ``move_to_end``); a thread holding
        the lock may meanwhile drop or replace the entry, and then this refresh touches an
        entry no longer kept, or finds the key gone (KeyError), and changes nothing. It
        never adds an entry or changes a size, so the cache stays within its bounds. Every
        other command, and a GET that changes what is kept, goes the general way under the
        lock (``_observe_general``); the two leave the same entries, expiries, sizes and
        LRU order (``tests/test_memory_cache_hot_path.py``).
        """
        if len(args) == 2 and args[0] == "GET" and not self._away:
            key = args[1]
            if type(key) is str:
                key = key.encode()
            if type(key) is bytes:  # (a memoryview may change later: the general way)
                data = self._data
                item = data.get(key)
                if item is None:
                    if result is None:
                        return  # nothing kept, nothing to forget
                else:
                    value = result.encode() if type(result) is str else result
                    if type(value) is bytes and item.value == value:  # (a hash: a dict)
                        now = self._clock()
                        expiry = item.redis_expires_at
                        if expiry is not None and expiry is not _UNKNOWN and expiry < now:
                            item.redis_expires_at = now
                        item.expires_at = now + self.default_ttl_seconds
                        try:  # noqa: SIM105 - per GET: suppress() would make a context manager
                            data.move_to_end(key)
                        except KeyError:  # dropped meanwhile by a thread holding the lock
                            pass
                        return
        self._observe_general(args, result)

    def _observe_general(self, args: Sequence[Any], result: Any) -> None:
        """``observe`` of any command, under the lock (every one, in tests)."""
        if not args:
            return
        command = _name(args)
        try:
            rest = [_b(a) for a in args[1:]]
        except TypeError:
            rest = []
            command = command if command in _NEUTRAL else "FLUSHALL"  # cannot tell: forget all
        with self._lock:
            if self._away:
                self._forget_all()  # the first answer after an outage: start afresh
            try:
                self._observe(command, rest, result)
            except (UnsupportedCommand, ValueError, IndexError, TypeError, AttributeError):
                self._invalidate(command, rest)

    def _observe(self, command: str, rest: list[bytes], result: Any) -> None:
        if command == "GET" and rest:
            if result is None:
                self._pop(rest[0])
            else:
                item = self._data.get(rest[0])
                ttl = _UNKNOWN
                if item is not None and isinstance(item.value, bytes) and item.value == _b(result):
                    ttl = self._remaining_redis_ttl(item)
                self._put(rest[0], _b(result), redis_ttl=ttl)
        elif command == "MGET":
            for key, value in zip(rest, result or (), strict=False):
                if value is None:
                    self._pop(key)
                else:
                    self._put(key, _b(value))
        elif command in _COUNTERS and rest and isinstance(result, int):
            item = self._data.get(rest[0])
            ttl = self._remaining_redis_ttl(item) if item is not None else _UNKNOWN
            self._put(rest[0], str(result).encode(), redis_ttl=ttl)
        elif command == "HGETALL" and rest and isinstance(result, dict):
            self._put(rest[0], {_b(k): _b(v) for k, v in result.items()})
        elif command == "HGET" and len(rest) >= 2:
            self._learn_fields(rest[0], {rest[1]: None if result is None else _b(result)})
        elif command == "HMGET" and len(rest) >= 2 and isinstance(result, list):
            values = [None if v is None else _b(v) for v in result]
            self._learn_fields(rest[0], dict(zip(rest[1:], values, strict=False)))
        elif command == "SET" and result is not None and result is not False:
            # It happened in Redis: NX or XX held there, whatever this cache knows.
            conditions = (b"NX", b"XX")
            _cmd_set(self, [r for i, r in enumerate(rest) if i < 2 or r.upper() not in conditions])
        elif command == "EXPIRE" and not result and rest:
            self._pop(rest[0])  # no such key in Redis
        elif command in _WRITES and result is not None and result is not False:
            _COMMANDS[command](self, rest)
        elif command in _WRITES:
            pass  # a conditional write that did not happen (SET NX on an existing key)
        elif command not in _NEUTRAL:
            self._invalidate(command, rest)

    def _remaining_redis_ttl(self, item: _Item) -> Any:
        expiry = item.redis_expires_at
        if expiry is None or expiry is _UNKNOWN:
            return expiry
        return max(0.0, expiry - self._clock())

    def _learn_fields(self, key: bytes, fields: dict[bytes, bytes | None]) -> None:
        """Fields read one by one: kept as a partial hash (never served whole)."""
        item = self._data.get(key)
        if item is not None and not isinstance(item.value, dict):
            self._pop(key)
            item = None
        known = dict(item.value) if item is not None and isinstance(item.value, dict) else {}
        complete = item.complete if item is not None else False
        for field, value in fields.items():
            if value is None:
                known.pop(field, None)
            else:
                known[field] = value
        if not known and not complete:
            self._pop(key)
            return
        ttl = self._remaining_redis_ttl(item) if item is not None else _UNKNOWN
        self._put(key, known, redis_ttl=ttl, complete=complete)

    def _invalidate(self, command: str, rest: list[bytes]) -> None:
        """Forget what ``command``, which this cache does not model, may have changed."""
        touched = _TOUCHES.get(command, _first)
        keys = touched(rest)
        if keys is None:
            self._forget_all()
            return
        for key in keys:
            self._pop(key)

    # -- recovery and replay --------------------------------------------------------

    def bind_breaker(self, breaker: CircuitBreaker) -> None:
        """Follow ``breaker``: when it closes, forget everything (Redis may have changed
        during the outage) and replay the journal."""
        with self._lock:
            if any(known is breaker for known in self._bound):
                return
            self._bound.append(breaker)
        breaker.add_listener(self._on_transition)

    def set_replay_client(self, factory: Callable[[], Callable[..., Any]]) -> None:
        """How to reach Redis for a replay: ``factory()`` gives ``execute(*args)``, a call
        that bypasses the guard (the Redis guard provides it)."""
        self._replay_client = factory

    def reach_redis_as(self, other: MemoryCache) -> None:
        """Replay through whatever ``other`` replays through (a cache replaced by a reload)."""
        if other._replay_client is not None:
            self._replay_client = other._replay_client

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        if new.value != "closed":
            return
        with self._lock:
            self._forget_all()
            start = bool(self._journal) and not self._replaying
            if start:
                self._replaying = True
        if start:
            threading.Thread(target=self.replay, name="otel-resilience-replay", daemon=True).start()

    def replay(self) -> None:
        """Send the journaled writes to Redis, oldest first; stop at the first failure to
        reach it (the rest wait for the next recovery). A write Redis refuses (an error
        reply) is dropped and counted."""
        try:
            factory = self._replay_client
            if factory is None:
                return
            execute = factory()
            token = attach(set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                self._drain(execute)
            finally:
                detach(token)
        except Exception:
            _log.warning("could not replay the writes kept while Redis was away", exc_info=True)
        finally:
            with self._lock:
                self._replaying = False

    def _drain(self, execute: Callable[..., Any]) -> None:
        while True:
            with self._lock:
                if not self._journal:
                    return
                entry = self._journal[0]
            try:
                execute(entry[0].decode(), *entry[1:])
            except Exception as exc:
                if not _is_error_reply(exc):
                    _log.info("replay paused, Redis is away again (%s)", type(exc).__name__)
                    return
                outcome = "dropped"
            else:
                outcome = "replayed"
            with self._lock:
                if self._journal and self._journal[0] is entry:
                    self._journal.popleft()
                    self._journal_bytes -= sum(len(a) for a in entry)
                if outcome == "replayed":
                    self._replayed += 1
                else:
                    self._dropped += 1

    def replay_counts(self) -> dict[str, int]:
        """Writes replayed to Redis and writes dropped (not replayable, journal full, or
        refused by Redis), since this cache was made."""
        with self._lock:
            return {"replayed": self._replayed, "dropped": self._dropped}

    @property
    def journal_length(self) -> int:
        """Writes waiting to be replayed."""
        return len(self._journal)


def _parse(args: Sequence[Any]) -> tuple[str, list[bytes]]:
    """``(command, arguments as bytes)`` of a command the cache serves, or UnsupportedCommand."""
    if not args:
        raise UnsupportedCommand("empty command")
    command = _name(args)
    if command not in _COMMANDS:
        raise UnsupportedCommand(f"the memory fallback does not serve {command}")
    try:
        return command, [_b(a) for a in args[1:]]
    except TypeError as exc:
        raise UnsupportedCommand(str(exc)) from None


def _written_keys(command: str, rest: list[bytes]) -> list[bytes]:
    """The keys a served write changes (to undo it when its pipeline cannot be served)."""
    if command not in _WRITES:
        return []
    if command in ("DEL", "UNLINK"):
        return rest
    if command == "MSET":
        return rest[0::2]
    return rest[:1]


def _copy(item: _Item | None) -> _Item | None:
    if item is None:
        return None
    value = dict(item.value) if isinstance(item.value, dict) else item.value
    return _Item(value, item.expires_at, item.redis_expires_at, item.complete, item.size)


def _is_error_reply(exc: BaseException) -> bool:
    """Whether Redis answered (an error reply) rather than could not be reached."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return "ResponseError" in names or "DataError" in names


def redis_operation(commands: Sequence[Sequence[Any]]) -> str:
    """``write`` when any of the commands may change data, else ``read``."""
    for args in commands:
        if args and _name(args) not in _NEUTRAL:
            return "write"
    return "read"


# -- the commands served -------------------------------------------------------------


def _cmd_get(cache: MemoryCache, a: list[bytes]) -> bytes | None:
    return cache._string(a[0])


def _cmd_set(cache: MemoryCache, a: list[bytes]) -> bool | None:
    key, value, options = a[0], a[1], [o.upper() for o in a[2:]]
    redis_ttl: Any = None  # a plain SET makes the key persistent
    condition: bytes | None = None
    index = 0
    while index < len(options):
        option = options[index]
        if option in (b"EX", b"PX"):
            amount = float(a[2 + index + 1])
            redis_ttl = amount if option == b"EX" else amount / 1000
            index += 2
            continue
        if option not in (b"NX", b"XX"):
            raise UnsupportedCommand(f"SET option {option.decode(errors='replace')}")
        condition = option
        index += 1
    if condition is not None:
        if key not in cache._data:
            # Whether Redis holds the key is not known here: NX and XX cannot be decided.
            raise UnsupportedCommand(f"SET {condition.decode()} on a key not known here")
        exists = cache._get(key) is not None
        if (condition == b"NX") == exists:
            return None
    cache._put(key, value, redis_ttl=redis_ttl)
    return True


def _cmd_setex(cache: MemoryCache, a: list[bytes]) -> bool:
    cache._put(a[0], a[2], redis_ttl=float(a[1]))
    return True


def _cmd_del(cache: MemoryCache, a: list[bytes]) -> int:
    return sum(cache._get(key) is not None and cache._pop(key) is not None for key in a)


def _cmd_exists(cache: MemoryCache, a: list[bytes]) -> int:
    return sum(cache._get(key) is not None for key in a)


def _cmd_expire(cache: MemoryCache, a: list[bytes]) -> bool:
    item = cache._get(a[0])
    if item is None:
        return False
    cache._put(a[0], item.value, redis_ttl=float(a[1]), complete=item.complete)
    return True


def _cmd_ttl(cache: MemoryCache, a: list[bytes]) -> int:
    item = cache._get(a[0])
    if item is None:
        return -2
    expiry = item.redis_expires_at
    if expiry is _UNKNOWN:
        raise UnsupportedCommand("the key's expiry in Redis is not known here")
    if expiry is None:
        return -1
    remaining: float = expiry - cache._clock()
    return max(0, round(remaining))


def _incr_by(cache: MemoryCache, key: bytes, amount: int) -> int:
    if key not in cache._data:
        raise UnsupportedCommand("the counter's value in Redis is not known here")
    current = cache._string(key)
    if current is None:
        raise UnsupportedCommand("the counter's value in Redis is not known here")
    result = int(current) + amount
    item = cache._data[key]
    cache._put(key, str(result).encode(), redis_ttl=cache._remaining_redis_ttl(item))
    return result


def _cmd_mset(cache: MemoryCache, a: list[bytes]) -> bool:
    if len(a) % 2:
        raise ValueError("MSET takes key value pairs")
    for index in range(0, len(a), 2):
        cache._put(a[index], a[index + 1], redis_ttl=None)
    return True


def _cmd_hset(cache: MemoryCache, a: list[bytes]) -> int:
    if len(a) < 3 or len(a) % 2 == 0:
        raise ValueError("HSET takes a key and field value pairs")
    item = cache._hash(a[0])
    current = dict(item.value) if item is not None and isinstance(item.value, dict) else {}
    complete = item.complete if item is not None else False
    added = 0
    for index in range(1, len(a), 2):
        added += a[index] not in current
        current[a[index]] = a[index + 1]
    ttl = cache._remaining_redis_ttl(item) if item is not None else _UNKNOWN
    cache._put(a[0], current, redis_ttl=ttl, complete=complete)
    return added


def _cmd_hdel(cache: MemoryCache, a: list[bytes]) -> int:
    item = cache._hash(a[0])
    if item is None:
        return 0
    assert isinstance(item.value, dict)
    removed = sum(item.value.pop(field, None) is not None for field in a[1:])
    cache._resize(a[0], item)
    return removed


def _cmd_hgetall(cache: MemoryCache, a: list[bytes]) -> dict[bytes, bytes]:
    item = cache._hash(a[0], whole=True)
    return dict(item.value) if item is not None and isinstance(item.value, dict) else {}


def _cmd_hlen(cache: MemoryCache, a: list[bytes]) -> int:
    item = cache._hash(a[0], whole=True)
    return len(item.value) if item is not None else 0


def _cmd_hexists(cache: MemoryCache, a: list[bytes]) -> bool:
    return cache._field(a[0], a[1]) is not None


_COMMANDS: dict[str, Callable[[MemoryCache, list[bytes]], Any]] = {
    "PING": lambda cache, a: True,
    "GET": _cmd_get,
    "SET": _cmd_set,
    "SETEX": _cmd_setex,
    "DEL": _cmd_del,
    "UNLINK": _cmd_del,
    "EXISTS": _cmd_exists,
    "EXPIRE": _cmd_expire,
    "TTL": _cmd_ttl,
    "INCR": lambda cache, a: _incr_by(cache, a[0], 1),
    "DECR": lambda cache, a: _incr_by(cache, a[0], -1),
    "INCRBY": lambda cache, a: _incr_by(cache, a[0], int(a[1])),
    "DECRBY": lambda cache, a: _incr_by(cache, a[0], -int(a[1])),
    "MGET": lambda cache, a: [cache._string(key) for key in a],
    "MSET": _cmd_mset,
    "HGET": lambda cache, a: cache._field(a[0], a[1]),
    "HSET": _cmd_hset,
    "HDEL": _cmd_hdel,
    "HGETALL": _cmd_hgetall,
    "HMGET": lambda cache, a: [cache._field(a[0], field) for field in a[1:]],
    "HEXISTS": _cmd_hexists,
    "HLEN": _cmd_hlen,
}
_WRITES = frozenset(
    {"SET", "SETEX", "DEL", "UNLINK", "EXPIRE", "MSET", "HSET", "HDEL"}
    | {"INCR", "DECR", "INCRBY", "DECRBY"}
)
_COUNTERS = frozenset({"INCR", "DECR", "INCRBY", "DECRBY"})


def _words(text: str) -> list[str]:
    return text.split()


# Commands that change no data (reads, connection and server administration, messaging).
# Every other command may write: the cache forgets what it may have touched.
_NEUTRAL = frozenset(
    set(_COMMANDS) - _WRITES
    | set(
        _words(
            """
            TYPE STRLEN GETRANGE SUBSTR LCS HKEYS HVALS HSTRLEN HSCAN HRANDFIELD HTTL HPTTL
            LRANGE LLEN LINDEX LPOS SMEMBERS SISMEMBER SMISMEMBER SCARD SRANDMEMBER SSCAN
            SINTER SUNION SDIFF SINTERCARD ZRANGE ZRANGEBYSCORE ZREVRANGE ZREVRANGEBYSCORE
            ZRANGEBYLEX ZREVRANGEBYLEX ZSCORE ZMSCORE ZRANK ZREVRANK ZCARD ZCOUNT ZLEXCOUNT
            ZSCAN ZRANDMEMBER ZUNION ZINTER ZDIFF ZINTERCARD XRANGE XREVRANGE XLEN XREAD
            XINFO XPENDING GETBIT BITCOUNT BITPOS BITFIELD_RO PFCOUNT GEOPOS GEODIST GEOHASH
            GEOSEARCH GEORADIUS_RO GEORADIUSBYMEMBER_RO SCAN KEYS RANDOMKEY DBSIZE ECHO TIME
            INFO LASTSAVE DUMP OBJECT MEMORY TOUCH PTTL EXPIRETIME PEXPIRETIME EVAL_RO
            EVALSHA_RO FCALL_RO SORT_RO CLIENT CONFIG COMMAND SLOWLOG LATENCY ACL CLUSTER
            READONLY READWRITE WAIT AUTH HELLO PUBLISH SPUBLISH PUBSUB SUBSCRIBE UNSUBSCRIBE
            PSUBSCRIBE PUNSUBSCRIBE SCRIPT FUNCTION MULTI EXEC DISCARD WATCH UNWATCH QUIT
            RESET ROLE MONITOR SAVE BGSAVE BGREWRITEAOF
            """
        )
    )
)


def _first(rest: list[bytes]) -> list[bytes] | None:
    return rest[:1]


def _everything(rest: list[bytes]) -> list[bytes] | None:
    return None


def _first_two(rest: list[bytes]) -> list[bytes] | None:
    return rest[:2]


def _pairs(rest: list[bytes]) -> list[bytes] | None:
    return rest[0::2]


def _second(rest: list[bytes]) -> list[bytes] | None:
    return rest[1:2]


# Which keys a command the cache does not model may change; None: possibly any key.
# Unlisted commands change their first argument (the key), as most Redis commands do.
_TOUCHES: dict[str, Callable[[list[bytes]], list[bytes] | None]] = {
    **dict.fromkeys(
        _words("FLUSHALL FLUSHDB SWAPDB SELECT EVAL EVALSHA FCALL MIGRATE SORT DEBUG"),
        _everything,
    ),
    **dict.fromkeys(
        _words(
            "RENAME RENAMENX COPY SMOVE LMOVE BLMOVE RPOPLPUSH BRPOPLPUSH GEOSEARCHSTORE "
            "ZRANGESTORE"
        ),
        _first_two,
    ),
    "MSETNX": _pairs,
    "BITOP": _second,
}
