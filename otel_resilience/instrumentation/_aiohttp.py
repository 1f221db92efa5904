"""Guards for the aiohttp client: ``ClientSession._request``, which every request goes through.

OpenTelemetry's aiohttp instrumentation traces through the session's trace configs, so
the request span starts and ends inside the guarded call; a rejected request makes no
span. Imported only when aiohttp is installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .._errors import CircuitOpenError
from .._guard import Client, guarded_acall
from ._clientcall import Dependencies, http_answer, http_dependency, never_serve
from ._install import Installer

__all__ = ["AiohttpCircuitOpenError", "install_aiohttp"]


class AiohttpCircuitOpenError(CircuitOpenError, aiohttp.ClientConnectionError):
    """The breaker of the HTTP dependency is open: raised before any network I/O.

    Also an ``aiohttp.ClientConnectionError`` (so a ``ClientError``), what aiohttp raises
    when a server cannot be reached.
    """

    __reduce__ = CircuitOpenError.__reduce__


_FAILURES = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
    OSError,
)


def _is_failure(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientResponseError):  # raise_for_status: the status decides
        return http_answer(exc.status) is not None
    return isinstance(exc, _FAILURES)


def _answer(response: Any) -> str | None:
    return http_answer(getattr(response, "status", None))


AIOHTTP = Client(
    "aiohttp",
    marks_span=True,
    open_error=AiohttpCircuitOpenError,
    fault=aiohttp.ClientConnectionError,
    is_failure=_is_failure,
    answer=_answer,
    serve=never_serve,
    timeout_errors=(aiohttp.ServerTimeoutError,),
)
"""``ClientSession._request``; no fallback (a ClientResponse cannot be made up)."""


def install_aiohttp(installer: Installer) -> None:
    """Guard ``aiohttp.ClientSession._request``."""
    dependencies = Dependencies(installer)

    async def request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        str_or_url = args[1] if len(args) > 1 else kwargs.get("str_or_url", "")
        try:
            url = str(instance._build_url(str_or_url))
        except Exception:
            url = str(str_or_url)
        entry = http_dependency(dependencies, url)
        if entry is None:
            return await wrapped(*args, **kwargs)
        return await guarded_acall(entry, AIOHTTP, wrapped, args, kwargs, None)

    installer.wrap(aiohttp.ClientSession, "_request", request)
