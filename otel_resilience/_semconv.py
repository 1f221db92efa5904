"""Span attributes normalised across the old and new OpenTelemetry semantic conventions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ALIASES", "SOURCES", "Classifier", "canonical_key", "lookup"]

# Old or new name -> the canonical name that ``match`` blocks and classification use.
ALIASES: dict[str, str] = {
    "db.system.name": "db.system",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
    "service.peer.name": "peer.service",
    "rpc.system.name": "rpc.system",  # RPC conventions after 1.37 (grpc spans carry no address)
}

# Canonical name -> the attribute keys that carry it, the newer convention first.
SOURCES: dict[str, tuple[str, ...]] = {
    "db.system": ("db.system.name", "db.system"),
    "server.address": ("server.address", "net.peer.name"),
    "server.port": ("server.port", "net.peer.port"),
    "peer.service": ("service.peer.name", "peer.service"),
    "rpc.system": ("rpc.system.name", "rpc.system"),
}

_URL_KEYS = ("url.full", "http.url")


def canonical_key(key: str) -> str:
    """The canonical name of an attribute key (unchanged when it has no alias)."""
    return ALIASES.get(key, key)


def _from_url(attributes: Mapping[str, Any], part: str) -> str | None:
    for key in _URL_KEYS:
        url = attributes.get(key)
        if isinstance(url, str) and url:
            try:
                parts = urlsplit(url)
                value = parts.hostname if part == "host" else parts.port
            except ValueError:
                return None
            return None if value is None else str(value)
    return None


def lookup(attributes: Mapping[str, Any], canonical: str) -> str | None:
    """The value of canonical attribute ``canonical`` in span ``attributes``, as a string.

    Reads whichever semantic-convention generation the span carries; the HTTP host and
    port come from the URL when the span has no ``server.address``/``server.port``.
    """
    for key in SOURCES.get(canonical, (canonical,)):
        value = attributes.get(key)
        if value is not None:
            return value if isinstance(value, str) else str(value)
    if canonical == "server.address":
        return _from_url(attributes, "host")
    if canonical == "server.port":
        if any(attributes.get(key) is not None for key in SOURCES["server.address"]):
            return None  # the span names its server but no port: the URL is not consulted
        return _from_url(attributes, "port")
    return None


_MISSING: Any = object()
_CACHE_SIZE = 1024


Matchers = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


class Classifier:
    """``matchers`` (dependency name, (canonical key, expected value) pairs) as a fast,
    memoised function of span attributes: the first dependency whose pairs all hold.

    Span attributes repeat (a service talks to a handful of servers), so the answer is
    cached by the raw values of the attributes the matchers can read, and ``classify``
    is generated code that reads exactly those keys (a generic loop costs several times
    more, and this runs for every client span). URLs enter the key by scheme and
    authority only, so paths do not fill the cache; the cache is bounded and emptied
    when full.
    """

    __slots__ = ("_cache", "_matchers", "canonical_keys", "classify", "dict_key_lines", "key_lines")

    def __init__(self, matchers: Matchers) -> None:
        self._matchers = matchers
        self.canonical_keys = frozenset(
            canonical for _, pairs in matchers for canonical, _ in pairs
        )
        """The canonical attributes the matchers compare (their answer depends on no other)."""
        self._cache: dict[tuple[Any, ...], str | None] = {}
        keys: dict[str, None] = {}
        uses_url = False
        for _, pairs in matchers:
            for canonical, _ in pairs:
                for key in SOURCES.get(canonical, (canonical,)):
                    keys[key] = None
                if canonical in ("server.address", "server.port"):
                    uses_url = True
        if uses_url:
            for key in SOURCES["server.address"]:
                keys[key] = None
        self.key_lines: tuple[str, ...] = _key_lines(tuple(keys), uses_url, "get({!r})")
        """Statements (one level of indent) that set ``key``, the cache key of the span
        attributes, from ``get`` (their ``get`` method). ``key = ()`` when there are no
        matchers."""
        self.dict_key_lines: tuple[str, ...] = _key_lines(
            tuple(keys), uses_url, "dict_get(attributes, {!r})"
        )
        """The same statements for ``attributes`` that is a ``dict`` (or a subclass that
        keeps ``dict.get``), read with ``dict_get`` (``dict.get``): no bound method is made
        per span. The span processor's fast path inlines them."""
        self.classify: Callable[[Mapping[str, Any]], str | None] = (
            self._compile() if matchers else _nothing
        )

    def _compile(self) -> Callable[..., str | None]:
        lines = [
            "def classify(attributes):",
            "    get = attributes.get",
            *self.key_lines,
            "    try:",
            "        found = cache.get(key, missing)",
            "    except TypeError:",  # an unhashable value (not from the SDK): no caching
            "        return match(attributes)",
            "    if found is not missing:",
            "        return found",
            "    found = match(attributes)",
            f"    if len(cache) >= {_CACHE_SIZE}:",
            "        cache.clear()",
            "    cache[key] = found",
            "    return found",
        ]
        namespace: dict[str, Any] = {
            "cache": self._cache,
            "missing": _MISSING,
            "match": self.match,
        }
        exec("\n".join(lines), namespace)  # the keys are embedded with repr(): no injection
        classify: Callable[..., str | None] = namespace["classify"]
        return classify

    def match(self, attributes: Mapping[str, Any]) -> str | None:
        """The uncached answer: every pair compared through ``lookup``."""
        for name, pairs in self._matchers:
            for canonical, value in pairs:
                if lookup(attributes, canonical) != value:
                    break
            else:
                return name
        return None


def _key_lines(keys: tuple[str, ...], uses_url: bool, read: str) -> tuple[str, ...]:
    """``Classifier.key_lines`` for attribute ``keys`` (and the URL when ``uses_url``),
    each attribute read with ``read.format(key)``."""
    if not keys:
        return ("    key = ()",)
    # The keys are embedded with repr(), so any string (a user's match key) is safe.
    names = [f"v{index}" for index in range(len(keys))]
    lines = [f"    {name} = {read.format(key)}" for name, key in zip(names, keys, strict=True)]
    values = ", ".join(names)
    if not uses_url:
        return (*lines, f"    key = ({values},)")
    # The URL is consulted only when the span names no server address.
    absent = " and ".join(f"{names[keys.index(key)]} is None" for key in SOURCES["server.address"])
    # A URL attribute is a non-empty string (absent, the common case, is told first).
    not_a_url = "url is None or not (type(url) is str or isinstance(url, str)) or not url"
    # The URL enters the key by what comes before the first '/' after its first '//' (the
    # end of ``scheme://authority``, or later), any other shape whole: every URL with the
    # same part has the same host and port, and paths do not fill the cache. The usual
    # shape (no '/' before the '//') is cut by one split, whose first and third parts are
    # that prefix without its '//' (no '/' in either, so the pair names it alone); a
    # 2-tuple equals no string, so the two kinds of key never meet.
    return (
        *lines,
        f"    if {absent}:",
        f"        url = {read.format('url.full')}",
        f"        if {not_a_url}:",
        f"            url = {read.format('http.url')}",
        f"            if {not_a_url}:",
        "                url = None",
        "        if url is not None:",
        "            parts = url.split('/', 3)",
        "            if len(parts) > 2 and not parts[1]:",
        "                url = (parts[0], parts[2])",
        "            else:",
        "                start = url.find('//')",
        "                if start >= 0:",
        "                    end = url.find('/', start + 2)",
        "                    if end >= 0:",
        "                        url = url[:end]",
        f"        key = ({values}, url)",
        "    else:",
        f"        key = ({values},)",
    )


def _nothing(attributes: Mapping[str, Any]) -> None:
    return None
