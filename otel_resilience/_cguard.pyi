from collections.abc import Callable
from typing import Any

class HandSuccess:
    def __init__(
        self,
        *,
        twin: Callable[[str, Any], Any],
        get_context: Callable[[], Any],
        context_type: type,
        span_key: str,
        SPAN_COUNTERS: dict[object, Any],
        GUARDED_SPANS: dict[int, Any],
        CLIENT: Any,
        forget_oldest: Callable[[dict[int, Any]], None],
        mark_guarded_span: Callable[[object, str], None],
        max_spans: int,
    ) -> None: ...
    def __call__(self, name: str, breaker: Any) -> Any: ...
