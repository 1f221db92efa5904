"""The memory fallback's noted GETs in C (``_cmemory.c``), the twins of ``MemoryCache``'s
``_observe_py`` and ``_apply_pending_py``."""

from collections.abc import Sequence
from typing import Any

class GetNoter:
    """``cache.observe`` in C; ``globals`` is the dict of ``otel_resilience._memory_cache``."""

    def __init__(self, cache: Any, globals: dict[str, Any]) -> None: ...
    @property
    def cache(self) -> Any: ...
    def __call__(self, args: Sequence[Any], result: Any) -> None: ...

def apply_pending(cache: Any, unknown: object, /) -> None:
    """``cache._apply_pending_py()`` in C (the caller holds the cache's lock)."""
