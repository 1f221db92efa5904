"""Dependencies: what a service calls, how much it matters, and how to match its spans."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fallbacks import resolve_fallback
from ._limits import LimitPolicy
from ._policy import BreakerPolicy
from ._retry_budget import RetryBudgetPolicy
from ._semconv import canonical_key

__all__ = ["Criticality", "Dependency"]


class Criticality(enum.Enum):
    """How much a dependency matters to the service; ``.value`` is the lower-case name.

    CRITICAL down makes the service unhealthy; IMPORTANT or OPTIONAL down degrades it;
    MONITORING (telemetry) is reported but never changes the service's health.
    """

    CRITICAL = "critical"
    IMPORTANT = "important"
    OPTIONAL = "optional"
    MONITORING = "monitoring"

    @classmethod
    def parse(cls, value: Criticality | str) -> Criticality:
        """A Criticality from itself or its name, case-insensitive."""
        if isinstance(value, Criticality):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        allowed = ", ".join(c.value for c in cls)
        raise ValueError(f"criticality must be one of {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Dependency:
    """A declared dependency of the service.

    ``match`` maps span attributes (either semantic-convention generation) to values that
    must all hold for a client span to belong to this dependency. ``fallback`` is a callable
    (or a built-in name such as ``"none"``, or an import path) applied while the breaker is
    open or the call fails; critical dependencies have none. ``business_errors`` are
    exception types that mean the dependency answered (counted as successes), and
    ``is_failure``, when given, decides for every other exception. ``limits`` caps the
    calls in flight; ``retry_budget`` bounds ``Registry.retry_allowed`` (default: 20% of
    calls plus 10 a second).
    """

    name: str
    criticality: Criticality = Criticality.OPTIONAL
    match: Mapping[str, str] = field(default_factory=dict)
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    fallback: Callable[..., Any] | None = None
    health_check: Any = None
    business_errors: tuple[type[BaseException], ...] = ()
    is_failure: Callable[[BaseException], bool] | None = None
    observe_only: bool = False
    limits: LimitPolicy | None = None
    retry_budget: RetryBudgetPolicy | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"dependency name must be a non-empty string, got {self.name!r}")
        criticality = Criticality.parse(self.criticality)
        object.__setattr__(self, "criticality", criticality)
        if not isinstance(self.match, Mapping):
            raise ValueError(
                f"dependency {self.name!r}: match must be a mapping of attribute to value, "
                f"got {self.match!r}"
            )
        match: dict[str, str] = {}
        for key, value in self.match.items():
            if not isinstance(key, str) or not key:
                raise ValueError(
                    f"dependency {self.name!r}: match key must be a string, got {key!r}"
                )
            if isinstance(value, (dict, list, tuple, set)) or value is None:
                raise ValueError(
                    f"dependency {self.name!r}: match.{key} must be a string or number, "
                    f"got {value!r}"
                )
            match[canonical_key(key)] = value if isinstance(value, str) else str(value)
        object.__setattr__(self, "match", match)
        if not isinstance(self.policy, BreakerPolicy):
            raise ValueError(
                f"dependency {self.name!r}: policy must be a BreakerPolicy, got {self.policy!r}"
            )
        try:
            fallback = resolve_fallback(self.fallback)
        except ValueError as exc:
            raise ValueError(f"dependency {self.name!r}: {exc}") from None
        if fallback is not None and criticality is Criticality.CRITICAL:
            raise ValueError(
                f"dependency {self.name!r} is critical and so fails fast; a fallback is only "
                "allowed for important, optional or monitoring dependencies"
            )
        object.__setattr__(self, "fallback", fallback)
        errors = self.business_errors
        if isinstance(errors, type):
            errors = (errors,)
        errors = tuple(errors)
        for error in errors:
            if not (isinstance(error, type) and issubclass(error, BaseException)):
                raise ValueError(
                    f"dependency {self.name!r}: business_errors must be exception types, "
                    f"got {error!r}"
                )
        object.__setattr__(self, "business_errors", errors)
        if self.is_failure is not None and not callable(self.is_failure):
            raise ValueError(
                f"dependency {self.name!r}: is_failure must be callable, got {self.is_failure!r}"
            )
        if self.limits is not None and not isinstance(self.limits, LimitPolicy):
            raise ValueError(
                f"dependency {self.name!r}: limits must be a LimitPolicy, got {self.limits!r}"
            )
        if self.retry_budget is not None and not isinstance(self.retry_budget, RetryBudgetPolicy):
            raise ValueError(
                f"dependency {self.name!r}: retry_budget must be a RetryBudgetPolicy, "
                f"got {self.retry_budget!r}"
            )
