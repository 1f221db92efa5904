"""Guards for urllib3: ``HTTPConnectionPool.urlopen`` (``PoolManager`` requests use it).

Under requests the urllib3 call joins the request's guarded call, so one request counts
once; urlopen's own retries (it calls itself) join the first call too. Imported only
when urllib3 is installed.
"""

from __future__ import annotations

from typing import Any

import urllib3
import urllib3.connectionpool
import urllib3.exceptions

from .._addresses import Address
from .._errors import CircuitOpenError
from .._guard import Client, Entry, guarded_call
from ._clientcall import Dependencies, http_answer, never_serve
from ._install import Installer

__all__ = ["Urllib3CircuitOpenError", "install_urllib3"]


class Urllib3CircuitOpenError(CircuitOpenError, urllib3.exceptions.HTTPError):
    """The breaker of the HTTP dependency is open: raised before any network I/O.

    Also a ``urllib3.exceptions.HTTPError``, the base of every error urllib3 raises.
    """

    __reduce__ = CircuitOpenError.__reduce__


def _is_failure(exc: BaseException) -> bool:
    # Transport errors (refused, reset, timeouts, retries exhausted); not a malformed URL.
    if isinstance(exc, urllib3.exceptions.LocationValueError):
        return False
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def _answer(response: Any) -> str | None:
    return http_answer(getattr(response, "status", None))


URLLIB3 = Client(
    "urllib3",
    marks_span=True,
    open_error=Urllib3CircuitOpenError,
    fault=urllib3.exceptions.ProtocolError,
    is_failure=_is_failure,
    answer=_answer,
    serve=never_serve,
    timeout_errors=(urllib3.exceptions.TimeoutError,),
)
"""Pool ``urlopen``; no fallback (a urllib3 response cannot be made up)."""


def install_urllib3(installer: Installer) -> None:
    """Guard ``urllib3.connectionpool.HTTPConnectionPool.urlopen`` (HTTPS pools inherit it)."""
    dependencies = Dependencies(installer)

    def of_pool(pool: Any) -> Entry | None:
        host, port, scheme = pool.host, pool.port, pool.scheme
        if port is None:
            port = 443 if scheme == "https" else 80
        return dependencies.entry(
            (scheme, host, port),
            lambda: {"server.address": host, "server.port": port},
            lambda: Address(host, port, scheme=scheme),
        )

    def urlopen(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = of_pool(instance)
        if entry is None:
            return wrapped(*args, **kwargs)
        return guarded_call(entry, URLLIB3, wrapped, args, kwargs, None)

    installer.wrap(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
