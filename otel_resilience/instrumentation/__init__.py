"""Client guards: an open breaker stops redis-py, asyncpg and httpx calls before any I/O.

``install(registry)`` patches whichever of the three libraries is installed (each module
imports its client library only when it is installed) and returns a function that
removes the patches again. ``configure()`` and auto-instrumentation call it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from .._registry import Registry
from ._common import Patcher

__all__ = ["install"]

_log = logging.getLogger("otel_resilience")

_CLIENTS = (
    ("redis", "._redis", "install_redis"),
    ("asyncpg", "._asyncpg", "install_asyncpg"),
    ("httpx", "._httpx", "install_httpx"),
)


def install(registry: Registry) -> Callable[[], None]:
    """Guard the calls of every installed client library; returns the uninstall function."""
    patcher = Patcher(registry)
    for library, module_name, function_name in _CLIENTS:
        try:
            importlib.import_module(library)
        except ImportError:
            continue
        try:
            module = importlib.import_module(module_name, __name__)
            getattr(module, function_name)(patcher)
        except Exception:
            _log.warning("otel_resilience: could not guard %s calls", library, exc_info=True)
    return patcher.uninstall
