"""Guards for httpx: ``Client.send`` and ``AsyncClient.send``.

Imported only when httpx is installed (``instrumentation.install``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .._addresses import Address
from .._context import http_status_is_failure
from .._errors import CircuitOpenError
from .._health import learn_address
from ._common import Call, Patcher

__all__ = ["HTTPCircuitOpenError", "install_httpx"]


class HTTPCircuitOpenError(CircuitOpenError, httpx.ConnectError):
    """The breaker of the HTTP dependency is open: raised before any network I/O.

    Also an ``httpx.ConnectError`` (so a ``TransportError`` and a ``RequestError``), what
    httpx raises when a server cannot be reached, so existing handlers keep working.
    """


def _is_failure(exc: BaseException) -> bool:
    return True


def install_httpx(patcher: Patcher) -> None:
    """Wrap ``send`` of the sync and async clients."""
    registry = patcher.registry
    names: dict[tuple[str, int | None, str], str | None] = {}

    def dependency_of(request: httpx.Request) -> str | None:
        url = request.url
        key = (url.host, url.port, url.scheme)
        try:
            return names[key]
        except KeyError:
            pass
        port = url.port or (443 if url.scheme == "https" else 80)
        name = registry.classify(
            {"server.address": url.host, "server.port": port, "url.full": str(url)}
        )
        if name is not None:  # once per host: where the health check finds this service
            learn_address(registry, name, Address(url.host, port, scheme=url.scheme))
        if len(names) < 1024:
            names[key] = name
        return name

    def rejected(call: Call, request: httpx.Request) -> Any:
        entry = call.entry
        if entry.fallback is not None:
            entry.on_fallback(entry.name, "open")
            return entry.fallback(request)
        error = HTTPCircuitOpenError(entry.name, entry.breaker.retry_after())
        error.request = request
        return error

    def answered(call: Call, response: httpx.Response) -> None:
        status = response.status_code
        failed = http_status_is_failure(status)
        call.succeeded(failed=failed, error_type=str(status) if failed else None)

    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        name = dependency_of(request)
        if name is None:
            return wrapped(*args, **kwargs)
        call = Call(patcher.entry(name), _is_failure)
        if not call.admit():
            outcome = rejected(call, request)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.raised(exc) and call.entry.fallback is not None:
                call.entry.on_fallback(call.entry.name, _reason(exc))
                return call.entry.fallback(request)
            raise
        answered(call, response)
        return response

    async def async_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        name = dependency_of(request)
        if name is None:
            return await wrapped(*args, **kwargs)
        call = Call(patcher.entry(name), _is_failure)
        if not call.admit():
            outcome = rejected(call, request)
            if isinstance(outcome, BaseException):
                raise outcome
            return await _maybe_await(outcome)
        timeout = call.entry.timeout
        try:
            if timeout is None:
                response = await wrapped(*args, **kwargs)
            else:
                response = await asyncio.wait_for(wrapped(*args, **kwargs), timeout)
        except BaseException as exc:
            if call.raised(exc) and call.entry.fallback is not None:
                call.entry.on_fallback(call.entry.name, _reason(exc))
                return await _maybe_await(call.entry.fallback(request))
            raise
        answered(call, response)
        return response

    patcher.wrap(httpx.Client, "send", send)
    patcher.wrap(httpx.AsyncClient, "send", async_send)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
        return "timeout"
    return "error"


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value
