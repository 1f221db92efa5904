"""One guarded client call, sync or async: join, admit, run, record, reject.

The client modules declare which dependency a call belongs to, what counts as a failure,
and which error a rejected call raises; the steps between are here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .._context import GUARDED, http_status_is_failure
from ._common import Call, mark_current_span
from ._install import Installer

__all__ = [
    "Dependencies",
    "Rejection",
    "Rules",
    "guarded_async",
    "guarded_sync",
    "http_answered",
    "http_dependency",
]

Rejection = Callable[[str, float], BaseException]
"""Builds the error a rejected call raises from the dependency name and ``retry_after``."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What a client guard declares: which errors are failures, the error a rejected call
    raises, and (for clients that return answers, like HTTP) which results are failures."""

    is_failure: Callable[[BaseException], bool]
    rejection: Rejection
    answered: Callable[[Any], tuple[bool, str | None]] | None = None


def guarded_sync(
    installer: Installer, name: str | None, rules: Rules, fn: Callable[[], Any]
) -> Any:
    """Run ``fn()`` as one call of dependency ``name`` (None: not guarded, run it as is).

    Inside another guarded call of the same dependency (requests over urllib3, SQLAlchemy
    over its driver) the call joins the outer one: no second permit, no second record.
    ``rules.answered(result)`` says whether a returned result is a failure (an HTTP 503).
    """
    if name is None:
        return fn()
    if GUARDED.get() == name:
        mark_current_span()
        return fn()
    call = Call(installer.entry(name), rules.is_failure)
    if not call.admit():
        raise rules.rejection(name, call.entry.breaker.retry_after())
    try:
        result = fn()
    except BaseException as exc:
        call.raised(exc)
        raise
    if rules.answered is None:
        call.succeeded()
    else:
        call.succeeded(*rules.answered(result))
    return result


async def guarded_async(
    installer: Installer, name: str | None, rules: Rules, fn: Callable[[], Awaitable[Any]]
) -> Any:
    """``guarded_sync`` for a coroutine function ``fn``."""
    if name is None:
        return await fn()
    if GUARDED.get() == name:
        mark_current_span()
        return await fn()
    call = Call(installer.entry(name), rules.is_failure)
    if not call.admit():
        raise rules.rejection(name, call.entry.breaker.retry_after())
    try:
        result = await fn()
    except BaseException as exc:
        call.raised(exc)
        raise
    if rules.answered is None:
        call.succeeded()
    else:
        call.succeeded(*rules.answered(result))
    return result


class Dependencies:
    """Dependency names by a call's address, classified once per address (bounded)."""

    __slots__ = ("_names", "_registry")

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self._names: dict[Any, str | None] = {}

    def name(self, key: Any, attributes: Callable[[], dict[str, Any]]) -> str | None:
        """The dependency for ``key``; ``attributes()`` gives the span attributes to classify."""
        try:
            return self._names[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable key: classify without caching
            return self._registry.classify(attributes())  # type: ignore[no-any-return]
        found: str | None = self._registry.classify(attributes())
        if len(self._names) >= 1024:
            self._names.clear()
        self._names[key] = found
        return found


def http_dependency(dependencies: Dependencies, url: str) -> str | None:
    """The dependency of an HTTP request to ``url``, classified once per scheme and authority."""
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

    return dependencies.name(key, attributes)


def http_answered(status: Any) -> tuple[bool, str | None]:
    """``(failed, error_type)`` for a response status: 5xx and 429 fail, the rest answered."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return False, None
    if http_status_is_failure(code):
        return True, str(code)
    return False, None
