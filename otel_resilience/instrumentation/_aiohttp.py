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
from ._clientcall import Dependencies, Rules, guarded_async, http_answered, http_dependency
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
        return http_answered(exc.status)[0]
    return isinstance(exc, _FAILURES)


def _answered(response: Any) -> tuple[bool, str | None]:
    return http_answered(getattr(response, "status", None))


RULES = Rules(_is_failure, AiohttpCircuitOpenError, _answered)


def install_aiohttp(installer: Installer) -> None:
    """Guard ``aiohttp.ClientSession._request``."""
    dependencies = Dependencies(installer.registry)

    async def request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        str_or_url = args[1] if len(args) > 1 else kwargs.get("str_or_url", "")
        try:
            url = str(instance._build_url(str_or_url))
        except Exception:
            url = str(str_or_url)
        return await guarded_async(
            installer,
            http_dependency(dependencies, url),
            RULES,
            lambda: wrapped(*args, **kwargs),
        )

    installer.wrap(aiohttp.ClientSession, "_request", request)
