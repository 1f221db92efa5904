"""Span attributes normalised across the old and new OpenTelemetry semantic conventions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ALIASES", "canonical_key", "normalize"]

# Old or new name -> the canonical name that ``match`` blocks and classification use.
ALIASES: dict[str, str] = {
    "db.system.name": "db.system",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
    "service.peer.name": "peer.service",
}

_URL_KEYS = ("url.full", "http.url")


def canonical_key(key: str) -> str:
    """The canonical name of an attribute key (unchanged when it has no alias)."""
    return ALIASES.get(key, key)


def normalize(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Canonical attribute names to string values; the HTTP host comes from the URL if needed.

    Values are strings so a port matches whether a span carries ``6379`` or ``"6379"``.
    Never raises: odd values are stringified, an unparsable URL is ignored.
    """
    result: dict[str, str] = {}
    if not attributes:
        return result
    for key, value in attributes.items():
        canonical = ALIASES.get(key, key)
        # The new name wins when a span carries both.
        if canonical in result and canonical != key:
            continue
        result[canonical] = value if isinstance(value, str) else str(value)
    if "server.address" not in result:
        for key in _URL_KEYS:
            url = attributes.get(key)
            if isinstance(url, str) and url:
                try:
                    parts = urlsplit(url)
                    host = parts.hostname
                    port = parts.port
                except ValueError:
                    continue
                if host:
                    result["server.address"] = host
                    if port is not None and "server.port" not in result:
                        result["server.port"] = str(port)
                break
    return result
