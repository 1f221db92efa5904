"""Where each dependency's own calls go, learned from its client spans and client guards.

A built-in health check with no address in the config checks the address the
dependency's own calls use (DESIGN.md 7), never a default host: the span processor and
the client guards report what they see here, and the prober reads it before each check.
Learning is cheap by construction: the span processor asks for a learner only for a
dependency whose check needs one, and a learner compares two attribute values with the
last ones seen and writes only when they change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Address", "AddressBook", "address_from_span"]


@dataclass(frozen=True, slots=True)
class Address:
    """One dependency's network address, as its calls use it.

    ``scheme`` is ``http``/``https`` for HTTP, ``rediss`` for Redis over TLS and ``unix``
    when ``host`` is a socket path. ``password`` is only ever learned from a client guard
    (the connect call's own arguments), is kept in memory for the check to authenticate,
    and never shows in a repr, a health document or a log.
    """

    host: str
    port: int | None = None
    database: str | None = None
    user: str | None = None
    scheme: str | None = None
    password: str | None = field(default=None, repr=False)


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 65536 else None
    if isinstance(value, str) and value.isdigit():
        return _port(int(value))
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def address_from_span(attributes: Mapping[str, Any]) -> Address | None:
    """The address a client span's call went to, in either semantic-convention generation.

    ``server.address``/``net.peer.name`` and ``server.port``/``net.peer.port``; for HTTP
    without them, the host of ``url.full``/``http.url``. The database name and user come
    along when the span has them (``db.namespace``/``db.name``, ``db.user``).
    """
    get = attributes.get
    host = _text(get("server.address")) or _text(get("net.peer.name"))
    port = _port(get("server.port")) or _port(get("net.peer.port"))
    scheme = _text(get("url.scheme")) or _text(get("http.scheme"))
    if host is None:
        url = _text(get("url.full")) or _text(get("http.url"))
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            host, port, scheme = parts.hostname, parts.port or port, parts.scheme or scheme
        except ValueError:
            return None
        if not host:
            return None
    database = _text(get("db.namespace")) or _text(get("db.name"))
    if database is not None and get("db.system") == "redis":
        database = None  # a redis "db.namespace" is the database index, not needed for PING
    return Address(host, port, database, _text(get("db.user")), scheme)


class AddressBook:
    """The learned address of each dependency of one registry.

    The latest address wins. Reads take no lock (the mapping is replaced, never changed in
    place); a write happens only when an address differs from the one kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._addresses: dict[str, Address] = {}

    def get(self, name: str) -> Address | None:
        """The address learned for ``name``, or None while none is."""
        return self._addresses.get(name)

    def learn(self, name: str, address: Address | None) -> None:
        """Keep ``address`` as where ``name``'s calls go (nothing happens if it is known)."""
        if address is None or self._addresses.get(name) == address:
            return
        with self._lock:
            addresses = dict(self._addresses)
            known = addresses.get(name)
            if (
                known is not None
                and address.password is None
                and (known.host, known.port) == (address.host, address.port)
            ):
                # A span never carries the password a guard saw connecting: keep it, and
                # keep what the span did not say.
                address = Address(
                    address.host,
                    address.port,
                    address.database or known.database,
                    address.user or known.user,
                    address.scheme or known.scheme,
                    known.password,
                )
                if address == known:
                    return
            addresses[name] = address
            self._addresses = addresses

    def span_learner(self, name: str) -> Callable[[Mapping[str, Any]], None]:
        """A function the span processor calls with each span's attributes for ``name``.

        It reads the host and port attributes and compares them with the last ones seen;
        only a change (or the first span) builds an Address.
        """
        last: list[Any] = [None, None, None]

        def learn(attributes: Mapping[str, Any]) -> None:
            get = attributes.get
            host = get("server.address") or get("net.peer.name")
            port = get("server.port") or get("net.peer.port")
            url = None if host is not None else (get("url.full") or get("http.url"))
            if host == last[0] and port == last[1] and url == last[2]:
                return
            if url is not None and host is None and last[2] is not None:
                # URLs differ by path on every call: re-learn only when the host changes.
                try:
                    if urlsplit(str(url)).netloc == urlsplit(str(last[2])).netloc:
                        return
                except ValueError:
                    return
            last[0], last[1], last[2] = host, port, url
            self.learn(name, address_from_span(attributes))

        return learn
