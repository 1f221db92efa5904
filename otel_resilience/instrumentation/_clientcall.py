"""What the guards added for issue 13 share: finding a call's dependency, HTTP answers,
and a fallback-less ``serve`` for clients whose calls a fallback cannot stand in for.

The guarded call itself runs on ``otel_resilience._guard``'s path (``guarded_call``,
``guarded_acall``); each client module declares its ``Client`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .._addresses import Address
from .._context import http_status_is_failure, mark_current_client_span, mark_guarded_span
from .._guard import NOT_SERVED, Entry
from .._health import learn_address
from ._install import Installer

__all__ = [
    "Current",
    "Dependencies",
    "end_guarded",
    "guard_current_span",
    "http_answer",
    "http_dependency",
    "never_serve",
    "serve_request",
]


class Dependencies:
    """The entry of a call's dependency by its address, classified once per address
    (bounded); None when the address matches no declared dependency."""

    __slots__ = ("_entries", "_installer")

    def __init__(self, installer: Installer) -> None:
        self._installer = installer
        self._entries: dict[Any, Entry | None] = {}

    def entry(
        self,
        key: Any,
        attributes: Callable[[], dict[str, Any]],
        address: Callable[[], Address | None] | None = None,
    ) -> Entry | None:
        """The entry for ``key``; ``attributes()`` gives the span attributes to classify.

        The first time a key names a dependency, ``address()`` (where the call goes, with
        the database and credentials of a connect call) is handed to the registry's health
        checks: the guarded call's span is not counted, so it does not teach them.
        """
        try:
            return self._entries[key]  # every guard's key is a string or a tuple of them
        except KeyError:
            pass
        found = self._classify(attributes())
        if len(self._entries) >= 1024:
            self._entries.clear()
        self._entries[key] = found
        if found is not None and address is not None:
            try:
                learned = address()
            except Exception:  # pragma: no cover - a client's odd parameters; the call goes on
                learned = None
            learn_address(self._installer.registry, found.name, learned)
        return found

    def _classify(self, attributes: dict[str, Any]) -> Entry | None:
        name = self._installer.registry.classify(attributes)
        return None if name is None else self._installer.entry(name)


def http_dependency(dependencies: Dependencies, url: str) -> Entry | None:
    """The entry of an HTTP request to ``url``, classified once per scheme and authority."""
    parts = url.split("/", 3)
    key = "/".join(parts[:3])

    def attributes() -> dict[str, Any]:
        try:
            split = urlsplit(key)
            host, port = split.hostname, split.port
        except ValueError:
            return {}
        if host is None:
            return {}
        if port is None:
            port = 443 if split.scheme in ("https", "wss") else 80
        return {"server.address": host, "server.port": port}

    def address() -> Address:
        found = attributes()  # not empty: it named a dependency
        return Address(found["server.address"], found["server.port"], scheme=key.split(":")[0])

    return dependencies.entry(key, attributes, address)


def http_answer(status: Any) -> str | None:
    """The error type of a response status that is a failure (5xx, 429), else None."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return None
    return str(code) if http_status_is_failure(code) else None


def never_serve(entry: Entry, reason: str, subject: Any, args: Any, kwargs: Any) -> Any:
    """No fallback: a database connection or query has no stand-in; the error is raised."""
    return NOT_SERVED


def serve_request(entry: Entry, reason: str, subject: Any, args: Any, kwargs: Any) -> Any:
    """An HTTP fallback is called with the request (the call's ``subject``)."""
    fallback = entry.fallback
    if fallback is None:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason)
    return fallback(subject)


def end_guarded(span: Any, name: str) -> None:
    """Have the span processor skip ``span`` when it ends (for dependency ``name``).

    The span processor skips a span that ends while ``GUARDED`` names its dependency (the
    guard records the call). A guard under the instrumentation returns before the
    instrumentation ends its span, so the span's context is entered in
    ``_context.GUARDED_SPANS`` instead. Nothing is added to the span: what the application
    traces is unchanged.
    """
    if span is None:
        return
    mark_guarded_span(span.get_span_context(), name)


guard_current_span = mark_current_client_span
"""``end_guarded`` for the current span when it is a client span (the instrumentation's
span of the call this guard is in). ``guarded_call``/``guarded_acall`` do it themselves
for a ``Client`` made with ``marks_span=True``; a guard of its own path calls this."""


class Current:
    """The install whose guards apply now, for hooks that outlive one install: classes
    and interceptors the application's objects keep (psycopg2 connections, grpc channels)
    look the install up here on each call, so a later ``configure()`` guards them too."""

    __slots__ = ("_dependencies", "_installer")

    def __init__(self) -> None:
        self._installer: Installer | None = None
        self._dependencies: Dependencies | None = None

    def activate(self, installer: Installer) -> None:
        self._installer = installer
        self._dependencies = Dependencies(installer)
        installer.on_uninstall(lambda: self._deactivate(installer))

    def _deactivate(self, installer: Installer) -> None:
        if self._installer is installer:
            self._installer = None
            self._dependencies = None

    def dependencies(self) -> Dependencies | None:
        """The current install's dependency lookup; None when no guards apply now."""
        installer = self._installer
        if installer is None or not installer.active():
            return None
        return self._dependencies
