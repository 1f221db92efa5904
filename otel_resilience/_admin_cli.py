"""``otel-resilience breaker URL NAME force-open|disable|reset``: manual control from a shell."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ._health_cli import _health_url
from ._output import Output

__all__ = ["DEFAULT_TOKEN_ENV", "breaker_action"]

DEFAULT_TOKEN_ENV = "OTEL_RESILIENCE_ADMIN_TOKEN"


def breaker_action(
    url: str,
    name: str,
    action: str,
    out: Output,
    *,
    token_env: str = DEFAULT_TOKEN_ENV,
    timeout: float = 5.0,
) -> int:
    """POST the action to the service's health app; 0 done, 1 refused, 2 no token, 3 unreachable.

    ``url`` is the service's health URL as for ``status`` (a bare host:port gets
    ``/health``); the token is read from the environment variable ``token_env``.
    """
    errors = Output(sys.stderr)
    token = os.environ.get(token_env)
    if not token:
        errors.paragraph(f"set {token_env} to the service's admin token", indent="  ")
        return 2
    target = (
        _health_url(url).rstrip("/") + f"/breakers/{urllib.parse.quote(name, safe='')}/{action}"
    )
    request = urllib.request.Request(
        target,
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document: Any = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        reasons = {
            401: "the token was refused",
            404: f"no dependency {name!r}, or the service has no admin token configured",
        }
        errors.paragraph(
            f"{target}: HTTP {exc.code}: {reasons.get(exc.code, exc.reason)}", "red", indent="  "
        )
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        errors.paragraph(
            f"cannot reach {target}: {getattr(exc, 'reason', exc)}", "red", indent="  "
        )
        return 3
    out.line(f"{name}: {document.get('previous_state')} -> {document.get('state')} ({action})")
    return 0
