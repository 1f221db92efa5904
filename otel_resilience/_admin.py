"""Manual control over HTTP: ``POST /breakers/{name}/force-open|disable|reset``.

The routes exist only when the config names an admin token (``admin: {token_env: VAR}``)
and ``VAR`` is set; otherwise they answer 404 like any unknown path. A request carries
``Authorization: Bearer <token>``, compared in constant time. Each action, and each
refused attempt, is logged once with the caller's address, never with the token.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from ._events import emit_event

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["ACTIONS", "AdminResponse", "admin_request", "admin_token", "is_admin_path"]

_log = logging.getLogger(__name__)

# The URL action and the breaker method it calls.
ACTIONS: Mapping[str, str] = {"force-open": "force_open", "disable": "disable", "reset": "reset"}
# Below the mount point: "/breakers/..." mounted at the root or at "/health", and
# "/health/breakers/..." when the health app serves the full paths at the root.
_PREFIXES = ("/breakers/", "/health/breakers/")

AdminResponse = tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]


def admin_token(registry: Registry) -> str | None:
    """The admin token of ``registry``'s config (read from its env var now), or None."""
    variable = registry.admin_token_env
    if not variable:
        return None
    return os.environ.get(variable) or None


def _remote(scope: MutableMapping[str, Any]) -> str:
    client = scope.get("client")
    if client:
        host, port = client[0], client[1] if len(client) > 1 else None
        return f"{host}:{port}" if port is not None else str(host)
    return "unknown"


def _bearer(scope: MutableMapping[str, Any]) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == b"authorization":
            header: str = bytes(value).decode("latin-1")
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


def is_admin_path(path: str) -> bool:
    """Whether ``path`` (below the mount point) is shaped like an admin route."""
    return _split(path) is not None


def _split(path: str) -> tuple[str, str] | None:
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            name, slash, action = path[len(prefix) :].rpartition("/")
            if slash and name and action:
                return name, action
    return None


def admin_request(
    registry: Registry, scope: MutableMapping[str, Any], path: str
) -> AdminResponse | None:
    """The answer to an admin request at ``path`` (below the mount point), or None when
    ``path`` is no admin route (including every path while no admin token is configured)."""
    parts = _split(path)
    if parts is None:
        return None
    token = admin_token(registry)
    if token is None:
        return None
    name, action = parts
    if action not in ACTIONS:
        return 404, {"error": "not found", "actions": sorted(ACTIONS)}, []
    remote = _remote(scope)
    given = _bearer(scope)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        _log.warning(
            "refused breaker %s of %r from %s: %s",
            action,
            name,
            remote,
            "no bearer token" if given is None else "wrong token",
        )
        return (
            401,
            {"error": "unauthorized"},
            [(b"www-authenticate", b'Bearer realm="otel-resilience"')],
        )
    method = scope.get("method", "GET")
    if method != "POST":
        return 405, {"error": f"method {method} not allowed; use POST"}, [(b"allow", b"POST")]
    if name not in registry:
        return 404, {"error": f"unknown dependency {name!r}"}, []
    breaker = registry.breaker(name)
    before = breaker.state
    getattr(breaker, ACTIONS[action])()
    after = breaker.state
    _log.warning("breaker %r: %s by %s (%s -> %s)", name, action, remote, before.value, after.value)
    emit_event(registry, "manual", action, name)
    return (
        200,
        {
            "dependency": name,
            "action": action,
            "previous_state": before.value,
            "state": after.value,
        },
        [],
    )
