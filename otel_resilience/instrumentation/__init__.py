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
import sys
from collections.abc import Callable
from typing import Any

import wrapt

from .._registry import Registry
from ._install import Installer, instrument_clients

__all__ = ["CLIENTS", "install", "instrument_clients"]

_log = logging.getLogger(__name__)

# (client library to look for, guard module, its install function, the OpenTelemetry
# instrumentors of the library as "module:Class"), in install order: SQLAlchemy after
# the drivers it goes through.
CLIENTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("redis", "._redis", "install_redis", ("redis:RedisInstrumentor",)),
    ("asyncpg", "._asyncpg", "install_asyncpg", ("asyncpg:AsyncPGInstrumentor",)),
    ("httpx", "._httpx", "install_httpx", ("httpx:HTTPXClientInstrumentor",)),
    ("psycopg", "._psycopg", "install_psycopg", ("psycopg:PsycopgInstrumentor",)),
    ("psycopg2", "._psycopg2", "install_psycopg2", ("psycopg2:Psycopg2Instrumentor",)),
    ("sqlalchemy", "._sqlalchemy", "install_sqlalchemy", ("sqlalchemy:SQLAlchemyInstrumentor",)),
    ("requests", "._requests", "install_requests", ("requests:RequestsInstrumentor",)),
    ("urllib3", "._urllib3", "install_urllib3", ("urllib3:URLLib3Instrumentor",)),
    ("aiohttp", "._aiohttp", "install_aiohttp", ("aiohttp_client:AioHttpClientInstrumentor",)),
    (
        "grpc",
        "._grpc",
        "install_grpc",
        ("grpc:GrpcInstrumentorClient", "grpc:GrpcAioInstrumentorClient"),
    ),
)


def install(registry: Registry) -> Callable[[], None]:
    """Guard the calls of every supported client library; returns the uninstall function.

    A library that is already imported is guarded now; one that is not is guarded when
    the application imports it (a post-import hook), so configuring imports no client
    library the application does not use.
    """
    installer = Installer(registry)
    for library, module_name, function_name, _ in CLIENTS:
        hook = _guard_on_import(installer, library, module_name, function_name)
        if library in sys.modules:
            hook(sys.modules[library])
        else:
            wrapt.register_post_import_hook(hook, library)
    return installer.uninstall


def _guard_on_import(
    installer: Installer, library: str, module_name: str, function_name: str
) -> Callable[[Any], None]:
    def guard(module: Any) -> None:
        if not installer.enabled:
            return  # uninstalled before the library was imported
        try:
            guard_module = importlib.import_module(module_name, __name__)
            getattr(guard_module, function_name)(installer)
        except Exception:
            _log.warning("could not guard %s calls", library, exc_info=True)

    return guard
