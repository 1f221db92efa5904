"""A sampler wrapper that keeps dependency client spans recorded whatever the sampling rate.

A span that is not recorded never reaches a span processor, so a breaker behind a 1%
sampler would see 1% of the calls. Where the wrapped sampler drops a client span that
belongs to a dependency, this one answers RECORD_ONLY instead: processors see the span,
exporters do not (it is not sampled), so export volume still follows the user's sampler.

The sampler sees only the attributes given at span start. The asyncpg and httpx
instrumentations pass theirs there; redis-py's sets them after the span has started, so
a client span that names no server at all at start is kept too: the processor decides
when it ends, and drops it if it belongs to no dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from ._registry import Registry
from ._semconv import SOURCES, lookup

__all__ = ["ResilienceSampler"]

# Enum members read once: ``Decision.DROP`` costs a lookup on every read (about 0.1 µs),
# and should_sample runs for every span.
_DROP = Decision.DROP
_RECORD_ONLY = Decision.RECORD_ONLY
_CLIENT = SpanKind.CLIENT

# Attributes that say which server a client span talks to, in either convention.
_SERVER_KEYS = (*{key for keys in SOURCES.values() for key in keys}, "url.full", "http.url")


class ResilienceSampler(Sampler):
    """Wraps ``sampler``; dropped client spans of dependencies become RECORD_ONLY."""

    def __init__(
        self, sampler: Sampler, registry: Registry, *, include_discovered: bool = True
    ) -> None:
        self.wrapped = sampler
        self.registry = registry
        self.include_discovered = include_discovered

    def should_sample(  # noqa: PLR0917 - the SDK's Sampler signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.wrapped.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not _DROP or kind is not _CLIENT:
            return result
        try:
            keep = self._belongs_to_a_dependency(attributes)
        except Exception:  # a sampler must never fail span creation
            return result
        if not keep:
            return result
        return SamplingResult(_RECORD_ONLY, attributes, result.trace_state)

    def _belongs_to_a_dependency(self, attributes: Attributes) -> bool:
        """Whether a client span with these start attributes may feed a breaker."""
        if not attributes:
            return True  # nothing to tell by yet (redis-py): the processor decides
        if self.registry.classify(attributes) is not None:
            return True
        names_a_server = any(attributes.get(key) is not None for key in _SERVER_KEYS)
        if not names_a_server:
            return True
        return self.include_discovered and (
            lookup(attributes, "db.system") is not None
            or lookup(attributes, "server.address") is not None
        )

    def get_description(self) -> str:
        return f"ResilienceSampler{{{self.wrapped.get_description()}}}"
