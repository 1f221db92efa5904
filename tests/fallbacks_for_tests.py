"""Importable targets for config tests (fallbacks and business errors by import path)."""

from __future__ import annotations

NOT_CALLABLE = 42


class NotFound(Exception):
    """A business error: the dependency answered 'no such thing'."""


def local_analytics(*args: object, **kwargs: object) -> str:
    """A fallback by import path."""
    return "kept locally"


def __getattr__(name: str) -> object:
    """A module-level __getattr__ that fails for one name, as a lazy-loading module may."""
    if name == "exploding":
        raise RuntimeError("lazy import failed")
    raise AttributeError(name)
