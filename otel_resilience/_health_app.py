"""``health_app()``: a plain ASGI application serving the health document (DESIGN.md 8).

No web framework is needed: the ASGI protocol for three GET endpoints is small. Mounted
under a prefix (Starlette's ``Mount``, FastAPI's ``app.mount``), it routes on the path
below ``scope["root_path"]``. It answers from in-memory state only, never waiting on a
health check, so it is fast while every dependency hangs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._admin import admin_request, is_admin_path
from ._health import health_report
from ._health_checks import redact
from ._prober import HealthProber

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["HealthApp", "health_app"]

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DOCUMENT = "document"
_LIVE = "live"
_READY = "ready"
# Paths below the mount point. Mounted at "/" the full paths apply; mounted at "/health"
# the short ones do.
_ROUTES = {
    "/health": _DOCUMENT,
    "/health/": _DOCUMENT,
    "/health/live": _LIVE,
    "/health/ready": _READY,
    "": _DOCUMENT,
    "/": _DOCUMENT,
    "/live": _LIVE,
    "/ready": _READY,
}


def _resolve_global_registry() -> Registry:
    from ._configure import get_registry

    registry: Registry = get_registry()
    return registry


class HealthApp:
    """The ASGI application that ``health_app()`` returns; ``.prober`` runs the checks.

    Its ASGI lifespan starts and stops the prober. Mounted inside Starlette or FastAPI the
    sub-application's lifespan is not run: start the prober from the parent app's lifespan
    (``async with app.prober:``), as docs/health.md shows.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        probe: bool = True,
        interval_seconds: float = 5.0,
    ) -> None:
        self._registry = registry
        self._probe = probe
        self._interval_seconds = interval_seconds
        self._prober: HealthProber | None = None
        if registry is not None and probe:
            self._prober = HealthProber(registry, interval_seconds)

    @property
    def registry(self) -> Registry:
        """The registry reported on: the one given, else otel_resilience's global one."""
        if self._registry is not None:
            return self._registry
        return _resolve_global_registry()

    @property
    def prober(self) -> HealthProber:
        """The background prober of this app's registry (made on first use)."""
        if self._prober is None:
            self._prober = HealthProber(self.registry, self._interval_seconds)
        return self._prober

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket and other scope types are not served: returning closes them.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._probe:
                    try:
                        await self.prober.astart()
                    except Exception as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._prober is not None:
                    await self._prober.astop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        route = _ROUTES.get(path)
        method = scope.get("method", "GET")
        head = method == "HEAD"
        if (
            route is None
            and is_admin_path(path)
            and (admin := admin_request(self.registry, scope, path)) is not None
        ):
            await _respond(send, admin[0], admin[1], head, extra_headers=admin[2])
            return
        if route is None:
            await _respond(send, 404, {"error": "not found", "endpoints": _endpoints()}, head)
            return
        if method not in ("GET", "HEAD"):
            await _respond(
                send,
                405,
                {"error": f"method {method} not allowed; use GET or HEAD"},
                head,
                extra_headers=[(b"allow", b"GET, HEAD")],
            )
            return
        if route == _LIVE:
            await _respond(send, 200, {"status": "alive"}, head)
            return
        try:
            registry = self.registry
            report = health_report(registry)
            document = report.to_dict()
            config_error = _config_error_of(registry)
        except Exception as exc:
            # A fixed text: an exception's message may hold anything (a DSN, a token).
            _log.error("the health report failed (%s)", type(exc).__name__)
            await _respond(send, 500, {"status": "error", "error": "health report failed"}, head)
            return
        if config_error is not None:
            # The service runs on the defaults because its config is invalid: say so here,
            # where whoever looks at the service's health will see it.
            document["config_error"] = redact(config_error)
        code = 200 if report.ready else 503
        await _respond(send, code, document, head)


def _config_error_of(registry: Registry) -> str | None:
    from ._configure import config_error_of

    return config_error_of(registry)


def _endpoints() -> list[str]:
    return ["/health", "/health/live", "/health/ready"]


async def _respond(
    send: Send,
    status: int,
    document: dict[str, Any],
    head: bool,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def health_app(
    registry: Registry | None = None, *, probe: bool = True, interval_seconds: float = 5.0
) -> HealthApp:
    """An ASGI app serving ``/health``, ``/health/live`` and ``/health/ready`` (docs/health.md).

    ``registry`` None means the one ``configure()`` made, looked up at each request.
    ``/health`` and ``/health/ready`` answer 503 only when the service is unhealthy;
    ``/health/live`` answers 200 while the process serves. With ``probe`` the app's
    lifespan runs a ``HealthProber`` every ``interval_seconds``.
    """
    return HealthApp(registry, probe=probe, interval_seconds=interval_seconds)
