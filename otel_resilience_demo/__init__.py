"""The example chat service and the ``otel-resilience demo`` command.

It needs the ``demo`` extra (``pip install 'otel-resilience[demo]'``): Starlette, uvicorn,
redis-py, asyncpg, httpx, websockets and the OTel instrumentations. Importing this package
needs none of them; ``create_app`` imports them on first use, and
``missing_requirements()`` names what is not installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["DEMO_REQUIREMENTS", "create_app", "missing_requirements"]

# Import name -> distribution name, for the message naming what to install.
DEMO_REQUIREMENTS = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "redis": "redis",
    "asyncpg": "asyncpg",
    "httpx": "httpx",
    "websockets": "websockets",
    "rich": "rich",
    "opentelemetry.instrumentation.redis": "opentelemetry-instrumentation-redis",
    "opentelemetry.instrumentation.asyncpg": "opentelemetry-instrumentation-asyncpg",
    "opentelemetry.instrumentation.httpx": "opentelemetry-instrumentation-httpx",
    "opentelemetry.exporter.prometheus": "opentelemetry-exporter-prometheus",
}


def missing_requirements() -> list[str]:
    """The distributions of the ``demo`` extra that are not installed."""
    missing = []
    for module, distribution in DEMO_REQUIREMENTS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(distribution)
    return missing


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ._app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
