"""A sampler wrapper that keeps dependency client spans recorded whatever the sampling rate.

A span that is not recorded never reaches a span processor, so a breaker behind a 1%
sampler would see 1% of the calls. Where the wrapped sampler drops a client span that
belongs to a dependency, this one answers RECORD_ONLY instead: processors see the span,
exporters do not (it is not sampled), so export volume still follows the user's sampler.

Wrapping costs a call per span. Around a ``ParentBased`` sampler (the SDK's default), the
delegates that can drop (``ALWAYS_OFF`` for unsampled parents, a ratio root) are wrapped
instead and the ``ParentBased`` decides directly: spans that the user's sampler samples
pass through no code of ours at all.

The sampler sees only the attributes given at span start. The asyncpg and httpx
instrumentations pass theirs there; redis-py's sets them after the span has started, so
a client span that names no server at all at start is kept too: the processor decides
when it ends, and drops it if it belongs to no dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
)
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

# ParentBased's delegates, by constructor argument; each is kept as ``_`` + the name
# (SDK 1.43, 1.45).
_PARENT_BASED_DELEGATES = (
    "root",
    "remote_parent_sampled",
    "remote_parent_not_sampled",
    "local_parent_sampled",
    "local_parent_not_sampled",
)


class ResilienceSampler(Sampler):
    """Wraps ``sampler``; dropped client spans of dependencies become RECORD_ONLY.

    Around a ``ParentBased`` sampler the instance is a ``_ResilientParentBased``: it decides
    as a ``ParentBased`` itself (the SDK's ``ParentBased.should_sample``, a method of its
    class), from the wrapped sampler's delegates, those that may drop wrapped in
    ``_KeepingDelegate``. The tracer's call ``sampler.should_sample(...)`` then finds a
    method of the class, which the interpreter specialises; an instance's own function, or
    one more frame to forward the call, would cost every span.
    """

    def __new__(
        cls, sampler: Sampler, registry: Registry, *, include_discovered: bool = True
    ) -> ResilienceSampler:
        chosen = cls
        if cls is ResilienceSampler and _parent_based_delegates(sampler) is not None:
            chosen = _ResilientParentBased
        return super().__new__(chosen)

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
        """The wrapped sampler's decision, a dropped client span of a dependency made
        RECORD_ONLY."""
        result = self.wrapped.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not _DROP or kind is not _CLIENT:
            return result
        return self._kept(result, attributes)

    def _kept(self, result: SamplingResult, attributes: Attributes) -> SamplingResult:
        """A dropped client span's result: RECORD_ONLY when it belongs to a dependency."""
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


class _ResilientParentBased(ResilienceSampler):
    """A ``ResilienceSampler`` around a ``ParentBased``: it decides as that ``ParentBased``
    does (its class's ``should_sample`` is the SDK's), from its delegates, each that may
    drop wrapped in ``_KeepingDelegate``; delegates that never drop are called directly,
    so spans the user's sampler samples pass through no code of ours at all."""

    should_sample = ParentBased.should_sample

    def __init__(
        self, sampler: Sampler, registry: Registry, *, include_discovered: bool = True
    ) -> None:
        super().__init__(sampler, registry, include_discovered=include_discovered)
        delegates = _parent_based_delegates(sampler) or {}
        for name, delegate in delegates.items():
            setattr(
                self,
                f"_{name}",
                delegate if _never_drops(delegate) else _KeepingDelegate(delegate, self),
            )


class _KeepingDelegate(Sampler):
    """A delegate of a ``ParentBased`` that may drop, wrapped for ``owner`` (a
    ``ResilienceSampler``, whose registry configure() repoints)."""

    __slots__ = ("_owner", "_wrapped")

    def __init__(self, wrapped: Sampler, owner: ResilienceSampler) -> None:
        self._wrapped = wrapped
        self._owner = owner

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
        result = self._wrapped.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not _DROP or kind is not _CLIENT:
            return result
        return self._owner._kept(result, attributes)

    def get_description(self) -> str:
        return self._wrapped.get_description()


def _never_drops(sampler: Sampler) -> bool:
    return type(sampler) is StaticSampler and sampler._decision is Decision.RECORD_AND_SAMPLE


def _parent_based_delegates(sampler: Sampler) -> dict[str, Sampler] | None:
    """The delegates of a ``ParentBased`` sampler that decides with the SDK's own
    ``should_sample`` (``_PARENT_BASED_DELEGATES``), or None for any other sampler, or a
    ``ParentBased`` whose delegates are kept otherwise (then it is wrapped whole)."""
    if type(sampler).should_sample is not ParentBased.should_sample:
        return None
    if isinstance(sampler, ResilienceSampler):
        return None
    try:
        delegates = {name: getattr(sampler, f"_{name}") for name in _PARENT_BASED_DELEGATES}
    except AttributeError:  # an SDK that keeps them otherwise: wrapped whole
        return None
    if not all(isinstance(delegate, Sampler) for delegate in delegates.values()):
        return None
    return delegates
