"""Client guards: an open breaker stops a client's calls before any network I/O.

``install(registry)`` guards every installed client library of the table below (each
module imports its client library only when it is installed) and returns a function
that removes the guards again. ``configure()`` and auto-instrumentation call it. Guards
are installed as the innermost layer of the methods they patch (``_install``), so they
coexist with OpenTelemetry's instrumentations in any order.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from .._registry import Registry
from ._install import Installer

__all__ = ["CLIENTS", "install"]

_log = logging.getLogger(__name__)

# (client library to look for, guard module, its install function), in install order:
# SQLAlchemy after the drivers it goes through.
CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("redis", "._redis", "install_redis"),
    ("asyncpg", "._asyncpg", "install_asyncpg"),
    ("httpx", "._httpx", "install_httpx"),
    ("psycopg", "._psycopg", "install_psycopg"),
    ("psycopg2", "._psycopg2", "install_psycopg2"),
    ("sqlalchemy", "._sqlalchemy", "install_sqlalchemy"),
    ("requests", "._requests", "install_requests"),
    ("urllib3", "._urllib3", "install_urllib3"),
    ("aiohttp", "._aiohttp", "install_aiohttp"),
    ("grpc", "._grpc", "install_grpc"),
)


def install(registry: Registry) -> Callable[[], None]:
    """Guard the calls of every installed client library; returns the uninstall function."""
    installer = Installer(registry)
    for library, module_name, function_name in CLIENTS:
        try:
            importlib.import_module(library)
        except ImportError:
            continue
        try:
            module = importlib.import_module(module_name, __name__)
            getattr(module, function_name)(installer)
        except Exception:
            _log.warning("could not guard %s calls", library, exc_info=True)
    return installer.uninstall
