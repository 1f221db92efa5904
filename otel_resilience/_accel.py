"""The optional C accelerators of the per-call path, and the switch to their Python twins.

``setup.py`` builds ``_conend`` (the span processor's ``on_end`` fast path) and ``_cmemory``
(the memory fallback's noted GETs) when a C compiler is there; each behaves exactly as the
Python code it replaces, which stays and serves when the accelerator is missing or when
``OTEL_RESILIENCE_PURE_PYTHON=1`` is set (read once, at import).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["PURE_PYTHON_ENV", "accelerator"]

PURE_PYTHON_ENV = "OTEL_RESILIENCE_PURE_PYTHON"
_PURE = os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0")


def accelerator(name: str) -> ModuleType | None:
    """The C accelerator ``otel_resilience.<name>``, or None (not built, or switched off)."""
    if _PURE:
        return None
    try:
        return importlib.import_module(f"otel_resilience.{name}")
    except ImportError:
        return None
