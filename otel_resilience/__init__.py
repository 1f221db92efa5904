"""otel_resilience: circuit breakers driven by the OpenTelemetry spans a service emits.

The public names are re-exported here from private modules; README.md and docs/ describe them.
"""

from __future__ import annotations

from ._breaker import BreakerSnapshot, CircuitBreaker, State
from ._configure import configure, get_registry
from ._dependency import Criticality, Dependency
from ._errors import CircuitOpenError, ConcurrencyLimitError, ConfigError, UnknownDependencyError
from ._events import OperatorEvent
from ._exporter import ResilientLogExporter, ResilientMetricExporter, ResilientSpanExporter
from ._health import DependencyHealth, HealthEvent, HealthReport, health_events, on_health_change
from ._health_app import health_app
from ._limits import LimitPolicy
from ._policy import BreakerPolicy
from ._prober import HealthProber
from ._processor import BreakerSpanProcessor
from ._registry import Registry, TelemetrySettings, load_config
from ._retry_budget import RetryBudgetPolicy
from ._sampler import ResilienceSampler
from ._version import __version__ as __version__  # outside __all__, which pins the API

__all__ = [
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerSpanProcessor",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConcurrencyLimitError",
    "ConfigError",
    "Criticality",
    "Dependency",
    "DependencyHealth",
    "HealthEvent",
    "HealthProber",
    "HealthReport",
    "LimitPolicy",
    "OperatorEvent",
    "Registry",
    "ResilienceSampler",
    "ResilientLogExporter",
    "ResilientMetricExporter",
    "ResilientSpanExporter",
    "RetryBudgetPolicy",
    "State",
    "TelemetrySettings",
    "UnknownDependencyError",
    "configure",
    "get_registry",
    "health_app",
    "health_events",
    "load_config",
    "on_health_change",
]
