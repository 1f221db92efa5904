from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

class FastOnEnd:
    def __init__(
        self,
        *,
        twin: Callable[[Any], Any],
        keys: tuple[str, ...],
        address_keys: tuple[str, ...],
        uses_url: bool,
        CLIENT: Any,
        CLOSED: Any,
        DISABLED: Any,
        ERROR: Any,
        GUARDED_SPANS: dict[int, Any],
        POP: Any,
        UNMATCHED: Any,
        classifier: Any,
        registry: Any,
        general: Callable[[Any, Any], Any],
        fast_target: Callable[[Any, Any, Any], Any],
        guarded_var: ContextVar[Any],
        log_error: Callable[[Exception], None],
        memo: dict[Any, Any],
        last_seen: list[Any],
        processor: Any,
    ) -> None: ...
    def __call__(self, span: Any) -> Any: ...
