"""Span attributes normalised across the old and new OpenTelemetry semantic conventions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ALIASES", "SOURCES", "canonical_key", "lookup", "normalize"]

# Old or new name -> the canonical name that ``match`` blocks and classification use.
ALIASES: dict[str, str] = {
    "db.system.name": "db.system",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
    "service.peer.name": "peer.service",
}

# Canonical name -> the attribute keys that carry it, the newer convention first.
SOURCES: dict[str, tuple[str, ...]] = {
    "db.system": ("db.system.name", "db.system"),
    "server.address": ("server.address", "net.peer.name"),
    "server.port": ("server.port", "net.peer.port"),
    "peer.service": ("service.peer.name", "peer.service"),
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


def normalize(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Canonical attribute names to string values; the HTTP host comes from the URL if needed.

    Values are strings so a port matches whether a span carries ``6379`` or ``"6379"``.
    Never raises: odd values are stringified, an unparsable URL is ignored.
    """
    result: dict[str, str] = {}
    if not attributes:
        return result
    for key, value in attributes.items():
        if key not in ALIASES:
            result[key] = value if isinstance(value, str) else str(value)
    for canonical in SOURCES:
        value = lookup(attributes, canonical)
        if value is None:
            result.pop(canonical, None)
        else:
            result[canonical] = value
    return result
