"""The client guards installed for a test's duration."""

from __future__ import annotations

from collections.abc import Iterator

from otel_resilience import Registry
from otel_resilience.instrumentation import install


def guarded(registry: Registry) -> Iterator[Registry]:
    """``for _ in guarded(registry):`` (or ``yield from`` in a fixture): the client guards
    of ``registry`` installed while the loop body runs, uninstalled after."""
    uninstall = install(registry)
    try:
        yield registry
    finally:
        uninstall()
