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

from .._errors import CircuitOpenError
from ._clientcall import Dependencies, Rules, guarded_sync, http_answered
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


def _answered(response: Any) -> tuple[bool, str | None]:
    return http_answered(getattr(response, "status", None))


RULES = Rules(_is_failure, Urllib3CircuitOpenError, _answered)


def install_urllib3(installer: Installer) -> None:
    """Guard ``urllib3.connectionpool.HTTPConnectionPool.urlopen`` (HTTPS pools inherit it)."""
    dependencies = Dependencies(installer.registry)

    def of_pool(pool: Any) -> str | None:
        host, port, scheme = pool.host, pool.port, pool.scheme
        if port is None:
            port = 443 if scheme == "https" else 80
        return dependencies.name(
            (scheme, host, port), lambda: {"server.address": host, "server.port": port}
        )

    def urlopen(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return guarded_sync(installer, of_pool(instance), RULES, lambda: wrapped(*args, **kwargs))

    installer.wrap(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
