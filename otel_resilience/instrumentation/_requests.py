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
from .._guard import Client, guarded_call
from ._clientcall import (
    Dependencies,
    http_answer,
    http_dependency,
    serve_request,
)
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


def _answer(response: Any) -> str | None:
    return http_answer(getattr(response, "status_code", None))


def _on_reject(error: BaseException, request: Any) -> None:
    if isinstance(error, requests.exceptions.RequestException):
        error.request = request


REQUESTS = Client(
    "requests",
    marks_span=True,
    open_error=RequestsCircuitOpenError,
    fault=requests.exceptions.ConnectionError,
    is_failure=_is_failure,
    answer=_answer,
    serve=serve_request,
    on_reject=_on_reject,
    timeout_errors=(requests.exceptions.Timeout,),
)
"""``HTTPAdapter.send``: the subject is the prepared request; a fallback gets it."""


def install_requests(installer: Installer) -> None:
    """Guard ``requests.adapters.HTTPAdapter.send``."""
    dependencies = Dependencies(installer)

    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs["request"]
        entry = http_dependency(dependencies, str(request.url))
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, REQUESTS, wrapped, args, kwargs, request)

    installer.wrap(requests.adapters.HTTPAdapter, "send", send)
