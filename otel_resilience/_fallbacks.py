"""Fallbacks: what an optional dependency's call returns while its breaker is open."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "BUILTIN_FALLBACKS",
    "check_import_path",
    "import_object",
    "none_fallback",
    "resolve_fallback",
]


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


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")


def check_import_path(path: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``"package.module:attribute"`` (or the dotted form), or
    ``ValueError`` saying what is wrong; nothing is imported."""
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not (_MODULE.fullmatch(module_name) and _MODULE.fullmatch(attribute)) or len(path) > 500:
        raise ValueError(
            f"{path[:200]!r} is not an absolute import path of the form 'package.module:name'"
        )
    return module_name, attribute


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (or ``"package.module.attribute"``).

    Whatever the module does while it is imported (raising any exception, a syntax error,
    ``sys.exit()``) becomes a ``ValueError`` naming the path: a config never takes the
    process down.
    """
    module_name, attribute = check_import_path(path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {path!r}: {exc}") from None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: see the docstring
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(
            f"importing module {module_name!r} of {path!r} raised {type(exc).__name__}"
            + (f": {detail}" if detail else "")
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
        except Exception as exc:  # a module __getattr__ may raise anything
            raise ValueError(
                f"reading {attribute!r} of module {module_name!r} raised {type(exc).__name__}"
            ) from None
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
