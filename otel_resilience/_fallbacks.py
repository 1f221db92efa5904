"""Fallbacks: what an optional dependency's call returns while its breaker is open."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["BUILTIN_FALLBACKS", "import_object", "none_fallback", "resolve_fallback"]


def none_fallback(*args: Any, **kwargs: Any) -> None:
    """The ``none`` fallback: the call returns None."""
    return None


# Built-in fallbacks by config name. Each entry is a factory returning a fresh fallback,
# so state (such as a cache) is never shared between dependencies.
def _memory() -> Callable[..., Any]:
    from ._memory_cache import MemoryCache

    return MemoryCache()


BUILTIN_FALLBACKS: dict[str, Callable[[], Callable[..., Any]]] = {
    "none": lambda: none_fallback,
    "memory": _memory,
}


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (or ``"package.module.attribute"``)."""
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {path!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target


def resolve_fallback(value: Any) -> Callable[..., Any] | None:
    """A callable fallback from a callable, a built-in name, or an import path."""
    if value is None:
        return None
    if callable(value):
        given: Callable[..., Any] = value
        return given
    if not isinstance(value, str):
        raise ValueError(
            f"fallback must be a callable, a built-in name ({', '.join(sorted(BUILTIN_FALLBACKS))})"
            f" or an import path 'module:name', got {value!r}"
        )
    factory = BUILTIN_FALLBACKS.get(value)
    if factory is not None:
        return factory()
    if ":" not in value and "." not in value:
        raise ValueError(
            f"unknown built-in fallback {value!r}; built-ins: "
            f"{', '.join(sorted(BUILTIN_FALLBACKS))}, or give an import path 'module:name'"
        )
    target = import_object(value)
    if not callable(target):
        raise ValueError(f"fallback {value!r} is not callable (it is {type(target).__name__})")
    fallback: Callable[..., Any] = target
    return fallback
