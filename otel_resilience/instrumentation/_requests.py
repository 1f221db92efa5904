"""Guards for requests: every request a ``Session`` sends.

OpenTelemetry's requests instrumentation replaces ``Session.send`` with a closure that
its ``uninstrument()`` swaps back, so the guard sits one level below, at
``HTTPAdapter.send``, which ``Session.send`` calls for each request (each redirect too):
the request span is current while the guard runs. Imported only when requests is
installed.
"""

from __future__ import annotations

from typing import Any

import requests
import requests.adapters

from .._errors import CircuitOpenError
from ._clientcall import Dependencies, Rules, guarded_sync, http_answered, http_dependency
from ._install import Installer

__all__ = ["RequestsCircuitOpenError", "install_requests"]


class RequestsCircuitOpenError(CircuitOpenError, requests.exceptions.ConnectionError):
    """The breaker of the HTTP dependency is open: raised before any network I/O.

    Also a ``requests.exceptions.ConnectionError`` (so a ``RequestException``), what
    requests raises when a server cannot be reached; ``.request`` is the request.
    """

    __reduce__ = CircuitOpenError.__reduce__


_FAILURES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    OSError,
)


def _is_failure(exc: BaseException) -> bool:
    # Connection errors and timeouts; not the caller's own mistakes (a bad URL, a bad header).
    return isinstance(exc, _FAILURES)


def _answered(response: Any) -> tuple[bool, str | None]:
    return http_answered(getattr(response, "status_code", None))


RULES = Rules(_is_failure, RequestsCircuitOpenError, _answered)


def install_requests(installer: Installer) -> None:
    """Guard ``requests.adapters.HTTPAdapter.send``."""
    dependencies = Dependencies(installer.registry)

    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        name = http_dependency(dependencies, str(request.url))
        try:
            return guarded_sync(installer, name, RULES, lambda: wrapped(*args, **kwargs))
        except RequestsCircuitOpenError as error:
            if error.request is None:
                error.request = request
            raise

    installer.wrap(requests.adapters.HTTPAdapter, "send", send)
