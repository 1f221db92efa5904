"""Guards for httpx: ``Client.send`` and ``AsyncClient.send``.

Imported only when httpx is installed (``instrumentation.install``). A declaration on the
guarded-call path of ``_guard.py``: the dependency is looked up once per URL origin; a
5xx or 429 response is a failure (and still returned), other responses are answers; the
rejection error is also an ``httpx.ConnectError``; a fallback is called with the request.
"""

from __future__ import annotations

from typing import Any

import httpx

from .._addresses import Address
from .._context import http_status_is_failure
from .._errors import CircuitOpenError
from .._guard import NOT_SERVED, Client, Entry, guarded_acall, guarded_call
from .._health import learn_address
from ._common import Patcher

__all__ = ["HTTPCircuitOpenError", "install_httpx"]


class HTTPCircuitOpenError(CircuitOpenError, httpx.ConnectError):
    """The breaker of the HTTP dependency is open: raised before any network I/O.

    Also an ``httpx.ConnectError`` (so a ``TransportError`` and a ``RequestError``), what
    httpx raises when a server cannot be reached, so existing handlers keep working.
    """


def _answer(response: httpx.Response) -> str | None:
    status = response.status_code
    return str(status) if http_status_is_failure(status) else None


def _serve(entry: Entry, reason: str, request: httpx.Request, args: Any, kwargs: Any) -> Any:
    fallback = entry.fallback
    if fallback is None:
        return NOT_SERVED
    entry.on_fallback(entry.name, reason)
    return fallback(request)


def _on_reject(error: BaseException, request: httpx.Request) -> None:
    if isinstance(error, httpx.RequestError):
        error.request = request


HTTPX = Client(
    "httpx",
    marks_span=True,
    open_error=HTTPCircuitOpenError,
    fault=httpx.ConnectError,
    answer=_answer,
    serve=_serve,
    on_reject=_on_reject,
    timeout_errors=(httpx.TimeoutException,),
)
"""``send``: the subject is the request."""


def install_httpx(patcher: Patcher) -> None:
    """Wrap ``send`` of the sync and async clients."""
    registry = patcher.registry
    entries: dict[tuple[str, int | None, str], Entry | None] = {}

    def dependency_of(request: httpx.Request) -> Entry | None:
        url = request.url
        key = (url.host, url.port, url.scheme)
        try:
            return entries[key]
        except KeyError:
            pass
        port = url.port or (443 if url.scheme == "https" else 80)
        name = registry.classify(
            {"server.address": url.host, "server.port": port, "url.full": str(url)}
        )
        if name is not None:  # once per host: where the health check finds this service
            learn_address(registry, name, Address(url.host, port, scheme=url.scheme))
        entry = None if name is None else patcher.entry(name)
        if len(entries) < 1024:
            entries[key] = entry
        return entry

    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        entry = dependency_of(request)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, HTTPX, wrapped, args, kwargs, request)

    async def async_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        entry = dependency_of(request)
        if entry is None:
            return await wrapped(*args, **kwargs)
        return await guarded_acall(entry, HTTPX, wrapped, args, kwargs, request)

    patcher.wrap(httpx.Client, "send", send)
    patcher.wrap(httpx.AsyncClient, "send", async_send)
