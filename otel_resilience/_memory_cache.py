"""The ``memory`` fallback for Redis: a bounded, in-process TTL + LRU cache.

While Redis is up, the Redis guard shows this cache each successful command and its
result (write-through), so it holds what this process last read or wrote. While the
Redis breaker is open, the common string, hash and expiry commands are served from it
(see docs/clients.md for the exact semantics): reads return the last value seen, writes
change only this process's copy and are *not* written back to Redis on recovery.
Commands it does not know are rejected as if there were no fallback.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MemoryCache", "UnsupportedCommand"]


class UnsupportedCommand(LookupError):
    """The memory fallback cannot answer this command."""


Value = bytes | dict[bytes, bytes]


class _Item:
    __slots__ = ("expires_at", "value")

    def __init__(self, value: Value, expires_at: float | None) -> None:
        self.value = value
        self.expires_at = expires_at


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


class MemoryCache:
    """A bounded key-value cache speaking a subset of Redis (strings, hashes, expiry).

    ``max_entries`` bounds memory (least recently used keys go first); every entry also
    expires ``default_ttl_seconds`` after it was last written, or at its Redis expiry if
    sooner, so an outage is served recent data, never data of unbounded age.
    """

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
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.replay_writes = replay_writes
        self.max_replay_writes = max_replay_writes
        self.default_ttl_seconds = default_ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, _Item] = OrderedDict()

    def __repr__(self) -> str:
        replay = ", replay_writes" if self.replay_writes else ""
        return (
            f"memory (max {self.max_entries} entries, {self.max_bytes} bytes, "
            f"ttl {self.default_ttl_seconds:g}s{replay})"
        )

    def __len__(self) -> int:
        return len(self._data)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As a fallback: ``cache(command, *args)`` answers a Redis command from memory."""
        return self.execute(args, decode=bool(kwargs.get("decode_responses", False)))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    # -- storage -------------------------------------------------------------------

    def _get(self, key: bytes) -> _Item | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item.expires_at is not None and self._clock() >= item.expires_at:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item

    def _put(self, key: bytes, value: Value, expire_in: float | None = None) -> None:
        ttl = (
            self.default_ttl_seconds
            if expire_in is None
            else min(expire_in, self.default_ttl_seconds)
        )
        self._data[key] = _Item(value, self._clock() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def _string(self, key: bytes) -> bytes | None:
        item = self._get(key)
        if item is None:
            return None
        if not isinstance(item.value, bytes):
            raise UnsupportedCommand("WRONGTYPE in the memory fallback")
        return item.value

    def _hash(self, key: bytes) -> dict[bytes, bytes] | None:
        item = self._get(key)
        if item is None:
            return None
        if not isinstance(item.value, dict):
            raise UnsupportedCommand("WRONGTYPE in the memory fallback")
        return item.value

    # -- serving commands while Redis is away --------------------------------------

    def execute(self, args: Sequence[Any], *, decode: bool = False) -> Any:
        """The result redis-py would return for command ``args`` (bytes unless ``decode``)."""
        if not args:
            raise UnsupportedCommand("empty command")
        command = str(args[0]).upper()
        handler = _COMMANDS.get(command)
        if handler is None:
            raise UnsupportedCommand(f"the memory fallback does not serve {command}")
        with self._lock:
            return _decode(handler(self, [_b(a) for a in args[1:]]), decode)

    def _cmd_set(self, a: list[bytes]) -> bool | None:
        key, value, options = a[0], a[1], [o.upper() for o in a[2:]]
        expire_in: float | None = None
        exists = self._get(key) is not None
        index = 0
        while index < len(options):
            option = options[index]
            if option in (b"EX", b"PX"):
                amount = float(a[2 + index + 1])
                expire_in = amount if option == b"EX" else amount / 1000
                index += 2
                continue
            if option == b"NX" and exists:
                return None
            if option == b"XX" and not exists:
                return None
            if option not in (b"NX", b"XX"):
                raise UnsupportedCommand(f"SET option {option.decode()}")
            index += 1
        self._put(key, value, expire_in)
        return True

    def _incr_by(self, key: bytes, amount: int) -> int:
        current = self._string(key)
        result = int(current or b"0") + amount
        item = self._data.get(key)
        remaining = None
        if item is not None and item.expires_at is not None:
            remaining = item.expires_at - self._clock()
        self._put(key, str(result).encode(), remaining)
        return result

    def _ttl(self, key: bytes) -> int:
        item = self._get(key)
        if item is None:
            return -2
        if item.expires_at is None:
            return -1
        return max(0, round(item.expires_at - self._clock()))

    # -- write-through while Redis is up --------------------------------------------

    def observe(self, args: Sequence[Any], result: Any) -> None:
        """Keep what a successful command read or wrote; forget keys it may have changed."""
        if not args:
            return
        command = str(args[0]).upper()
        try:
            rest = [_b(a) for a in args[1:]]
        except TypeError:
            return
        with self._lock:
            if command == "GET" and rest:
                if result is None:
                    self._data.pop(rest[0], None)
                else:
                    self._put(rest[0], _b(result))
            elif command == "MGET":
                for key, value in zip(rest, result or (), strict=False):
                    if value is None:
                        self._data.pop(key, None)
                    else:
                        self._put(key, _b(value))
            elif command in _COUNTERS and rest and isinstance(result, int):
                self._put(rest[0], str(result).encode())
            elif command == "HGETALL" and rest and isinstance(result, dict):
                self._put(rest[0], {_b(k): _b(v) for k, v in result.items()})
            elif command in _WRITES and result is not None and result is not False:
                try:
                    _COMMANDS[command](self, rest)
                except (UnsupportedCommand, ValueError, IndexError):
                    self._forget(rest)
            elif command not in _READS:
                self._forget(rest)

    def _forget(self, rest: list[bytes]) -> None:
        if rest:
            self._data.pop(rest[0], None)


def _cmd_get(cache: MemoryCache, a: list[bytes]) -> bytes | None:
    return cache._string(a[0])


def _cmd_setex(cache: MemoryCache, a: list[bytes]) -> bool:
    cache._put(a[0], a[2], float(a[1]))
    return True


def _cmd_del(cache: MemoryCache, a: list[bytes]) -> int:
    return sum(cache._get(key) is not None and cache._data.pop(key) is not None for key in a)


def _cmd_exists(cache: MemoryCache, a: list[bytes]) -> int:
    return sum(cache._get(key) is not None for key in a)


def _cmd_expire(cache: MemoryCache, a: list[bytes]) -> bool:
    item = cache._get(a[0])
    if item is None:
        return False
    cache._put(a[0], item.value, float(a[1]))
    return True


def _cmd_mset(cache: MemoryCache, a: list[bytes]) -> bool:
    for index in range(0, len(a) - 1, 2):
        cache._put(a[index], a[index + 1])
    return True


def _cmd_hset(cache: MemoryCache, a: list[bytes]) -> int:
    current = dict(cache._hash(a[0]) or {})
    added = 0
    for index in range(1, len(a) - 1, 2):
        added += a[index] not in current
        current[a[index]] = a[index + 1]
    cache._put(a[0], current)
    return added


def _cmd_hdel(cache: MemoryCache, a: list[bytes]) -> int:
    current = cache._hash(a[0])
    if current is None:
        return 0
    removed = sum(current.pop(field, None) is not None for field in a[1:])
    return removed


def _hget(cache: MemoryCache, a: list[bytes]) -> bytes | None:
    return (cache._hash(a[0]) or {}).get(a[1])


_COMMANDS: dict[str, Callable[[MemoryCache, list[bytes]], Any]] = {
    "PING": lambda cache, a: True,
    "GET": _cmd_get,
    "SET": MemoryCache._cmd_set,
    "SETEX": _cmd_setex,
    "DEL": _cmd_del,
    "UNLINK": _cmd_del,
    "EXISTS": _cmd_exists,
    "EXPIRE": _cmd_expire,
    "TTL": lambda cache, a: cache._ttl(a[0]),
    "INCR": lambda cache, a: cache._incr_by(a[0], 1),
    "DECR": lambda cache, a: cache._incr_by(a[0], -1),
    "INCRBY": lambda cache, a: cache._incr_by(a[0], int(a[1])),
    "DECRBY": lambda cache, a: cache._incr_by(a[0], -int(a[1])),
    "MGET": lambda cache, a: [cache._string(key) for key in a],
    "MSET": _cmd_mset,
    "HGET": _hget,
    "HSET": _cmd_hset,
    "HDEL": _cmd_hdel,
    "HGETALL": lambda cache, a: dict(cache._hash(a[0]) or {}),
    "HMGET": lambda cache, a: [(cache._hash(a[0]) or {}).get(field) for field in a[1:]],
    "HEXISTS": lambda cache, a: a[1] in (cache._hash(a[0]) or {}),
    "HLEN": lambda cache, a: len(cache._hash(a[0]) or {}),
}
_READS = frozenset(
    {"PING", "GET", "EXISTS", "TTL", "MGET", "HGET", "HGETALL", "HMGET", "HEXISTS", "HLEN"}
)
_WRITES = frozenset({"SET", "SETEX", "DEL", "UNLINK", "EXPIRE", "MSET", "HSET", "HDEL"})
_COUNTERS = frozenset({"INCR", "DECR", "INCRBY", "DECRBY"})
