"""The installed distribution's version, for ``otel_resilience.__version__``, the CLI and
the metrics' instrumentation scope (a module of its own, so they need not import the package)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("otel-resilience")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
